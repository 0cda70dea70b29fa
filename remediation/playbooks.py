"""Playbook writes: the one path the admin and the API take to create, change and delete a playbook.

Each write is validated (steps bind to inventory resources, contracts are well-formed), audited with before
and after values in the same transaction, and sends runs waiting for approval back through the gate. A paused
playbook that is enabled again starts with a clean failure streak.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import ProtectedError
from django.forms.models import model_to_dict

from approvals import audit
from learning import services as learning
from remediation import pipeline
from remediation.models import Playbook
from remediation.planner import validate_steps

FIELDS = (
    "name",
    "description",
    "diagnosis_codes",
    "steps",
    "tier",
    "cooldown_seconds",
    "escalate_only",
    "enabled",
    "shadow",
    "paused_reason",
)


class PlaybookInUse(Exception):
    """The playbook has runs: it can be disabled, not deleted (their history must keep naming it)."""


def catalogue() -> dict[str, list[str]]:
    """``{diagnosis code: [names of the enabled playbooks that remedy it]}`` (what learning ranks)."""
    by_code: dict[str, list[str]] = {}
    for name, codes in Playbook.objects.filter(enabled=True).order_by("name").values_list("name", "diagnosis_codes"):
        for code in codes if isinstance(codes, list) else []:
            if isinstance(code, str):
                by_code.setdefault(code, []).append(name)
    return by_code


def snapshot(playbook: Playbook | None) -> dict | None:
    return model_to_dict(playbook, fields=FIELDS) if playbook is not None else None


def save(playbook: Playbook, *, actor=None, before: dict | None = None) -> int:
    """Create or update ``playbook``; returns how many waiting runs were planned again.

    ``before`` is the row as it was (read before the caller changed the instance); without it the stored row is
    read. Raises ``ValidationError`` (DRF) naming the field when the steps are invalid.
    """
    validate_steps(playbook.steps, escalate_only=playbook.escalate_only)
    if before is None and playbook.pk:
        before = snapshot(Playbook.objects.filter(pk=playbook.pk).first())
    re_enabled = bool(before) and playbook.enabled and (not before["enabled"] or before["paused_reason"])
    if playbook.enabled:
        playbook.paused_reason = ""
    playbook.full_clean()
    with transaction.atomic():
        playbook.save()
        after = snapshot(playbook)
        changes = audit.diff(before, after)
        audit.record("playbook.updated" if before else "playbook.created", actor=actor, obj=playbook, data=changes)
        if re_enabled:
            learning.reset_streak(playbook.name, actor=actor, reason=f"playbook {playbook.name} enabled again")
        return pipeline.replan_waiting(playbook, actor=actor) if before else 0


def delete(playbook: Playbook, *, actor=None) -> None:
    """Delete a playbook that never ran; PlaybookInUse (nothing changes) when runs name it."""
    if playbook.runs.exists():
        raise PlaybookInUse(
            f"playbook {playbook.name} has {playbook.runs.count()} run(s): disable it instead of deleting it"
        )
    try:
        with transaction.atomic():
            audit.record("playbook.deleted", actor=actor, obj=playbook, data={"before": snapshot(playbook)})
            playbook.delete()
    except ProtectedError:
        raise PlaybookInUse(f"playbook {playbook.name} has runs: disable it instead of deleting it") from None
