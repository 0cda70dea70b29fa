# URL patterns of the cloud family status endpoint (GET /api/cloud/status/).
from django.urls import path

from remediation.api.cloud import cloud_status_view

urlpatterns: list = [
    path("cloud/status/", cloud_status_view, name="cloud-status"),
]
