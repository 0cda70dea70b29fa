from django.urls import path
from rest_framework.routers import DefaultRouter

from approvals.api.views import ApprovalRequestViewSet, AuditEventViewSet, PolicyRuleViewSet, governance_status

router = DefaultRouter(trailing_slash=True)
router.register("audit", AuditEventViewSet, basename="audit")
router.register("approvals", ApprovalRequestViewSet, basename="approval")
router.register("policy-rules", PolicyRuleViewSet, basename="policy-rule")

urlpatterns = [
    path("governance/", governance_status, name="governance-status"),
    *router.urls,
]
