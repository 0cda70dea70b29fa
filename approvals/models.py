from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import models
from django.utils import timezone

from approvals.choices import ChannelKind, DeliveryStatus, Effect, NotificationEvent, RequestStatus
from approvals.validators import validate_string_list, validate_timezone, validate_weekdays
from grace_site.masking import mask_data

GENESIS_HASH = "0" * 64


class AuditEvent(models.Model):
    """One entry of the append-only audit log.

    ``approvals.audit.record`` inserts it inside the transaction of the change it
    describes, without any lock: it is readable (action, actor, object, data, time)
    as soon as that transaction commits. The sealer then gives it its place in the
    hash chain (``seal``: seq, prev_hash, hash). Database triggers reject UPDATE
    and DELETE on this table.
    """

    id = models.BigAutoField(primary_key=True)
    at = models.DateTimeField()
    actor = models.CharField(max_length=150, help_text="User name, or system:<component>.")
    action = models.CharField(max_length=100)
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    data = models.JSONField(default=dict)
    # PostgreSQL: the id of the transaction that wrote the entry, set by a trigger. The sealer reads only
    # entries of transactions that had not finished when it last looked (see approvals.sealing).
    txid = models.BigIntegerField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-id"]
        indexes = [
            # "what did GRACE do to this object?"
            models.Index(fields=["object_type", "object_id", "id"], name="audit_object_idx"),
            # audit browsing by time and by action
            models.Index(fields=["at"], name="audit_at_idx"),
            models.Index(fields=["action", "id"], name="audit_action_idx"),
            # the sealer's window on PostgreSQL: entries of transactions at or after its horizon
            models.Index(fields=["txid"], name="audit_txid_idx", condition=models.Q(txid__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.object_type}:{self.object_id} (entry {self.pk})"

    def masked_data(self):
        """``data`` as shown in the admin and the API: credentials masked, in rows recorded before
        credentials were masked at the source too. The stored row (and its hash) is left as it is."""
        channel = self.action.startswith("notification.channel") or self.object_type == "approvals.notificationchannel"
        url_fields = NotificationChannel.CREDENTIAL_URL_FIELDS if channel else ()
        return mask_data(self.data, url_fields=url_fields)


class AuditSeal(models.Model):
    """An entry's link in the hash chain, written by the sealer once the entry is committed.

    ``hash`` is the sha256 of the canonical JSON of the entry and ``seq`` and
    ``prev_hash`` (see ``approvals.audit.canonical``), ``prev_hash`` the previous
    link's hash. Every entry is sealed at most once and the chain cannot fork
    (unique constraints); triggers reject UPDATE and DELETE.
    """

    seq = models.BigIntegerField(primary_key=True)
    event = models.OneToOneField(AuditEvent, on_delete=models.PROTECT, related_name="seal")
    prev_hash = models.CharField(max_length=64, unique=True)
    hash = models.CharField(max_length=64, unique=True)
    sealed_at = models.DateTimeField()
    # PostgreSQL: every transaction older than this had finished when the sealer read this link's batch,
    # so the next pass looks only at entries of this transaction id or later. Null on SQLite.
    horizon = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-seq"]
        constraints = [
            models.CheckConstraint(condition=models.Q(seq__gte=1), name="audit_seal_seq_positive"),
            models.CheckConstraint(
                condition=~models.Q(seq=1) | models.Q(prev_hash=GENESIS_HASH), name="audit_seal_first_links_genesis"
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.hash[:12]}"


class AuditCheckpoint(models.Model):
    """A signed statement of the chain's head (size, head hash, time), as written to the sinks outside
    the database. This copy serves the admin and the health check; ``verify_audit --checkpoints`` trusts
    only the sinks. Triggers reject UPDATE and DELETE."""

    size = models.BigIntegerField(help_text="Sealed entries covered: the seq of the head.")
    head = models.CharField(max_length=64, help_text="Hash of the link at seq = size (the genesis hash for 0).")
    issued_at = models.DateTimeField()
    origin = models.CharField(max_length=100)
    key_id = models.CharField(max_length=16)
    body = models.TextField(help_text="The signed text.")
    signature = models.CharField(max_length=128, help_text="Ed25519 signature of the body, base64.")
    sinks = models.JSONField(default=dict, help_text='Each sink and "ok" or why writing failed.')
    requested_by = models.CharField(max_length=150, blank=True, help_text="Who asked for it; empty: the schedule.")

    class Meta:
        ordering = ["-issued_at", "-id"]
        permissions = [("issue_auditcheckpoint", "Can seal the audit log and issue a checkpoint on demand")]
        indexes = [models.Index(fields=["issued_at"], name="audit_checkpoint_issued_idx")]  # the latest one

    def __str__(self) -> str:
        return f"checkpoint {self.size} @ {self.issued_at:%Y-%m-%d %H:%M:%S}"

    def masked_data(self):
        """``data`` as shown in the admin and the API: credentials masked, in rows recorded before
        credentials were masked at the source too. The stored row (and its hash) is left as it is."""
        channel = self.action.startswith("notification.channel") or self.object_type == "approvals.notificationchannel"
        url_fields = NotificationChannel.CREDENTIAL_URL_FIELDS if channel else ()
        return mask_data(self.data, url_fields=url_fields)


# --- governance: policy rules, approvals, notifications, shadow mode ---------


class PolicyRule(models.Model):
    """One admin-editable policy rule (see ``approvals.policy`` for precedence).

    Every ``match_*`` list is "any" when empty; otherwise the plan must hit one
    of its entries (shell-style wildcards such as ``orders-*`` allowed). A rule
    with a time window applies only inside it: a deny rule with a window is a
    blackout.
    """

    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    priority = models.IntegerField(default=100, help_text="Lower numbers are considered first.")
    effect = models.CharField(max_length=20, choices=Effect.choices)
    tier = models.PositiveSmallIntegerField(null=True, blank=True, help_text="For 'require tier': 2 or 3.")
    max_per_hour = models.PositiveIntegerField(
        null=True, blank=True, help_text="For 'limit': actions allowed per target in any sliding hour."
    )
    match_actions = models.JSONField(default=list, blank=True, validators=[validate_string_list])
    match_families = models.JSONField(default=list, blank=True, validators=[validate_string_list])
    match_environments = models.JSONField(default=list, blank=True, validators=[validate_string_list])
    match_services = models.JSONField(default=list, blank=True, validators=[validate_string_list])
    match_diagnoses = models.JSONField(default=list, blank=True, validators=[validate_string_list])
    window_weekdays = models.JSONField(
        default=list, blank=True, validators=[validate_weekdays], help_text="0 = Monday ... 6 = Sunday; empty = daily."
    )
    window_start = models.TimeField(null=True, blank=True)
    window_end = models.TimeField(null=True, blank=True, help_text="Before the start: the window runs past midnight.")
    window_timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["priority", "name"]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(effect=Effect.REQUIRE_TIER) | models.Q(tier__gte=2, tier__lte=3),
                name="policyrule_require_tier_2_or_3",
            ),
            models.CheckConstraint(
                condition=~models.Q(effect=Effect.LIMIT) | models.Q(max_per_hour__gte=1),
                name="policyrule_limit_has_budget",
            ),
            models.CheckConstraint(
                condition=(models.Q(window_start__isnull=True) & models.Q(window_end__isnull=True))
                | (models.Q(window_start__isnull=False) & models.Q(window_end__isnull=False)),
                name="policyrule_window_start_and_end",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = {}
        if self.effect == Effect.REQUIRE_TIER and self.tier not in (2, 3):
            errors["tier"] = "A 'require tier' rule needs tier 2 or 3."
        if self.effect == Effect.LIMIT and not self.max_per_hour:
            errors["max_per_hour"] = "A 'limit' rule needs a number of actions per hour (at least 1)."
        if (self.window_start is None) != (self.window_end is None):
            errors["window_end" if self.window_end is None else "window_start"] = "Give both ends of the window."
        if self.window_start is not None and self.window_start == self.window_end:
            errors["window_end"] = "The window must not be empty (start equals end)."
        if errors:
            raise ValidationError(errors)


class ApprovalRequest(models.Model):
    """A run waiting for humans, bound to the sha256 of the exact plan they approve."""

    run = models.ForeignKey("remediation.HealRun", on_delete=models.PROTECT, related_name="approval_requests")
    plan_hash = models.CharField(max_length=64)
    tier = models.PositiveSmallIntegerField()
    required_approvals = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=10, choices=RequestStatus.choices, default=RequestStatus.PENDING)
    status_reason = models.CharField(max_length=500, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The user who started the run by hand; never an approver of it.",
    )
    context = models.JSONField(default=dict, blank=True)
    depends_on = models.JSONField(
        default=list,
        blank=True,
        help_text='Objects the plan depends on, as the audit log names them: [["remediation.playbook", "3"], ...]. '
        "Whoever edited them is not an eligible approver.",
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("approve_tier2", "Can approve or reject tier-2 requests"),
            ("approve_tier3", "Can approve or reject tier-3 requests"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(tier__gte=2, tier__lte=3), name="approval_tier_2_or_3"),
            models.CheckConstraint(
                condition=models.Q(required_approvals__gte=1, required_approvals__lte=2),
                name="approval_required_1_or_2",
            ),
            # At most one open request per run: a new plan voids the old request first.
            models.UniqueConstraint(
                fields=["run"], condition=models.Q(status=RequestStatus.PENDING), name="approval_one_pending_per_run"
            ),
            # open_request is idempotent per (run, plan).
            models.UniqueConstraint(
                fields=["run", "plan_hash"],
                condition=~models.Q(status=RequestStatus.VOID),
                name="approval_one_live_per_plan",
            ),
        ]
        indexes = [
            # the approval queue and the expiry sweep: pending requests by deadline
            models.Index(fields=["status", "expires_at"], name="approval_status_expires_idx"),
        ]

    def __str__(self) -> str:
        return f"approval #{self.pk} for run #{self.run_id} (tier {self.tier}, {self.status})"


class IneligibleApprover(models.Model):
    """A user who may not decide a request (raised its incident, owns the channel that did, started the run...).

    A database trigger refuses a decision by such a user, whatever code path inserts it.
    """

    request = models.ForeignKey(ApprovalRequest, on_delete=models.PROTECT, related_name="ineligible")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    reason = models.CharField(max_length=300)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["request", "pk"]
        constraints = [models.UniqueConstraint(fields=["request", "user"], name="ineligible_once_per_request")]

    def __str__(self) -> str:
        return f"user {self.user_id} may not decide #{self.request_id}: {self.reason}"


class ApprovalDecision(models.Model):
    """One user's approve/reject of one request. A user decides once (database-enforced)."""

    request = models.ForeignKey(ApprovalRequest, on_delete=models.PROTECT, related_name="decisions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    approve = models.BooleanField()
    reason = models.TextField()
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["request", "at", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["request", "user"], name="decision_one_per_user"),
            models.CheckConstraint(condition=~models.Q(reason=""), name="decision_reason_required"),
        ]

    def __str__(self) -> str:
        return f"{'approve' if self.approve else 'reject'} #{self.request_id} by user {self.user_id}"


class GovernanceSettings(models.Model):
    """Admin-editable switches (a singleton, row id 1)."""

    shadow_mode = models.BooleanField(
        default=False,
        help_text="Diagnose, plan, gate and record what GRACE would do, but execute nothing (all playbooks).",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "governance settings"
        verbose_name_plural = "governance settings"
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="governance_settings_singleton")]

    def __str__(self) -> str:
        return "governance settings"


class NotificationChannel(models.Model):
    """Where GRACE tells humans that approval is needed, a run escalated or failed."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=10, choices=ChannelKind.choices)
    url = models.URLField(max_length=500, blank=True, help_text="Webhook: the URL receiving Slack-compatible JSON.")
    recipients = models.JSONField(
        default=list, blank=True, validators=[validate_string_list], help_text='Email: ["oncall@example.com"].'
    )
    events = models.JSONField(
        default=list, blank=True, validators=[validate_string_list], help_text="Events to send; empty = all."
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    # A webhook URL is a credential (whoever has a Slack webhook URL can post): masked wherever it is
    # shown or recorded (admin, audit, errors, logs), used in full only to deliver.
    CREDENTIAL_URL_FIELDS = ("url",)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.kind == ChannelKind.WEBHOOK and not self.url:
            raise ValidationError({"url": "A webhook channel needs a URL."})
        if self.kind == ChannelKind.EMAIL:
            if not self.recipients:
                raise ValidationError({"recipients": "An email channel needs at least one recipient."})
            for address in self.recipients:
                try:
                    validate_email(address)
                except ValidationError:
                    raise ValidationError({"recipients": f"{address!r} is not an email address."}) from None
        unknown = sorted(set(self.events or []) - set(NotificationEvent.values))
        if unknown:
            raise ValidationError({"events": f"unknown events {unknown}; choose from {NotificationEvent.values}"})


class Notification(models.Model):
    """One delivery of one event to one channel (queued, then sent or failed)."""

    channel = models.ForeignKey(NotificationChannel, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=30)
    run = models.ForeignKey("remediation.HealRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    summary = models.CharField(max_length=500)
    payload = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # A delivery holds the notification until then while it sends; another delivery of it waits its turn.
    claimed_until = models.DateTimeField(null=True, blank=True, editable=False)
    # When beat last queued it again because its hand-off was lost.
    redriven_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "created_at"], name="notification_status_idx")]  # delivery log

    def __str__(self) -> str:
        return f"{self.event} -> {self.channel} ({self.status})"


class ApiToken(models.Model):
    """A user's API token (``Authorization: Token <key>``). The key is shown once, when it is issued; only its
    SHA-256 digest and its first characters are kept."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What it is for (a script, an integration...).")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    hint = models.CharField(max_length=16, editable=False, help_text="The start of the key.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["user", "name"]
        verbose_name = "API token"
        constraints = [models.UniqueConstraint(fields=["user", "name"], name="apitoken_unique_name_per_user")]

    def __str__(self) -> str:
        return f"{self.name} ({self.hint}…)"
