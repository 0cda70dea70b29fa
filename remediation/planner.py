"""From a diagnosed incident to a concrete, validated plan with a sha256."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from rest_framework import serializers

from incidents.models import Incident
from remediation.actions import load_all
from remediation.contracts import validate_contract
from remediation.models import Playbook

_TEMPLATE = re.compile(r"\{([a-z_]+(?:\.[A-Za-z0-9_.\-]+)?)\}")


class PlanError(Exception):
    """The incident cannot be turned into a plan; the run is escalated with this reason."""


def incident_context(incident: Incident) -> dict[str, Any]:
    return {
        "service": incident.service,
        "environment": incident.environment,
        "severity": incident.severity,
        "incident.id": incident.pk,
        "diagnosis": incident.diagnosis_code,
        **{f"labels.{k}": v for k, v in (incident.labels or {}).items()},
    }


def fill(value: Any, context: dict[str, Any]) -> Any:
    """Fill ``{name}`` templates. A value that is one whole template keeps the context value's type."""
    if isinstance(value, dict):
        return {k: fill(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, context) for v in value]
    if not isinstance(value, str):
        return value
    whole = _TEMPLATE.fullmatch(value)
    if whole:
        key = whole.group(1)
        if key not in context:
            raise PlanError(f"parameter template {value} cannot be filled: the incident has no {key}")
        return context[key]

    def sub(match: re.Match) -> str:
        key = match.group(1)
        if key not in context:
            raise PlanError(f"parameter template {{{key}}} cannot be filled: the incident has no {key}")
        return str(context[key])

    return _TEMPLATE.sub(sub, value)


def plan_hash(plan: dict) -> str:
    return hashlib.sha256(json.dumps(plan, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


@dataclass
class Plan:
    playbook: Playbook
    document: dict
    hash: str
    family: str
    target: str
    action_tier: int


def validate_steps(steps: Any) -> None:
    """Check a playbook's steps without an incident: actions exist, contracts are well-formed."""
    registry = load_all()
    if not isinstance(steps, list):
        raise serializers.ValidationError({"steps": ["must be a list"]})
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or "action" not in step:
            raise serializers.ValidationError({"steps": [f"step {i}: needs an 'action'"]})
        if step["action"] not in registry:
            raise serializers.ValidationError({"steps": [f"step {i}: unknown action {step['action']!r}"]})
        if not isinstance(step.get("params", {}), dict):
            raise serializers.ValidationError({"steps": [f"step {i}: 'params' must be an object"]})
        validate_contract(step.get("contract", []))


def build(playbook: Playbook, incident: Incident) -> Plan:
    registry = load_all()
    context = incident_context(incident)
    steps = []
    for i, step in enumerate(playbook.steps):
        try:
            action = registry.get(step["action"])
        except KeyError as exc:
            raise PlanError(f"step {i}: {exc.args[0]}") from None
        raw_params = fill(step.get("params", {}), context)
        try:
            params = action.validate(raw_params)
            contract = validate_contract(step.get("contract") or action.default_contract)
        except serializers.ValidationError as exc:
            raise PlanError(
                f"step {i} ({action.name}): invalid parameters: {json.dumps(exc.detail, default=str)}"
            ) from None
        params = json.loads(json.dumps(params, default=str))
        steps.append(
            {
                "index": i,
                "action": action.name,
                "family": action.family,
                "params": params,
                "target": action.target(params),
                "contract": contract,
                "idempotent": action.idempotent,
                "reversible": action.reversible,
                "timeout": action.timeout,
                "tier": action.tier,
            }
        )
    if not steps:
        raise PlanError(f"playbook {playbook.name} has no steps")
    waits = sum(max((p.get("within") or 0 for p in s["contract"]), default=0) for s in steps)
    budget = settings.GRACE_TASK_SOFT_TIME_LIMIT - 30
    if waits > budget:
        raise PlanError(
            f"its contracts wait {waits:.0f} s in all, more than the verify stage may take ({budget} s; "
            "raise GRACE_TASK_SOFT_TIME_LIMIT or shorten the contracts' 'within')"
        )
    families = [s["family"] for s in steps]
    document = {
        "playbook": playbook.name,
        "diagnosis": incident.diagnosis_code,
        "steps": steps,
        "snapshot_policy": "snapshot before every reversible step; verified by sha256 manifest before restore",
    }
    return Plan(
        playbook=playbook,
        document=document,
        hash=plan_hash(document),
        family=next((f for f in families if f != "local"), "local"),
        target=steps[0]["target"],
        action_tier=max(s["tier"] for s in steps),
    )
