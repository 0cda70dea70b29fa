from django.urls import include, path
from rest_framework.routers import DefaultRouter

from remediation.api import views

router = DefaultRouter(trailing_slash=True)
router.register("runs", views.HealRunViewSet, basename="run")
router.register("playbooks", views.PlaybookViewSet, basename="playbook")
router.register("agents", views.AgentViewSet, basename="agent")

urlpatterns = [
    path("", include("remediation.api.cloud_urls")),
    path("incidents/<int:pk>/heal/", views.HealIncidentView.as_view(), name="incident-heal"),
    path("actions/", views.actions_catalogue, name="actions"),
    path("resilience/", views.resilience_status, name="resilience"),
    path("resilience/reset/", views.resilience_reset, name="resilience-reset"),
    *router.urls,
]
