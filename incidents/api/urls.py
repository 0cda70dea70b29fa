from django.urls import path
from rest_framework.routers import DefaultRouter

from incidents.api.views import AlertmanagerWebhookView, IncidentViewSet

router = DefaultRouter(trailing_slash=True)
router.register("incidents", IncidentViewSet, basename="incident")

urlpatterns = [
    path("webhooks/alertmanager/", AlertmanagerWebhookView.as_view(), name="webhook-alertmanager"),
    *router.urls,
]
