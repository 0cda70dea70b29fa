from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from grace_site.admin import ReadOnlyAdmin
from grace_site.templatetags.grace import fact, filesize, ms_datetime
from remediation import (
    admin_runs,  # noqa: F401 - registers the heal run admin (list and run page)
    fleet,
    playbooks,
)
from remediation.models import Agent, Playbook, Snapshot
from remediation.planner import required_inputs, validate_steps


def needs(steps: list) -> str:
    """What a playbook needs from the incident's service, in words: "sqlite resource; labels pod"."""
    parts = []
    for need in required_inputs(steps):
        kind = need["resource_kind"]
        if kind:
            parts.append(f"{kind} resource" + (" (optional)" if "evidence" in need else ""))
        parts.extend(f"label {label}" for label in need["labels"])
    return "; ".join(dict.fromkeys(parts)) or "nothing"


class PlaybookForm(admin.ModelAdmin.form):
    def clean(self):
        from django.core.exceptions import ValidationError
        from rest_framework.exceptions import ValidationError as DRFValidationError

        cleaned = super().clean()
        if "steps" in cleaned:
            try:
                validate_steps(cleaned["steps"], escalate_only=bool(cleaned.get("escalate_only")))
            except DRFValidationError as exc:
                raise ValidationError({"steps": [str(e) for e in exc.detail.get("steps", [exc.detail])]}) from None
        return cleaned


@admin.register(Playbook)
class PlaybookAdmin(admin.ModelAdmin):
    form = PlaybookForm
    list_display = ("name", "diagnoses", "kind", "tier", "enabled", "shadow", "needs_shown", "paused_reason")
    list_filter = ("enabled", "shadow", "tier", "escalate_only")
    search_fields = ("name", "description", "diagnosis_codes")
    readonly_fields = ("needs_shown", "paused_reason", "created_at", "updated_at")

    @admin.display(description="diagnoses")
    def diagnoses(self, obj: Playbook) -> str:
        return ", ".join(obj.diagnosis_codes or []) or "-"

    @admin.display(description="does", ordering="escalate_only")
    def kind(self, obj: Playbook) -> str:
        if obj.escalate_only:
            return "escalates with evidence" if obj.steps else "escalates"
        return f"{len(obj.steps)} step{'s' if len(obj.steps) != 1 else ''}"

    @admin.display(description="needs from the service's inventory")
    def needs_shown(self, obj: Playbook) -> str:
        return needs(obj.steps)

    def save_model(self, request, obj, form, change):
        before = playbooks.snapshot(Playbook.objects.filter(pk=obj.pk).first()) if change else None
        replanned = playbooks.save(obj, actor=request.user, before=before)
        if replanned:
            self.message_user(
                request,
                f"{replanned} run(s) waiting for approval got the new plan; their earlier approvals are void.",
                messages.WARNING,
            )

    def delete_model(self, request, obj):
        try:
            playbooks.delete(obj, actor=request.user)
        except playbooks.PlaybookInUse as exc:
            self.message_user(request, str(exc), messages.ERROR)

    def delete_queryset(self, request, queryset):
        for playbook in queryset:
            self.delete_model(request, playbook)


@admin.register(Snapshot)
class SnapshotAdmin(ReadOnlyAdmin):
    """The safe-point history: what each run captured, and its sha256 manifest."""

    list_display = ("id", "run_link", "step_index", "action", "target", "size", "taken", "restored_at", "purged_at")
    list_filter = ("action", ("created_at", admin.DateFieldListFilter))
    search_fields = ("target", "action", "=run__id")
    list_select_related = ("run",)
    fields = (
        "run_link",
        "step_index",
        "action",
        "target",
        "host",
        "path",
        "size",
        "taken",
        "restored_at",
        "purged_at",
        "state_shown",
        "manifest_shown",
    )
    readonly_fields = fields

    @admin.display(description="run", ordering="run_id")
    def run_link(self, obj: Snapshot) -> str:
        return format_html(
            '<a href="{}">#{}</a>', reverse("admin:remediation_healrun_change", args=[obj.run_id]), obj.run_id
        )

    @admin.display(description="size", ordering="size_bytes")
    def size(self, obj: Snapshot) -> str:
        return filesize(obj.size_bytes)

    @admin.display(description="taken", ordering="created_at")
    def taken(self, obj: Snapshot) -> str:
        return ms_datetime(obj.created_at)

    @admin.display(description="state rollback needs")
    def state_shown(self, obj: Snapshot) -> str:
        state = obj.state or {}
        rows = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", ((k, fact(v)) for k, v in state.items()))
        return format_html("<table>{}</table>", rows) if obj.state else "-"

    @admin.display(description="manifest (sha256 of each file)")
    def manifest_shown(self, obj: Snapshot) -> str:
        files = (obj.manifest or {}).get("files", {})
        rows = format_html_join("", "<tr><td>{}</td><td><code>{}</code></td></tr>", sorted(files.items()))
        overall = (obj.manifest or {}).get("sha256", "")
        return format_html("<table>{}</table><p>overall: <code>{}</code></p>", rows, overall) if files else "no files"


@admin.register(Agent)
class AgentAdmin(ReadOnlyAdmin):
    """The agents of the fleet: which host each acts on, what it consumes, and when it was last heard from."""

    list_display = ("host", "name", "live", "last_seen", "version", "queue_list", "var_dir", "started_at")
    list_filter = ("host",)
    search_fields = ("host", "name")

    @admin.display(description="live", boolean=True)
    def live(self, obj: Agent) -> bool:
        return fleet.live_agents().filter(pk=obj.pk).exists()

    @admin.display(description="queues")
    def queue_list(self, obj: Agent) -> str:
        return ", ".join(obj.queues)
