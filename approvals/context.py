"""What an approver sees: the context the pipeline hands over with a request, as one typed record.

Approvals owns this shape; the pipeline fills it in (approvals never reads the run to find out), and the admin,
the API and notifications read it back through ``ApprovalContext.from_json``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class ApprovalContext:
    service: str = ""
    environment: str = ""
    incident: int | None = None
    title: str = ""
    diagnosis: str = ""
    playbook: str = ""
    plan: dict = field(default_factory=dict)  # the exact plan document the request's hash covers
    contract: list = field(default_factory=list)  # per step, its predicates
    snapshot_policy: str = ""
    confidence: float | None = None  # learned confidence of the playbook (None: too few outcomes)
    tier_reasons: list = field(default_factory=list)
    policy_explanation: list = field(default_factory=list)
    shadow: bool = False
    links: dict = field(default_factory=dict)  # {"run": path, "incident": path} in GRACE's admin
    extra: dict = field(default_factory=dict)  # anything else the caller passed

    def to_json(self) -> dict:
        data = asdict(self)
        return {**data.pop("extra"), **data}

    @classmethod
    def from_json(cls, data: Any) -> ApprovalContext:
        if isinstance(data, ApprovalContext):
            return data
        data = dict(data) if isinstance(data, dict) else {}
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {name: data.pop(name) for name in list(data) if name in known}
        return cls(**values, extra=data)

    @property
    def steps(self) -> list[dict]:
        steps = self.plan.get("steps", []) if isinstance(self.plan, dict) else self.plan
        return [step for step in steps if isinstance(step, dict)] if isinstance(steps, list) else []
