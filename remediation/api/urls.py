from django.urls import include, path
from rest_framework.routers import DefaultRouter

router = DefaultRouter(trailing_slash=True)

urlpatterns = [
    path("", include("remediation.api.cloud_urls")),
    *router.urls,
]
