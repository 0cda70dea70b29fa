"""The approval queue in the admin: pending first, the columns an approver scans, approve/reject with a reason.

The review page puts the decision at the top, then what will change as readable steps, the tier's reasons and
the policy's explanation (no raw JSON). Links to the run and the incident come in the request's context
(``ApprovalContext.links``): approvals never names another app's pages. Deciding goes through
``approvals.services.decide``, so the admin enforces the same rules as the API (tier permission, never one's
own run, one decision per user).
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Case, Count, IntegerField, Q, Value, When
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince

from approvals import services
from approvals.choices import RequestStatus
from approvals.context import ApprovalContext
from approvals.models import ApprovalRequest
from approvals.policy import shadow_mode
from grace_site.admin import ReadOnlyAdmin


def _ctx(obj: ApprovalRequest) -> ApprovalContext:
    return ApprovalContext.from_json(obj.context)


def _clip(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _steps(ctx: ApprovalContext) -> tuple[list[dict], list]:
    """The plan's steps, each with its contract; and a contract that is not per step (older contexts)."""
    contract = ctx.contract if isinstance(ctx.contract, list) else []
    per_step = bool(contract) and all(isinstance(item, list) for item in contract)
    steps = []
    for i, step in enumerate(ctx.steps):
        checks = step.get("contract")
        if checks is None and per_step and i < len(contract):
            checks = contract[i]
        steps.append({**step, "contract": checks or []})
    loose = [] if per_step else [p for p in contract if isinstance(p, dict)]
    return steps, loose


def _readable(value) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_readable(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_readable(v) for v in value)
    return str(value)


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return RequestStatus.choices

    def queryset(self, request, queryset):
        return queryset.filter(status=self.value()) if self.value() else queryset


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(ReadOnlyAdmin):
    """Approval queue. Rows open a review page with the plan, its contract, and the decision form."""

    list_display = (
        "review_link",
        "status_badge",
        "age",
        "expires",
        "tier_and_approvals",
        "service",
        "diagnosis",
        "plan_summary",
        "run_link",
        "outcome",
    )
    list_display_links = None
    list_filter = (StatusFilter, "tier")
    search_fields = ("=run__id", "context__service", "context__diagnosis", "plan_hash")
    list_per_page = 50
    show_full_result_count = False
    change_form_template = "admin/approvals/approvalrequest/review.html"

    def get_queryset(self, request):
        # Not super(): its ordering would run before the annotation it needs.
        return (
            self.model._default_manager.select_related("run", "requested_by")
            .annotate(
                pending_first=Case(
                    When(status=RequestStatus.PENDING, then=Value(0)), default=Value(1), output_field=IntegerField()
                ),
                approvals_count=Count("decisions", filter=Q(decisions__approve=True)),
            )
            .order_by("pending_first", "created_at")
        )

    def get_ordering(self, request):
        return ("pending_first", "created_at")

    def changelist_view(self, request, extra_context=None):
        extra_context = {"title": "Approval queue (pending first)", **(extra_context or {})}
        if shadow_mode():
            messages.warning(request, "Shadow mode is ON: GRACE plans, gates and records, and executes nothing.")
        return super().changelist_view(request, extra_context)

    @admin.display(description="request")
    def review_link(self, obj: ApprovalRequest) -> str:
        url = reverse("admin:approvals_approvalrequest_change", args=[obj.pk])
        label = "Review" if obj.status == RequestStatus.PENDING else "View"
        return format_html('<a class="grace-review" href="{}">{} #{}</a>', url, label, obj.pk)

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: ApprovalRequest) -> str:
        colours = {"pending": "#0969da", "approved": "#1a7f37", "rejected": "#cf222e", "expired": "#cf222e"}
        shadow = " (shadow)" if _ctx(obj).shadow else ""
        return format_html(
            '<strong style="color:{}">{}</strong>{}', colours.get(obj.status, "#6e7781"), obj.status, shadow
        )

    @admin.display(description="approvals", ordering="tier")
    def tier_and_approvals(self, obj: ApprovalRequest) -> str:
        return f"{self.approvals_given(obj)}, tier {obj.tier}"

    @admin.display(description="waiting", ordering="created_at")
    def age(self, obj: ApprovalRequest) -> str:
        return timesince(obj.created_at, obj.decided_at or timezone.now()).split(",")[0]

    @admin.display(description="approvals")
    def approvals_given(self, obj: ApprovalRequest) -> str:
        return f"{getattr(obj, 'approvals_count', 0)}/{obj.required_approvals}"

    @admin.display(description="service")
    def service(self, obj: ApprovalRequest) -> str:
        return _ctx(obj).service

    @admin.display(description="diagnosis")
    def diagnosis(self, obj: ApprovalRequest) -> str:
        return _ctx(obj).diagnosis

    @admin.display(description="confidence")
    def confidence(self, obj: ApprovalRequest) -> str:
        value = _ctx(obj).confidence
        return "unknown" if value is None else f"{float(value):.2f}"

    @admin.display(description="will do")
    def plan_summary(self, obj: ApprovalRequest) -> str:
        parts = []
        for step in _ctx(obj).steps:
            resource = (step.get("resource") or {}).get("name")
            parts.append(f"{step.get('action', '?')}" + (f" on {resource}" if resource else ""))
        text = "; ".join(parts) or "-"
        return format_html('<span title="{}">{}</span>', text, _clip(text, 48))

    @admin.display(description="run")
    def run_link(self, obj: ApprovalRequest) -> str:
        url = _ctx(obj).links.get("run") or f"/api/runs/{obj.run_id}/"
        return format_html('<a href="{}">run&nbsp;#{}</a>', url, obj.run_id)

    @admin.display(description="time left", ordering="expires_at")
    def expires(self, obj: ApprovalRequest) -> str:
        if obj.status != RequestStatus.PENDING:
            return "-"
        now = timezone.now()
        if obj.expires_at <= now:
            return format_html('<b style="color:#cf222e">overdue</b>')
        return timesince(now, obj.expires_at).split(",")[0]

    @admin.display(description="outcome")
    def outcome(self, obj: ApprovalRequest) -> str:
        if obj.status == RequestStatus.PENDING:
            return "waiting"
        return format_html('<span title="{}">{}</span>', obj.status_reason, _clip(obj.status_reason or obj.status, 40))

    @admin.display(description="shadow", boolean=True)
    def shadow_flag(self, obj: ApprovalRequest) -> bool:
        return _ctx(obj).shadow

    # --- review page -------------------------------------------------------------

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_queryset(request).filter(pk=object_id).first()
        if obj is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        if request.method == "POST":
            return self._decide(request, obj)
        return self._review(request, obj, reason=request.GET.get("reason", ""))

    def _review(self, request, obj: ApprovalRequest, *, reason: str = "", error: str = "") -> TemplateResponse:
        refusal = services.may_decide(obj, request.user)
        ctx = _ctx(obj)
        steps, loose_contract = _steps(ctx)
        pending = obj.status == RequestStatus.PENDING and obj.expires_at > timezone.now()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Approval request #{obj.pk} for run #{obj.run_id}",
            "original": obj,
            "request_obj": obj,
            "ctx": ctx.to_json(),
            "steps": steps,
            "loose_contract": loose_contract,
            "snapshot_policy": ctx.snapshot_policy,
            "explanation": ctx.policy_explanation,
            "tier_reasons": ctx.tier_reasons,
            "other_context": [(key, _readable(value)) for key, value in sorted(ctx.extra.items())],
            "confidence": self.confidence(obj),
            "shadow": self.shadow_flag(obj) or shadow_mode(),
            "decisions": obj.decisions.select_related("user").order_by("at"),
            "ineligible": obj.ineligible.select_related("user"),
            "approvals_given": self.approvals_given(obj),
            "age": self.age(obj),
            "expires": timesince(timezone.now(), obj.expires_at).split(",")[0] if pending else "",
            "pending": pending,
            "can_decide": pending and not refusal,
            "refusal": refusal if pending else "",
            "reason": reason,
            "error": error,
            "run_url": ctx.links.get("run") or f"/api/runs/{obj.run_id}/",
            "incident_id": ctx.incident,
            "incident_url": ctx.links.get("incident") or (f"/api/incidents/{ctx.incident}/" if ctx.incident else ""),
            "has_view_permission": True,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.change_form_template, context)

    def _decide(self, request, obj: ApprovalRequest):
        decision = request.POST.get("decision")
        reason = request.POST.get("reason", "")
        if decision not in ("approve", "reject"):
            return self._review(request, obj, reason=reason, error="Choose approve or reject.")
        try:
            updated = services.decide(obj.pk, user=request.user, approve=decision == "approve", reason=reason)
        except ValidationError as exc:
            return self._review(request, obj, reason=reason, error=" ".join(exc.message_dict.get("reason", exc)))
        except services.NotAllowed as exc:
            raise PermissionDenied(str(exc)) from None
        except services.Conflict as exc:
            self.message_user(request, f"Not recorded: {exc}", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:approvals_approvalrequest_change", args=[obj.pk]))
        verb = "approved" if decision == "approve" else "rejected"
        if updated.status == RequestStatus.PENDING:
            message = f"You {verb} request #{obj.pk}; it still needs another approver."
        else:
            message = f"You {verb} request #{obj.pk}; it is now {updated.status} and run #{obj.run_id} resumes."
        self.message_user(request, message, messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:approvals_approvalrequest_changelist"))
