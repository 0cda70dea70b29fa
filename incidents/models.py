from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models, transaction
from django.db.models import Q

from incidents import diagnosis
from incidents.choices import (
    UNKNOWN_DIAGNOSIS,
    ChannelKind,
    DeliveryKind,
    DeliveryStatus,
    IncidentStatus,
    ResourceKind,
    Severity,
    Source,
    SweepKind,
)
from incidents.validators import (
    HOST_RE,
    NAME_RE,
    SERVICE_NAME_RE,
    validate_hosts,
    validate_label_equals,
    validate_label_regex,
    validate_regex,
    validate_thresholds,
)


class Service(models.Model):
    """A service of the inventory: who owns it, where it runs and how cautious GRACE must be with it.

    Incidents name their service; GRACE acts only on the ``Resource`` rows of that service, in the
    environment and with at least the tier floor given here (never what an alert claims).
    """

    name = models.CharField(max_length=200, unique=True, validators=[RegexValidator(SERVICE_NAME_RE)])
    owner = models.CharField(max_length=200, blank=True, help_text="Team or person responsible.")
    environment = models.CharField(
        max_length=50, validators=[RegexValidator(NAME_RE)], help_text="e.g. production, staging (policy matches it)."
    )
    tier_floor = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(3)],
        help_text="The lowest autonomy tier any run for this service gets (1-3).",
    )
    hosts = models.JSONField(
        default=list, blank=True, validators=[validate_hosts], help_text='Machines it runs on: ["db-1", "db-2"].'
    )
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(tier_floor__gte=1, tier_floor__lte=3), name="service_tier_1_to_3")
        ]

    def __str__(self) -> str:
        return self.name


class Resource(models.Model):
    """Something concrete GRACE may act on for its service: a file, a directory, a container...

    ``target`` and ``scope`` are canonical (a normalized absolute path; cloud ids with their account and region,
    context and namespace, engine and project): they are what every action of the kind's family binds to.
    """

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="resources")
    name = models.CharField(
        max_length=100, validators=[RegexValidator(NAME_RE)], help_text="How alerts and playbooks select it."
    )
    kind = models.CharField(max_length=20, choices=ResourceKind.choices)
    target = models.CharField(max_length=1000, help_text="Path, service or target name, URL, or cloud id.")
    scope = models.JSONField(
        default=dict, blank=True, help_text='Where the target lives: {"namespace": "shop", "context": "prod"}...'
    )
    host = models.CharField(
        max_length=63, blank=True, validators=[RegexValidator(HOST_RE)], help_text="For local kinds: the machine."
    )
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["service__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["service", "name"], name="resource_unique_name_per_service"),
        ]
        indexes = [
            # plan: the resources of one kind of the incident's service
            models.Index(fields=["service", "kind"], name="resource_service_kind_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.service.name}/{self.name} ({self.kind})" if self.service_id else self.name

    def clean(self) -> None:
        from incidents import inventory

        inventory.clean_resource(self)


class Channel(models.Model):
    """An integration allowed to raise incidents: its own token, the services it may speak for, its source.

    The source of every incident it raises is the channel's, whatever the body says, and fingerprints are
    namespaced by channel, so one integration can never take another's dedupe keys.
    """

    name = models.CharField(max_length=100, unique=True, validators=[RegexValidator(NAME_RE)])
    kind = models.CharField(max_length=20, choices=ChannelKind.choices)
    source = models.CharField(max_length=20, choices=Source.choices)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Responsible for the integration; never an approver of runs for incidents it raised.",
    )
    token_hash = models.CharField(max_length=64, unique=True, null=True, blank=True, editable=False)
    token_hint = models.CharField(max_length=16, blank=True, editable=False, help_text="Start of the token.")
    all_services = models.BooleanField(
        default=False, help_text="May raise incidents for every inventory service (otherwise: the ones listed)."
    )
    services = models.ManyToManyField(Service, blank=True, related_name="channels")
    enabled = models.BooleanField(default=True)
    builtin = models.BooleanField(default=False, editable=False, help_text="Shipped with GRACE; cannot be deleted.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


def _users_channel() -> int:
    """The built-in channel of users posting with their own credentials (intake always names its channel)."""
    from incidents import channels

    return channels.builtin(channels.USERS).pk


class Incident(models.Model):
    """A problem GRACE knows about: one per fingerprint while it is active.

    Duplicate signals of an active incident only bump ``occurrences`` and
    ``last_seen``. State changes go through ``incidents.services``.
    """

    fingerprint = models.CharField(max_length=64)
    channel = models.ForeignKey(
        Channel,
        on_delete=models.PROTECT,
        related_name="incidents",
        default=_users_channel,
        db_index=False,  # incident_channel_fp_status_idx leads with the channel
        help_text="The integration that raised it.",
    )
    raised_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,  # incident_raised_by_idx: only the incidents a user raised
        help_text="The user who raised it through the API (never an approver of its runs).",
    )
    source = models.CharField(max_length=20, choices=Source.choices)
    service = models.CharField(max_length=200, blank=True, help_text="The service or target the signal is about.")
    environment = models.CharField(
        max_length=50, blank=True, help_text="The inventory's environment of the service (blank: not in the inventory)."
    )
    claimed_environment = models.CharField(
        max_length=50, blank=True, help_text="The environment the signal claimed: evidence only, never trusted."
    )
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.WARNING)
    title = models.CharField(max_length=500)
    message = models.TextField(blank=True)
    labels = models.JSONField(default=dict, blank=True)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    occurrences = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=10, choices=IncidentStatus.choices, default=IncidentStatus.OPEN)
    status_reason = models.CharField(max_length=500, blank=True)
    diagnosis_code = models.CharField(max_length=64, default=UNKNOWN_DIAGNOSIS)
    diagnosis_confidence = models.FloatField(default=0.0)
    diagnosis_evidence = models.JSONField(default=dict, blank=True)
    raw_payload = models.JSONField(default=dict, blank=True, help_text="The signal as received (size-capped).")
    latest_run_id = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="The latest heal run for it (the pipeline reports it through intake)."
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-last_seen"]
        constraints = [
            # One active incident per fingerprint of a channel: the truth behind dedupe.
            models.UniqueConstraint(
                fields=["channel", "fingerprint"],
                condition=Q(status__in=["open", "healing", "escalated"]),
                name="incident_one_active_per_channel_fingerprint",
            ),
            models.CheckConstraint(condition=Q(occurrences__gte=1), name="incident_occurrences_positive"),
        ]
        indexes = [
            # list filters: status + service, newest first
            models.Index(fields=["status", "service", "-last_seen"], name="incident_status_service_idx"),
            # list filter by diagnosis
            models.Index(fields=["diagnosis_code", "-last_seen"], name="incident_diagnosis_idx"),
            # the reaper: open incidents without a run
            models.Index(fields=["status", "created_at"], name="incident_status_created_idx"),
            # dedupe: a channel's incidents of given fingerprints and statuses. The partial unique constraint
            # above cannot serve it on SQLite, whose planner does not match a status list given as parameters.
            models.Index(fields=["channel", "fingerprint", "status"], name="incident_channel_fp_status_idx"),
            # a user's incidents (deleting a user clears them). Partial: most incidents come from a channel's
            # token and have no user, and an index entry is written for every new version of a row.
            models.Index(fields=["raised_by"], condition=Q(raised_by__isnull=False), name="incident_raised_by_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.title}"


class DiagnosisRule(models.Model):
    """One rule of the input sentinel: the first enabled rule (by position) that matches a signal diagnoses it.

    Every condition that is set must hold: source, exact labels, label regexes, title/message regexes and
    numeric thresholds over labels or annotations. Rules are compiled once per change of the rule set.
    """

    name = models.CharField(max_length=100, unique=True)
    position = models.PositiveIntegerField(default=100, help_text="Lower positions are tried first.")
    enabled = models.BooleanField(default=True)
    code = models.CharField(
        max_length=64,
        validators=[RegexValidator(r"^[a-z][a-z0-9_]*$", "use lower-case letters, digits and underscores")],
        help_text="The diagnosis code this rule gives, e.g. database_wal_bloat.",
    )
    confidence = models.FloatField(default=0.8, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])
    source = models.CharField(max_length=20, choices=Source.choices, blank=True, help_text="Blank: any source.")
    label_equals = models.JSONField(
        default=dict, blank=True, validators=[validate_label_equals], help_text='Exact values: {"check": "disk"}.'
    )
    label_regex = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_label_regex],
        help_text='Regular expressions searched in label values: {"alertname": "(?i)disk"}.',
    )
    title_regex = models.CharField(max_length=500, blank=True, validators=[validate_regex])
    message_regex = models.CharField(max_length=500, blank=True, validators=[validate_regex])
    thresholds = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_thresholds],
        help_text='Numeric conditions: [{"field": "labels.wal_bytes", "op": ">=", "value": 1048576}].',
    )
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "id"]
        indexes = [
            # loading the compiled rule set: enabled rules in order
            models.Index(fields=["enabled", "position", "id"], name="diagrule_enabled_position_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(confidence__gte=0.0, confidence__lte=1.0), name="diagrule_confidence_0_to_1"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} -> {self.code}"

    def save(self, *args, **kwargs):
        # A rule that cannot be compiled must never reach the rule set, whatever path saves it.
        self.full_clean()
        super().save(*args, **kwargs)
        transaction.on_commit(diagnosis.invalidate)

    def delete(self, *args, **kwargs):
        result = super().delete(*args, **kwargs)
        transaction.on_commit(diagnosis.invalidate)
        return result


# The inventory resource kind each kind of sweep target reads.
SWEEP_RESOURCE_KINDS = {
    SweepKind.SQLITE: ResourceKind.SQLITE,
    SweepKind.POSTGRES: ResourceKind.POSTGRES,
    SweepKind.HTTP: ResourceKind.HTTP,
}
# Threshold keys each kind of sweep target understands, with their defaults.
SWEEP_THRESHOLDS: dict[str, dict[str, float]] = {
    SweepKind.HOST: {
        "disk_used_percent": 90.0,
        "memory_used_percent": 90.0,
        "cpu_percent": 95.0,
        "load_per_cpu": 2.0,
    },
    SweepKind.SQLITE: {"wal_bytes": 64 * 1024 * 1024, "busy_timeout_ms": 200},
    SweepKind.POSTGRES: {"long_transaction_seconds": 300, "blocked_locks": 1, "connect_timeout_seconds": 5},
    SweepKind.HTTP: {"expected_status": 200, "latency_ms": 1000, "timeout_seconds": 5},
}


class SweepTarget(models.Model):
    """Something the health sweeps check, with its thresholds (editable in the admin).

    ``location`` is the disk path to watch for a host (default ``/``), the SQLite file path, the
    PostgreSQL URL (``postgres://user@host:port/db``; keep passwords in ``~/.pgpass``) or the HTTP URL.
    """

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=10, choices=SweepKind.choices)
    resource = models.ForeignKey(
        Resource,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="sweep_targets",
        help_text="The inventory resource swept (SQLite file, HTTP endpoint, PostgreSQL database): its incidents "
        "are its service's, so GRACE can act on them.",
    )
    location = models.CharField(max_length=500, blank=True)
    service = models.CharField(max_length=200, blank=True, help_text="Service named on incidents (default: name).")
    environment = models.CharField(max_length=50, default="production")
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.WARNING)
    thresholds = models.JSONField(default=dict, blank=True, help_text="Overrides of the kind's default thresholds.")
    enabled = models.BooleanField(default=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_result = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind", "name"]
        indexes = [
            # each sweep task loads the enabled targets of its kind
            models.Index(fields=["kind", "enabled"], name="sweeptarget_kind_enabled_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    def save(self, *args, **kwargs):
        self.full_clean(exclude=["last_result"])
        super().save(*args, **kwargs)

    def clean(self) -> None:
        errors: dict[str, str] = {}
        allowed = SWEEP_THRESHOLDS.get(self.kind, {})
        if not isinstance(self.thresholds, dict):
            errors["thresholds"] = "must be an object of threshold name to number"
        else:
            for key, value in self.thresholds.items():
                if key not in allowed:
                    errors["thresholds"] = f"unknown threshold {key!r} for {self.kind}; allowed: {', '.join(allowed)}"
                elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    errors["thresholds"] = f"threshold {key!r} must be a non-negative number"
        wanted = SWEEP_RESOURCE_KINDS.get(self.kind)
        if wanted and self.resource_id is None and not self.location:
            errors["resource"] = f"a {self.kind} target sweeps an inventory resource of kind {wanted}"
        elif wanted and self.resource is not None and self.resource.kind != wanted:
            errors["resource"] = f"a {self.kind} target sweeps a {wanted} resource, not a {self.resource.kind} one"
        elif self.kind == SweepKind.POSTGRES and not self.location:
            errors["location"] = "a postgres target needs the postgres:// URL the sweep connects with"
        elif self.kind == SweepKind.HTTP and self.location and not self.location.startswith(("http://", "https://")):
            errors["location"] = "must be an http:// or https:// URL"
        elif self.kind == SweepKind.POSTGRES and not self.location.startswith(("postgres://", "postgresql://")):
            errors["location"] = "must be a postgres:// URL"
        if errors:
            raise ValidationError(errors)

    def threshold(self, key: str) -> float:
        return self.thresholds.get(key, SWEEP_THRESHOLDS[self.kind][key])

    @property
    def service_name(self) -> str:
        if self.resource is not None:
            return self.resource.service.name
        return self.service or self.name

    @property
    def address(self) -> str:
        """What the sweep reads: the resource's file or URL, else ``location`` (a host's disk, a PostgreSQL URL)."""
        if self.resource is not None and self.kind in (SweepKind.SQLITE, SweepKind.HTTP):
            return self.resource.target
        return self.location


class Delivery(models.Model):
    """One intake request as received, stored with one INSERT before it is acknowledged.

    The channel is the authenticated one (never read from the body); the body is the request's JSON as it
    arrived, already validated. The intake consumer (``incidents.intake``) turns deliveries into incidents in
    batches, exactly once each; a delivery that keeps failing is parked with its error until an operator
    replays it.
    """

    kind = models.CharField(max_length=20, choices=DeliveryKind.choices)
    channel = models.ForeignKey(
        Channel, on_delete=models.PROTECT, related_name="deliveries", help_text="The authenticated channel."
    )
    raised_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,  # delivery_raised_by_idx: only the deliveries a user posted
        help_text="The user who posted it with their own credentials, if any.",
    )
    body = models.TextField(help_text="The JSON body as received.")
    alerts = models.PositiveIntegerField(default=1, help_text="Signals in it (alerts of a webhook delivery).")
    received_at = models.DateTimeField()
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    available_at = models.DateTimeField(help_text="Not claimed before this (retries back off).")
    claim = models.CharField(max_length=32, blank=True, help_text="The consumer that holds it while processing.")
    lease_until = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(default=dict, blank=True, help_text="What it did: created, absorbed, resolved, ids.")
    error = models.TextField(blank=True, help_text="Why the last attempt failed.")

    class Meta:
        verbose_name_plural = "deliveries"
        ordering = ["-id"]
        indexes = [
            # the consumer's claim and the backlog count and age: pending deliveries in arrival order
            models.Index(fields=["id"], condition=Q(status="pending"), name="delivery_pending_idx"),
            # lease recovery: processing deliveries whose consumer went away
            models.Index(fields=["lease_until"], condition=Q(status="processing"), name="delivery_lease_idx"),
            # admin and API lists by status, newest first; retention of done deliveries
            models.Index(fields=["status", "received_at"], name="delivery_status_received_idx"),
            # a user's deliveries (deleting a user clears them). Partial: deliveries posted with a channel's
            # token have no user, and each delivery is written three times (stored, claimed, done).
            models.Index(fields=["raised_by"], condition=Q(raised_by__isnull=False), name="delivery_raised_by_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["pending", "processing", "done", "parked"]), name="delivery_status_known"
            ),
        ]

    def __str__(self) -> str:
        return f"delivery #{self.pk} ({self.kind}, {self.status})"
