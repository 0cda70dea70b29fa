from django.conf import settings
from django.db import models
from django.db.models import Q

from remediation.choices import AttemptStatus, Family, Phase, RunStatus


class Playbook(models.Model):
    """Maps diagnosis codes to ordered action steps with a contract.

    ``steps`` is a list of ``{"action": name, "params": {...}, "contract": [...]}``.
    Parameter values may use templates such as ``"{labels.db_path}"`` or
    ``"{service}"``, filled from the incident and validated before anything runs.
    A contract is a list of predicates ``{"field", "op", "value", "within"}``.
    """

    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    diagnosis_codes = models.JSONField(default=list, help_text="Diagnosis codes this playbook remedies.")
    steps = models.JSONField(default=list, blank=True)
    tier = models.PositiveSmallIntegerField(default=1, help_text="Declared autonomy tier (1-3); policy may raise it.")
    cooldown_seconds = models.PositiveIntegerField(default=300, help_text="Minimum time between runs per target.")
    escalate_only = models.BooleanField(default=False, help_text="Never act: hand the incident to humans.")
    enabled = models.BooleanField(default=True)
    shadow = models.BooleanField(default=False, help_text="Plan and gate, but execute nothing.")
    paused_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.CheckConstraint(condition=Q(tier__gte=1, tier__lte=3), name="playbook_tier_1_to_3")]

    def __str__(self) -> str:
        return self.name


class HealRun(models.Model):
    """One remediation attempt for one incident (the "mission")."""

    incident = models.ForeignKey("incidents.Incident", on_delete=models.PROTECT, related_name="heal_runs")
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.RECEIVED)
    status_reason = models.TextField(blank=True)
    playbook = models.ForeignKey(Playbook, null=True, blank=True, on_delete=models.PROTECT, related_name="runs")
    diagnosis_code = models.CharField(max_length=64, blank=True)
    target = models.CharField(max_length=300, blank=True)
    family = models.CharField(max_length=20, blank=True, choices=Family.choices)
    host = models.CharField(
        max_length=63, blank=True, help_text="The host whose agent runs its local stages (blank: any worker)."
    )
    held_status = models.CharField(
        max_length=20, blank=True, help_text="While BLOCKED_ON_HOST: the stage it resumes when the agent is back."
    )
    plan = models.JSONField(default=dict, blank=True, help_text="Resolved steps, contract and snapshot policy.")
    plan_hash = models.CharField(max_length=64, blank=True)
    tier = models.PositiveSmallIntegerField(default=1)
    tier_reasons = models.JSONField(default=list, blank=True)
    policy_explanation = models.JSONField(default=list, blank=True)
    confidence = models.FloatField(null=True, blank=True, help_text="Learned confidence of the chosen playbook.")
    verification_confidence = models.FloatField(null=True, blank=True)
    dry_run = models.BooleanField(default=False)
    shadow = models.BooleanField(default=False)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reaper_tries = models.PositiveSmallIntegerField(default=0)
    heartbeat_at = models.DateTimeField(auto_now_add=True)
    stage_started_at = models.DateTimeField(
        null=True, blank=True, help_text="When a worker started the current stage (empty: its message is in flight)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # One live run per incident: start_run is idempotent under redelivery.
            models.UniqueConstraint(
                fields=["incident"],
                condition=~Q(status__in=list(RunStatus.TERMINAL)),
                name="healrun_one_live_per_incident",
            ),
            models.CheckConstraint(condition=Q(tier__gte=1, tier__lte=3), name="healrun_tier_1_to_3"),
            # finished_at is set exactly while the run is in a final state.
            models.CheckConstraint(
                condition=Q(status__in=list(RunStatus.TERMINAL), finished_at__isnull=False)
                | (~Q(status__in=list(RunStatus.TERMINAL)) & Q(finished_at__isnull=True)),
                name="healrun_finished_exactly_when_final",
            ),
            models.CheckConstraint(condition=Q(family__in=["", *Family.values]), name="healrun_family_known"),
        ]
        indexes = [
            # the reaper: runs in a moving state with an old heartbeat
            models.Index(fields=["status", "heartbeat_at"], name="healrun_status_heartbeat_idx"),
            # per-target cooldowns and "recent failures on this target"
            models.Index(fields=["target", "-created_at"], name="healrun_target_idx"),
        ]

    def __str__(self) -> str:
        return f"run #{self.pk} ({self.status})"


class RunEvent(models.Model):
    """The run's timeline: one row per transition or notable step."""

    run = models.ForeignKey(HealRun, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(auto_now_add=True)
    from_status = models.CharField(max_length=20, blank=True)
    to_status = models.CharField(max_length=20, blank=True)
    note = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "pk"]
        indexes = [models.Index(fields=["run", "at"], name="runevent_run_at_idx")]  # the timeline view

    def __str__(self) -> str:
        return f"{self.from_status or '-'} -> {self.to_status or '-'}: {self.note[:60]}"


class ActionAttempt(models.Model):
    """Committed before an action runs, so a crash leaves evidence of what was started."""

    run = models.ForeignKey(HealRun, on_delete=models.CASCADE, related_name="attempts")
    step_index = models.PositiveSmallIntegerField()
    phase = models.CharField(max_length=10, choices=Phase.choices, default=Phase.EXECUTE)
    attempt = models.PositiveSmallIntegerField(default=1)
    idempotency_key = models.CharField(max_length=100, unique=True)
    action = models.CharField(max_length=100)
    target = models.CharField(max_length=300, blank=True)
    params = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=AttemptStatus.choices, default=AttemptStatus.STARTED)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["run", "step_index", "phase", "attempt"]
        constraints = [
            models.UniqueConstraint(fields=["run", "step_index", "phase", "attempt"], name="attempt_unique_per_step"),
        ]

    def __str__(self) -> str:
        return f"{self.action} step {self.step_index} {self.phase} #{self.attempt} ({self.status})"


class Snapshot(models.Model):
    """A safe-hold point: what rollback of one step needs, with a sha256 manifest."""

    run = models.ForeignKey(HealRun, on_delete=models.CASCADE, related_name="snapshots")
    step_index = models.PositiveSmallIntegerField()
    action = models.CharField(max_length=100)
    target = models.CharField(max_length=300, blank=True)
    path = models.CharField(max_length=500, blank=True, help_text="Directory holding the snapshot's files.")
    host = models.CharField(max_length=63, blank=True, help_text="The host whose disk holds the files.")
    state = models.JSONField(default=dict, blank=True, help_text="Small facts rollback needs (capacity, level...).")
    manifest = models.JSONField(default=dict, blank=True, help_text='{"files": {name: sha256}, "sha256": overall}')
    size_bytes = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    restored_at = models.DateTimeField(null=True, blank=True)
    purged_at = models.DateTimeField(null=True, blank=True, help_text="Files removed by retention.")

    class Meta:
        ordering = ["run", "step_index"]
        constraints = [models.UniqueConstraint(fields=["run", "step_index"], name="snapshot_one_per_step")]
        indexes = [models.Index(fields=["created_at"], name="snapshot_created_idx")]  # retention cleanup

    def __str__(self) -> str:
        return f"snapshot of run #{self.run_id} step {self.step_index} ({self.action})"


class ContractResult(models.Model):
    """Expected versus actual for one predicate of a step's contract."""

    run = models.ForeignKey(HealRun, on_delete=models.CASCADE, related_name="contract_results")
    step_index = models.PositiveSmallIntegerField()
    phase = models.CharField(max_length=10, choices=Phase.choices, default=Phase.EXECUTE)
    field = models.CharField(max_length=100)
    operator = models.CharField(max_length=10)
    expected = models.JSONField(null=True)
    actual = models.JSONField(null=True)
    passed = models.BooleanField()
    detail = models.CharField(max_length=500, blank=True)
    observed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "step_index", "pk"]

    def __str__(self) -> str:
        return f"{self.field} {self.operator} {self.expected!r}: {'pass' if self.passed else 'fail'}"


class Agent(models.Model):
    """A worker process that acts on one host's resources (consumes ``heal.local.<host>``), as it last reported."""

    host = models.CharField(max_length=63, help_text="GRACE_HOST of the machine it runs on.")
    name = models.CharField(max_length=200, unique=True, help_text="The Celery worker's name (host@node).")
    queues = models.JSONField(default=list, blank=True)
    version = models.CharField(max_length=40, blank=True)
    var_dir = models.CharField(max_length=500, blank=True, help_text="Its GRACE_VAR_DIR (snapshots live there).")
    pid = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["host", "name"]
        indexes = [
            # "is there a live agent for this host?" (dispatch, the reaper)
            models.Index(fields=["host", "last_seen"], name="agent_host_seen_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.host})"
