"""From a diagnosed incident to a concrete, validated plan with a sha256.

Every step acts on a resource of the incident's service in the inventory: the action's target parameters are
bound from that resource, never from the alert. A label may only select among the service's resources of the
step's kind (by name), and a parameter filled from a label must match the values or pattern the step allows.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from django.conf import settings
from rest_framework import serializers

from incidents import inventory
from incidents.models import Incident, Service
from remediation.actions import registry
from remediation.contracts import validate_contract
from remediation.evidence import COLLECTORS
from remediation.models import Playbook

# A parameter may be filled from one label, whole: "{labels.level}". Nothing else is a template.
_LABEL_TEMPLATE = re.compile(r"^\{labels\.([A-Za-z_][A-Za-z0-9_]*)\}$")
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
DEFAULT_RESOURCE_LABEL = "resource"
STEP_KEYS = {"action", "params", "allow", "contract", "resource_label"}
EVIDENCE_KEYS = {"evidence", "params", "resource_label"}


class PlanError(Exception):
    """The incident cannot be turned into a plan; the run is escalated with this reason."""


def plan_hash(document: dict) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


@dataclass(frozen=True)
class PlanStep:
    """One resolved step: the action, its validated parameters and the resource they were bound from."""

    index: int
    action: str
    family: str
    params: dict
    target: str
    contract: list[dict]
    idempotent: bool
    reversible: bool
    timeout: float
    tier: int
    resource: dict = field(default_factory=dict)  # {"service", "name", "kind", "host"}

    def to_document(self) -> dict:
        return asdict(self)

    @classmethod
    def from_document(cls, document: dict) -> PlanStep:
        known = {name: document[name] for name in cls.__dataclass_fields__ if name in document}
        return cls(**known)


@dataclass(frozen=True)
class Plan:
    """What a run will do, exactly: approvals bind to the sha256 of its document."""

    playbook: str
    diagnosis: str
    steps: tuple[PlanStep, ...]
    service: str = ""
    environment: str = ""
    tier_floor: int = 1
    snapshot_policy: str = "snapshot before every reversible step; verified by sha256 manifest before restore"

    def to_document(self) -> dict:
        return {
            "playbook": self.playbook,
            "diagnosis": self.diagnosis,
            "service": self.service,
            "environment": self.environment,
            "tier_floor": self.tier_floor,
            "steps": [step.to_document() for step in self.steps],
            "snapshot_policy": self.snapshot_policy,
        }

    @classmethod
    def from_document(cls, document: dict | None) -> Plan:
        document = document or {}
        return cls(
            playbook=document.get("playbook", ""),
            diagnosis=document.get("diagnosis", ""),
            steps=tuple(PlanStep.from_document(step) for step in document.get("steps", [])),
            service=document.get("service", ""),
            environment=document.get("environment", ""),
            tier_floor=document.get("tier_floor", 1),
            snapshot_policy=document.get("snapshot_policy", ""),
        )

    @property
    def hash(self) -> str:
        return plan_hash(self.to_document())

    @property
    def family(self) -> str:
        return next((s.family for s in self.steps if s.family != "local"), "local")

    @property
    def target(self) -> str:
        return self.steps[0].target if self.steps else ""

    @property
    def action_tier(self) -> int:
        return max((s.tier for s in self.steps), default=1)

    @property
    def targets(self) -> set[str]:
        return {s.target for s in self.steps}

    @property
    def hosts(self) -> set[str]:
        """The hosts whose local resources the plan touches (their agents run its local stages)."""
        return {s.resource["host"] for s in self.steps if s.resource.get("host")}

    @property
    def host(self) -> str:
        return next(iter(self.hosts), "")


# --- playbook steps, checked when a playbook is saved -----------------------------------------------------


def _evidence_errors(i: int, step: dict) -> list[str]:
    collector = COLLECTORS.get(step["evidence"]) if isinstance(step["evidence"], str) else None
    if collector is None:
        return [f"step {i}: unknown evidence {step['evidence']!r} (known: {', '.join(sorted(COLLECTORS))})"]
    allowed_keys = ", ".join(sorted(EVIDENCE_KEYS))
    errors = [f"step {i}: unknown key {key!r} (allowed: {allowed_keys})" for key in sorted(set(step) - EVIDENCE_KEYS)]
    label = step.get("resource_label", DEFAULT_RESOURCE_LABEL)
    if not isinstance(label, str) or not _LABEL_NAME.match(label):
        errors.append(f"step {i}: 'resource_label' must be a label name")
    if not isinstance(step.get("params", {}), dict):
        return [*errors, f"step {i}: 'params' must be an object"]
    try:
        collector.validate(step.get("params") or {})
    except serializers.ValidationError as exc:
        errors.append(f"step {i}: invalid parameters of {collector.name}: {json.dumps(exc.detail, default=str)}")
    return errors


def _step_errors(i: int, step: Any, registry) -> list[str]:
    if isinstance(step, dict) and "evidence" in step and "action" not in step:
        return _evidence_errors(i, step)
    if not isinstance(step, dict) or "action" not in step:
        return [f"step {i}: needs an 'action' (or, in an escalate-only playbook, an 'evidence')"]
    if step["action"] not in registry:
        return [f"step {i}: unknown action {step['action']!r}"]
    action = registry.get(step["action"])
    allowed_keys = ", ".join(sorted(STEP_KEYS))
    errors = [f"step {i}: unknown key {key!r} (allowed: {allowed_keys})" for key in sorted(set(step) - STEP_KEYS)]
    params, allow = step.get("params", {}), step.get("allow", {})
    if not isinstance(params, dict):
        return [*errors, f"step {i}: 'params' must be an object"]
    if not isinstance(allow, dict):
        return [*errors, f"step {i}: 'allow' must be an object of parameter name to rule"]
    label = step.get("resource_label", DEFAULT_RESOURCE_LABEL)
    if not isinstance(label, str) or not _LABEL_NAME.match(label):
        errors.append(f"step {i}: 'resource_label' must be a label name")
    for name in sorted(set(params) & set(action.binds)):
        errors.append(
            f"step {i}: parameter {name!r} of {action.name} comes from the service's {action.resource_kind} "
            "resource in the inventory; remove it from the step"
        )
    for name, value in params.items():
        if isinstance(value, str) and "{" in value and not _LABEL_TEMPLATE.match(value):
            errors.append(f"step {i}: parameter {name!r}: only a whole '{{labels.<name>}}' may fill a parameter")
        elif isinstance(value, str) and _LABEL_TEMPLATE.match(value) and name not in allow:
            errors.append(
                f"step {i}: parameter {name!r} is filled from a label, so the step must declare what it allows: "
                f'"allow": {{"{name}": {{"values": [...]}}}} or {{"pattern": "..."}}'
            )
    for name, rule in allow.items():
        if name not in params:
            errors.append(f"step {i}: 'allow' names {name!r}, which is not one of the step's parameters")
        errors.extend(f"step {i}: allow {name!r}: {problem}" for problem in _rule_problems(rule))
    return errors


def _rule_problems(rule: Any) -> list[str]:
    if not isinstance(rule, dict) or set(rule) - {"values", "pattern"} or not rule:
        return ['must be {"values": [...]} or {"pattern": "regex"}']
    problems = []
    if "values" in rule:
        values = rule["values"]
        if not isinstance(values, list) or not values or not all(isinstance(v, str | int | float) for v in values):
            problems.append("'values' must be a non-empty list of strings or numbers")
    if "pattern" in rule:
        try:
            re.compile(rule["pattern"])
        except (re.error, TypeError) as exc:
            problems.append(f"'pattern' is not a valid regular expression: {exc}")
    return problems


def is_evidence(step: Any) -> bool:
    return isinstance(step, dict) and "evidence" in step and "action" not in step


def validate_steps(steps: Any, *, escalate_only: bool | None = None) -> None:
    """Check a playbook's steps without an incident: actions exist, nothing binds a target outside the
    inventory, label-filled parameters declare what they allow, contracts are well-formed.

    An escalate-only playbook acts on nothing: its steps may only gather evidence, and only such a playbook
    may (``escalate_only`` None: either kind is accepted, the playbook's flag is checked where it is known)."""
    if not isinstance(steps, list):
        raise serializers.ValidationError({"steps": ["must be a list"]})
    errors = [error for i, step in enumerate(steps) for error in _step_errors(i, step, registry)]
    for i, step in enumerate(steps):
        if escalate_only is True and isinstance(step, dict) and "action" in step:
            errors.append(f"step {i}: an escalate-only playbook acts on nothing; its steps may only gather evidence")
        elif escalate_only is False and is_evidence(step):
            errors.append(f"step {i}: evidence steps belong to escalate-only playbooks (set escalate_only)")
    if errors:
        raise serializers.ValidationError({"steps": errors})
    for step in steps:
        if not is_evidence(step):
            validate_contract(step.get("contract", []))


def required_inputs(steps: list) -> list[dict]:
    """What each step needs from the inventory and from labels (shown in the API and the docs).

    An action step needs its resource kind in the incident's service (or nothing is planned); an evidence step
    reads its resource kind when the service has one (and says so when it has not)."""
    needs = []
    for i, step in enumerate(steps or []):
        if is_evidence(step) and step["evidence"] in COLLECTORS:
            collector = COLLECTORS[step["evidence"]]
            needs.append(
                {
                    "step": i,
                    "evidence": collector.name,
                    "resource_kind": collector.resource_kind,
                    "resource_label": step.get("resource_label", DEFAULT_RESOURCE_LABEL)
                    if collector.resource_kind
                    else "",
                    "labels": list(collector.labels),
                }
            )
            continue
        if not isinstance(step, dict) or step.get("action") not in registry:
            continue
        action = registry.get(step["action"])
        values = [v for v in (step.get("params") or {}).values() if isinstance(v, str)]
        labels = sorted({m.group(1) for m in map(_LABEL_TEMPLATE.match, values) if m})
        needs.append(
            {
                "step": i,
                "action": action.name,
                "resource_kind": action.resource_kind,
                "resource_label": step.get("resource_label", DEFAULT_RESOURCE_LABEL),
                "labels": labels,
            }
        )
    return needs


def missing_resources(playbook: Playbook, service: Service) -> list[str]:
    """The resource kinds the playbook's action steps need that ``service`` has none of (empty: it fits)."""
    wanted = {need["resource_kind"] for need in required_inputs(playbook.steps) if "action" in need}
    have = set(service.resources.filter(kind__in=wanted).values_list("kind", flat=True).distinct())
    return sorted(wanted - have)


# --- building a plan for an incident -----------------------------------------------------------------------


def _fill(step_index: int, params: dict, allow: dict, labels: dict) -> dict:
    """Literal parameters as they are; label-filled ones only when the label's value is allowed."""
    filled = {}
    for name, value in params.items():
        match = _LABEL_TEMPLATE.match(value) if isinstance(value, str) else None
        if match is None:
            filled[name] = value
            continue
        label = match.group(1)
        if label not in labels:
            raise PlanError(f"step {step_index}: parameter {name!r} needs the label {label!r}; the incident has none")
        given = labels[label]
        rule = allow.get(name) or {}
        if "values" in rule and given not in [str(v) for v in rule["values"]]:
            raise PlanError(
                f"step {step_index}: label {label}={given!r} is not an allowed value of {name!r} "
                f"({', '.join(str(v) for v in rule['values'])})"
            )
        if "pattern" in rule and not re.fullmatch(rule["pattern"], given):
            raise PlanError(f"step {step_index}: label {label}={given!r} does not match the pattern of {name!r}")
        if not rule:
            raise PlanError(f"step {step_index}: parameter {name!r} is filled from a label but the step allows nothing")
        filled[name] = given
    return filled


def _resource_view(resource) -> dict:
    return {"target": resource.target, "scope": dict(resource.scope or {}), "host": resource.host}


def build(playbook: Playbook, incident: Incident, service: Service | None = None) -> Plan:
    """The plan for ``incident`` with ``playbook``; PlanError (the run escalates) when it cannot be made."""
    service = service or inventory.service_named(incident.service)
    if service is None:
        raise PlanError(
            f"service {incident.service or '(none)'!r} is not in the inventory: GRACE acts only on inventory "
            "resources (add the service and its resources, e.g. with manage.py grace_inventory apply)"
        )
    labels = incident.labels or {}
    steps = []
    for i, step in enumerate(playbook.steps):
        if is_evidence(step):
            raise PlanError(f"step {i}: an evidence step in a playbook that acts (only escalate-only ones gather)")
        try:
            action = registry.get(step["action"])
        except KeyError as exc:
            raise PlanError(f"step {i}: {exc.args[0]}") from None
        label = step.get("resource_label", DEFAULT_RESOURCE_LABEL)
        try:
            resource = inventory.select(service, action.resource_kind, labels=labels, label=label)
        except inventory.NotInInventory as exc:
            raise PlanError(f"step {i} ({action.name}): {exc}") from None
        filled = _fill(i, step.get("params") or {}, step.get("allow") or {}, labels)
        raw = {**filled, **action.bind(_resource_view(resource))}
        try:
            params = action.validate(raw)
            contract = validate_contract(step.get("contract") or action.default_contract)
        except serializers.ValidationError as exc:
            raise PlanError(
                f"step {i} ({action.name}): invalid parameters: {json.dumps(exc.detail, default=str)}"
            ) from None
        params = action.canonical(json.loads(json.dumps(params, default=str)))
        steps.append(
            PlanStep(
                index=i,
                action=action.name,
                family=action.family,
                params=params,
                target=action.target(params),
                contract=contract,
                idempotent=action.idempotent,
                reversible=action.reversible,
                timeout=action.timeout,
                tier=action.tier,
                resource={"service": service.name, "name": resource.name, "kind": resource.kind, "host": resource.host},
            )
        )
    if not steps:
        raise PlanError(f"playbook {playbook.name} has no steps")
    hosts = sorted({s.resource["host"] for s in steps if s.resource.get("host")})
    if len(hosts) > 1:
        raise PlanError(f"its steps act on resources of several hosts ({', '.join(hosts)}): one run acts on one host")
    waits = sum(max((p.get("within") or 0 for p in s.contract), default=0) for s in steps)
    budget = settings.GRACE_TASK_SOFT_TIME_LIMIT - 30
    if waits > budget:
        raise PlanError(
            f"its contracts wait {waits:.0f} s in all, more than the verify stage may take ({budget} s; "
            "raise GRACE_TASK_SOFT_TIME_LIMIT or shorten the contracts' 'within')"
        )
    return Plan(
        playbook=playbook.name,
        diagnosis=incident.diagnosis_code,
        steps=tuple(steps),
        service=service.name,
        environment=service.environment,
        tier_floor=service.tier_floor,
    )
