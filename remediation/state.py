"""The run state machine: every legal move of a HealRun's status, and the typed results stages carry.

``remediation.services.transition`` refuses any move this table does not list. docs/pipeline.md shows the
same table (tests/remediation/test_state.py keeps the two in step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from remediation.choices import RunStatus

S = RunStatus
HOLD = "no live agent for the run's host: it waits for the agent"

# status -> the statuses a run may move to from it, each with who makes the move.
MOVES: dict[str, dict[str, str]] = {
    S.RECEIVED: {
        S.DIAGNOSED: "start_run: the incident's diagnosis is recorded",
        S.CANCELLED: "the incident was resolved, or an operator cancelled",
        S.ESCALATED: "the reaper gave up on a lost worker",
    },
    S.DIAGNOSED: {
        S.PLANNED: "plan: a playbook is chosen and bound to inventory resources",
        S.ESCALATED: "plan: unknown diagnosis, no playbook, nothing in the inventory, or the reaper gave up",
        S.BLOCKED: "plan: the target is in its cooldown",
        S.CANCELLED: "the incident was resolved, or an operator cancelled",
    },
    S.PLANNED: {
        S.APPROVED: "gate: tier 1",
        S.AWAITING_APPROVAL: "gate: tier 2 or 3",
        S.BLOCKED: "gate: denied by policy, a blackout or a spent hourly budget",
        S.SIMULATED: "gate: a dry run or shadow mode",
        S.CANCELLED: "the incident was resolved, or an operator cancelled",
        S.ESCALATED: "the reaper gave up on a lost worker",
    },
    S.AWAITING_APPROVAL: {
        S.APPROVED: "resume: the approvals the tier needs were given",
        S.REJECTED: "resume: an approver rejected the plan",
        S.EXPIRED: "resume: nobody decided in time",
        S.BLOCKED: "resume: the plan changed, or the hourly budget is spent",
        S.PLANNED: "the playbook changed: planned again, to be gated again",
        S.ESCALATED: "the playbook was disabled or no longer plans",
        S.CANCELLED: "the incident was resolved, or an operator cancelled",
    },
    S.APPROVED: {
        S.SNAPSHOTTED: "snapshot: safe-hold snapshots taken",
        S.BLOCKED_ON_HOST: HOLD,
        S.BLOCKED: "snapshot: refused, unavailable, cannot observe, or the plan changed",
        S.FAILED: "snapshot: the snapshot failed",
        S.CANCELLED: "the incident was resolved, or an operator cancelled",
        S.ESCALATED: "the reaper gave up on a lost worker",
    },
    S.SNAPSHOTTED: {
        S.EXECUTING: "execute: the steps start",
        S.BLOCKED_ON_HOST: HOLD,
        S.ESCALATED: "the reaper gave up on a lost worker",
    },
    S.EXECUTING: {
        S.VERIFYING: "execute: every step executed",
        S.BLOCKED_ON_HOST: HOLD,
        S.ROLLING_BACK: "execute: a step failed after something changed, or the reaper gave up",
        S.BLOCKED: "execute: the first step was refused or blocked before it changed anything",
    },
    S.VERIFYING: {
        S.SUCCEEDED: "verify: the contract holds",
        S.BLOCKED_ON_HOST: HOLD,
        S.ROLLING_BACK: "verify: the contract does not hold, ran out of time, or the reaper gave up",
        S.BLOCKED: "verify: the contract's facts cannot be observed",
    },
    S.ROLLING_BACK: {
        S.ROLLED_BACK: "rollback: every executed step restored from its verified snapshot",
        S.BLOCKED_ON_HOST: HOLD,
        S.FAILED: "rollback: a step could not be restored",
        S.ESCALATED: "rollback: a snapshot failed its integrity check, or the reaper gave up",
    },
    S.BLOCKED_ON_HOST: {
        S.APPROVED: "its host's agent is back: the stage it waited in starts again",
        S.SNAPSHOTTED: "its host's agent is back: the stage it waited in starts again",
        S.EXECUTING: "its host's agent is back: the stage it waited in starts again",
        S.VERIFYING: "its host's agent is back: the stage it waited in starts again",
        S.ROLLING_BACK: "its host's agent is back: the stage it waited in starts again",
        S.ESCALATED: "no agent came back for its host within GRACE_HOST_WAIT_SECONDS",
        S.CANCELLED: "the incident was resolved, or an operator cancelled, before anything changed",
    },
    S.SUCCEEDED: {
        S.ROLLING_BACK: "an operator rolls a finished run back",
    },
}
for _status in S.values:
    MOVES.setdefault(_status, {})


class IllegalTransition(ValueError):
    """A move the state machine does not allow: a programming error, never a race (races lose the claim)."""


def check(expected: str, new: str) -> None:
    if new not in MOVES.get(expected, {}):
        allowed = ", ".join(MOVES.get(expected, {})) or "nothing (it is final)"
        raise IllegalTransition(f"a run cannot move from {expected} to {new}; from {expected}: {allowed}")


# --- what a stage writes on the run besides its status ---------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """plan and re-plan: the chosen playbook and the plan bound to inventory resources."""

    plan: dict
    plan_hash: str
    family: str
    target: str
    host: str = ""
    playbook: Any = None  # the Playbook (None when re-planning the same one)
    confidence: float | None = None
    shadow: bool | None = None

    def fields(self) -> dict:
        values = {
            "plan": self.plan,
            "plan_hash": self.plan_hash,
            "family": self.family,
            "target": self.target,
            "host": self.host,
        }
        if self.playbook is not None:
            values.update(playbook=self.playbook, confidence=self.confidence, shadow=bool(self.shadow))
        return values


@dataclass(frozen=True)
class Gated:
    """gate: the tier, why, and the policy's explanation (and shadow mode, when it decided)."""

    tier: int
    tier_reasons: list
    policy_explanation: list
    shadow: bool | None = None

    def fields(self) -> dict:
        values = {"tier": self.tier, "tier_reasons": self.tier_reasons, "policy_explanation": self.policy_explanation}
        if self.shadow is not None:
            values["shadow"] = self.shadow
        return values


@dataclass(frozen=True)
class Verified:
    """verify: the share of contract predicates that held."""

    confidence: float

    def fields(self) -> dict:
        return {"verification_confidence": self.confidence}


@dataclass(frozen=True)
class Held:
    """Dispatch found no live agent for the run's host: the stage the run resumes when one is back."""

    status: str

    def fields(self) -> dict:
        return {"held_status": self.status}


@dataclass(frozen=True)
class Resumed:
    """Leaving BLOCKED_ON_HOST."""

    def fields(self) -> dict:
        return {"held_status": ""}


@dataclass(frozen=True)
class Started:
    """A worker entered the stage (so its message was not lost)."""

    at: Any

    def fields(self) -> dict:
        return {"stage_started_at": self.at}


StageResult = Planned | Gated | Verified | Held | Resumed | Started


def table() -> str:
    """The transition table as Markdown (docs/pipeline.md)."""
    rows = ["| from | to | when |", "| --- | --- | --- |"]
    for source, targets in MOVES.items():
        for target, why in targets.items():
            rows.append(f"| {source} | {target} | {why} |")
    return "\n".join(rows)
