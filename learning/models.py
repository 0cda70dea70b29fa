from django.db import models
from django.db.models import F, Q

from learning.choices import BenchmarkRunStatus, Outcome, Trigger


class OutcomeRecord(models.Model):
    """How one finished heal run ended: written once per run by the pipeline."""

    run = models.OneToOneField("remediation.HealRun", on_delete=models.PROTECT, related_name="outcome_record")
    incident = models.ForeignKey("incidents.Incident", on_delete=models.PROTECT, related_name="outcome_records")
    diagnosis_code = models.CharField(max_length=64)
    playbook = models.CharField(max_length=100, blank=True, help_text="Playbook name (empty when none was chosen).")
    service = models.CharField(max_length=200, blank=True)
    target = models.CharField(max_length=300, blank=True)
    tier = models.PositiveSmallIntegerField(default=1)
    outcome = models.CharField(max_length=12, choices=Outcome.choices)
    shadow = models.BooleanField(default=False, help_text="Shadow runs execute nothing and are never counted.")
    counted = models.BooleanField(default=False, help_text="Whether this outcome updated the playbook's statistics.")
    stage_durations = models.JSONField(default=dict, blank=True, help_text="Seconds spent per pipeline stage.")
    contract_results = models.JSONField(default=list, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    duration_seconds = models.FloatField(help_text="finished_at - started_at")
    resolve_seconds = models.FloatField(null=True, blank=True, help_text="From the incident's first signal to the end.")
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-finished_at"]
        constraints = [models.CheckConstraint(condition=Q(duration_seconds__gte=0), name="outcome_duration_nonneg")]
        indexes = [
            # analytics over a time window, optionally per service
            models.Index(fields=["finished_at", "service"], name="outcome_finished_idx"),
            # statistics rebuild and per-playbook charts
            models.Index(fields=["diagnosis_code", "playbook", "finished_at"], name="outcome_playbook_idx"),
        ]

    def __str__(self) -> str:
        return f"run #{self.run_id}: {self.playbook or '-'} {self.outcome}"


class PlaybookStatistics(models.Model):
    """Running totals per (diagnosis, playbook), updated with F expressions only."""

    diagnosis_code = models.CharField(max_length=64)
    playbook = models.CharField(max_length=100)
    attempts = models.PositiveIntegerField(default=0)
    successes = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0, help_text="Failed without a rollback.")
    rollbacks = models.PositiveIntegerField(default=0, help_text="Failed verification and were rolled back.")
    consecutive_failures = models.PositiveIntegerField(default=0)
    duration_count = models.PositiveIntegerField(default=0)
    duration_sum = models.FloatField(default=0.0)
    duration_sum_sq = models.FloatField(default=0.0)
    duration_min = models.FloatField(null=True, blank=True)
    duration_max = models.FloatField(null=True, blank=True)
    last_outcome = models.CharField(max_length=12, choices=Outcome.choices, blank=True)
    last_outcome_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "playbook statistics"
        ordering = ["diagnosis_code", "playbook"]
        constraints = [
            models.UniqueConstraint(fields=["diagnosis_code", "playbook"], name="stats_one_per_diagnosis_playbook"),
            models.CheckConstraint(
                condition=Q(attempts=F("successes") + F("failures") + F("rollbacks")), name="stats_attempts_add_up"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.playbook} for {self.diagnosis_code}: {self.successes}/{self.attempts}"

    @property
    def duration_mean(self) -> float | None:
        return self.duration_sum / self.duration_count if self.duration_count else None

    @property
    def duration_stddev(self) -> float | None:
        if self.duration_count < 2:
            return None
        mean = self.duration_sum / self.duration_count
        variance = (self.duration_sum_sq - self.duration_count * mean * mean) / (self.duration_count - 1)
        return max(variance, 0.0) ** 0.5


class BenchmarkSuite(models.Model):
    """A named set of checks. ``checks`` is a list of ``{"kind": ..., "params": {...}}`` (see learning.checks)."""

    name = models.SlugField(max_length=50, unique=True)
    description = models.TextField(blank=True)
    checks = models.JSONField(default=list)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from learning.benchmarks import validate_checks

        validate_checks(self.checks)


class BenchmarkRun(models.Model):
    suite = models.ForeignKey(BenchmarkSuite, on_delete=models.PROTECT, related_name="runs")
    status = models.CharField(max_length=10, choices=BenchmarkRunStatus.choices, default=BenchmarkRunStatus.QUEUED)
    trigger = models.CharField(max_length=10, choices=Trigger.choices, default=Trigger.API)
    task_id = models.CharField(max_length=64, blank=True, help_text="Celery task carrying a dispatched run.")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    failed_checks = models.PositiveSmallIntegerField(default=0)
    regression_count = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            # latest runs per suite (verification status, baselines)
            models.Index(fields=["suite", "-created_at"], name="benchrun_suite_created_idx"),
        ]

    def __str__(self) -> str:
        return f"run #{self.pk} of suite {self.suite.name} ({self.status})"


class BenchmarkResult(models.Model):
    """One metric of one run, with the baseline it was judged against."""

    run = models.ForeignKey(BenchmarkRun, on_delete=models.CASCADE, related_name="results")
    suite = models.ForeignKey(BenchmarkSuite, on_delete=models.PROTECT, related_name="+")
    check_kind = models.CharField(max_length=30)
    metric = models.CharField(max_length=200)
    unit = models.CharField(max_length=20, blank=True)
    higher_is_better = models.BooleanField(default=False)
    ok = models.BooleanField(help_text="The check ran; False means it failed and ``error`` says why.")
    value = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True)
    baseline_median = models.FloatField(null=True, blank=True)
    baseline_mad = models.FloatField(null=True, blank=True)
    baseline_samples = models.PositiveSmallIntegerField(default=0)
    threshold = models.FloatField(null=True, blank=True)
    regression = models.BooleanField(default=False)
    incident = models.ForeignKey(
        "incidents.Incident",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The incident this regression opened (or added an occurrence to).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "pk"]
        constraints = [models.UniqueConstraint(fields=["run", "metric"], name="benchresult_one_per_metric")]
        indexes = [
            # the rolling baseline: last N good values of one metric of one suite
            models.Index(fields=["suite", "metric", "-created_at"], name="benchresult_baseline_idx"),
        ]

    def __str__(self) -> str:
        shown = f"{self.value:.3f}{self.unit}" if self.value is not None else f"error: {self.error[:40]}"
        return f"{self.metric} = {shown}"


class BenchmarkScratch(models.Model):
    """Rows the full suite writes, reads back and deletes to measure database throughput."""

    token = models.CharField(max_length=16, db_index=True)  # one benchmark pass: read back and delete by token
    payload = models.CharField(max_length=100)

    class Meta:
        default_permissions = ()

    def __str__(self) -> str:
        return self.token
