from rest_framework import serializers

from learning import estimators, services
from learning.models import BenchmarkResult, BenchmarkRun


class StatisticsSerializer(serializers.Serializer):
    """One (diagnosis, playbook) row: a PlaybookStatistics instance, or a per-service aggregate dict."""

    diagnosis_code = serializers.CharField()
    playbook = serializers.CharField()
    attempts = serializers.IntegerField()
    successes = serializers.IntegerField()
    failures = serializers.IntegerField()
    rollbacks = serializers.IntegerField()
    consecutive_failures = serializers.IntegerField(allow_null=True, default=None)
    success_rate = serializers.SerializerMethodField()
    posterior_mean = serializers.SerializerMethodField()
    confidence = serializers.SerializerMethodField()
    duration_mean_seconds = serializers.SerializerMethodField()
    duration_min_seconds = serializers.FloatField(source="duration_min", allow_null=True)
    duration_max_seconds = serializers.FloatField(source="duration_max", allow_null=True)
    last_outcome = serializers.CharField(allow_null=True, default=None)
    last_outcome_at = serializers.DateTimeField(allow_null=True)

    @staticmethod
    def _get(row, name):
        return row[name] if isinstance(row, dict) else getattr(row, name)

    def get_success_rate(self, row) -> float | None:
        attempts = self._get(row, "attempts")
        return round(self._get(row, "successes") / attempts, 4) if attempts else None

    def get_posterior_mean(self, row) -> float:
        return round(estimators.beta_mean(self._get(row, "successes"), self._get(row, "attempts")), 4)

    def get_confidence(self, row) -> float:
        """Wilson 95 % lower bound; 0 below the minimum attempts (what governance compares to the threshold)."""
        return round(services.confidence_from(self._get(row, "successes"), self._get(row, "attempts")), 4)

    def get_duration_mean_seconds(self, row) -> float | None:
        value = row.get("duration_mean") if isinstance(row, dict) else row.duration_mean
        return round(value, 3) if value is not None else None


class RecommendationSerializer(serializers.Serializer):
    playbook = serializers.CharField()
    score = serializers.FloatField()
    confidence = serializers.FloatField()
    attempts = serializers.IntegerField()
    successes = serializers.IntegerField()
    exploring = serializers.BooleanField()
    evidence = serializers.DictField()


class ThresholdsSerializer(serializers.Serializer):
    confidence_tier_threshold = serializers.FloatField()
    pause_after_failures = serializers.IntegerField()
    min_attempts_for_confidence = serializers.IntegerField()


class RecommendationsSerializer(serializers.Serializer):
    """``GET /api/learning/recommendations/``: the ranking for one diagnosis and the thresholds it used."""

    diagnosis = serializers.CharField()
    thresholds = ThresholdsSerializer()
    recommendations = RecommendationSerializer(many=True)


class BenchmarkResultSerializer(serializers.ModelSerializer):
    class Meta:
        model = BenchmarkResult
        fields = [
            "metric",
            "check_kind",
            "ok",
            "value",
            "unit",
            "higher_is_better",
            "error",
            "baseline_median",
            "baseline_mad",
            "baseline_samples",
            "threshold",
            "regression",
            "incident",
            "details",
        ]
        read_only_fields = fields


class BenchmarkRunSerializer(serializers.ModelSerializer):
    suite = serializers.SlugRelatedField(slug_field="name", read_only=True)
    # Plain strings in the schema: "status" enums of other apps would otherwise collide in their names.
    status = serializers.CharField(read_only=True, help_text="queued, running, passed, regressed or failed")
    trigger = serializers.CharField(read_only=True, help_text="api, schedule, contract or manual")
    results = BenchmarkResultSerializer(many=True, read_only=True)

    class Meta:
        model = BenchmarkRun
        fields = [
            "id",
            "suite",
            "status",
            "trigger",
            "created_at",
            "started_at",
            "finished_at",
            "duration_ms",
            "failed_checks",
            "regression_count",
            "results",
        ]
        read_only_fields = fields
