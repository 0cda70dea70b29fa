from django.urls import path
from rest_framework.routers import DefaultRouter

from learning.api import views

router = DefaultRouter(trailing_slash=True)
router.register("verification/runs", views.BenchmarkRunViewSet, basename="benchmark-run")

urlpatterns = [
    path("learning/stats/", views.StatisticsView.as_view(), name="learning-stats"),
    path("learning/recommendations/", views.RecommendationsView.as_view(), name="learning-recommendations"),
    path("learning/analytics/", views.AnalyticsView.as_view(), name="learning-analytics"),
    path("verification/status/", views.VerificationStatusView.as_view(), name="verification-status"),
    path("verification/benchmarks/<slug:suite>/", views.BenchmarkStartView.as_view(), name="benchmark-start"),
    *router.urls,
]
