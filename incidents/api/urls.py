from django.urls import path
from rest_framework.routers import DefaultRouter

from incidents.api.deliveries import DeliveryViewSet
from incidents.api.inventory import ChannelViewSet, ResourceViewSet, ServiceViewSet
from incidents.api.views import AlertmanagerWebhookView, IncidentViewSet

router = DefaultRouter(trailing_slash=True)
router.register("incidents", IncidentViewSet, basename="incident")
router.register("inventory/services", ServiceViewSet, basename="inventory-service")
router.register("inventory/resources", ResourceViewSet, basename="inventory-resource")
router.register("channels", ChannelViewSet, basename="channel")
router.register("deliveries", DeliveryViewSet, basename="delivery")

urlpatterns = [
    path("webhooks/alertmanager/", AlertmanagerWebhookView.as_view(), name="webhook-alertmanager"),
    *router.urls,
]
