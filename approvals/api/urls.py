from rest_framework.routers import DefaultRouter

from approvals.api.views import AuditEventViewSet

router = DefaultRouter(trailing_slash=True)
router.register("audit", AuditEventViewSet, basename="audit")

urlpatterns = router.urls
