"""The stages that touch a target: snapshot, execute, verify, roll back.

Exactly-once: an ActionAttempt row is committed before an action runs. When a
stage is re-entered after a crash, an attempt left STARTED means the worker
died mid-action: an idempotent action runs again; a non-idempotent one is
first re-observed through its contract and skipped when its effect is there.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential_jitter

from approvals import audit
from remediation import contracts, snapshots
from remediation.actions import registry
from remediation.actions.base import ActionError, ActionRefused, ActionUnavailable, CannotObserve
from remediation.choices import AttemptStatus, Phase, RunStatus
from remediation.models import ActionAttempt, ContractResult, HealRun, Snapshot
from remediation.planner import Plan, PlanStep, plan_hash
from remediation.resilience import Blocked, run_guarded
from remediation.services import heartbeat, note, transition
from remediation.state import Verified

logger = logging.getLogger(__name__)
S = RunStatus


@dataclass
class StepFailure:
    step: int
    kind: str  # blocked | unavailable | refused | error | timeout
    reason: str
    changed_nothing: bool


def _steps(run: HealRun) -> list[PlanStep]:
    return list(Plan.from_document(run.plan).steps)


def _progress(run: HealRun, step: PlanStep, steps: list[PlanStep]) -> None:
    """Heartbeat between steps; after the last one the stage's transition is the heartbeat."""
    if step is not steps[-1]:
        heartbeat(run.pk)


def plan_intact(run: HealRun) -> bool:
    return bool(run.plan_hash) and plan_hash(run.plan) == run.plan_hash


def take_snapshots(run: HealRun) -> None:
    if not plan_intact(run):
        transition(run.pk, S.APPROVED, S.BLOCKED, reason="the plan changed after it was approved: nothing executed")
        return
    steps = _steps(run)
    moved = False
    for step in steps:
        if Snapshot.objects.filter(run=run, step_index=step.index).exists():
            continue
        action = registry.get(step.action)
        try:  # before any byte is copied: a snapshot never fills the disk
            snapshots.check_quota(
                step.target, snapshots.estimate(step.target, stop_after=settings.GRACE_SNAPSHOT_TARGET_QUOTA)
            )
        except snapshots.QuotaExceeded as exc:
            transition(run.pk, S.APPROVED, S.BLOCKED, reason=f"snapshot of step {step.index} refused: {exc}")
            return
        directory = snapshots.directory_for(run.pk, step.index)
        try:
            if step.reversible:
                state = action.snapshot(step.params, directory)
            else:
                # Not reversible: keep what it looked like before, so contracts and a
                # re-observation after a lost worker can tell whether the effect happened
                # (an action's own snapshot also refuses a target that is not there to act on).
                before = action.snapshot(step.params, directory) if action.snapshot else {}
                state = {"observed_before": True, **action.observe(step.params), **before}
        except ActionUnavailable as exc:
            transition(run.pk, S.APPROVED, S.BLOCKED, reason=_unavailable(action, exc))
            return
        except ActionRefused as exc:
            transition(run.pk, S.APPROVED, S.BLOCKED, reason=f"snapshot of step {step.index} refused: {exc}")
            return
        except ActionError as exc:
            transition(run.pk, S.APPROVED, S.FAILED, reason=f"snapshot of step {step.index} failed: {exc}")
            return
        manifest = snapshots.build_manifest(directory)
        try:  # the estimate was low (the target grew meanwhile...): what was copied goes
            snapshots.check_quota(step.target, manifest["bytes"], copied=True)
        except snapshots.QuotaExceeded as exc:
            shutil.rmtree(directory, ignore_errors=True)
            transition(run.pk, S.APPROVED, S.BLOCKED, reason=f"snapshot of step {step.index} refused: {exc}")
            return
        with transaction.atomic(savepoint=False):
            snap = Snapshot.objects.create(
                run=run,
                host=settings.GRACE_HOST,
                step_index=step.index,
                action=action.name,
                target=step.target,
                path=str(directory),
                state=state or {},
                manifest=manifest if manifest["files"] else {},
                size_bytes=manifest["bytes"],
            )
            audit.record("snapshot.created", obj=snap, data={"run": run.pk, "step": step.index, **manifest})
            if step is steps[-1]:  # the last snapshot and the run's move commit together
                moved = _snapshotted(run)
        _progress(run, step, steps)
    if not moved:
        _snapshotted(run)


def _snapshotted(run: HealRun) -> bool:
    return transition(
        run.pk, S.APPROVED, S.SNAPSHOTTED, note="safe-hold snapshots taken", family=run.family, host=run.host
    )


class _Lost(Exception):
    """Another worker claimed the run first: this one stops, having done nothing."""


def _attempt(
    run: HealRun, step: PlanStep, phase: str, number: int, *, claim: Callable[[], bool] | None = None
) -> ActionAttempt:
    """Record an attempt before its action runs; ``claim`` (the run's move into its stage) commits with it."""
    with transaction.atomic(savepoint=False):
        if claim is not None and not claim():
            raise _Lost
        attempt = ActionAttempt.objects.create(
            run=run,
            step_index=step.index,
            phase=phase,
            attempt=number,
            idempotency_key=f"run{run.pk}:step{step.index}:{phase}:{number}",
            action=step.action,
            target=step.target,
            params=step.params,
        )
        audit.record(
            f"action.{phase}.started",
            obj=attempt,
            data={"run": run.pk, "step": step.index, "action": step.action, "target": step.target},
        )
    return attempt


def _finish(
    attempt: ActionAttempt,
    status: str,
    *,
    result: dict | None = None,
    error: str = "",
    then: Callable[[], object] | None = None,
) -> None:
    """Record how an attempt ended; ``then`` (the run's next move) commits with it."""
    with transaction.atomic(savepoint=False):
        ActionAttempt.objects.filter(pk=attempt.pk).update(
            status=status, finished_at=timezone.now(), result=result or {}, error=error[:4000]
        )
        audit.record(
            f"action.{attempt.phase}.{status}",
            obj=attempt,
            data={"run": attempt.run_id, "step": attempt.step_index, "action": attempt.action, "error": error[:500]},
        )
        if then is not None:
            then()


def _snapshot_state(run: HealRun, index: int) -> dict:
    snap = Snapshot.objects.filter(run=run, step_index=index).first()
    return snap.state if snap else {}


def _guarded(action, params: dict) -> dict:
    """The action through its breaker and rate limit. When that state cannot be read (Redis down), nothing has
    run yet: the check is tried again with backoff for GRACE_INFRA_RETRY_SECONDS before the step is blocked."""
    for attempt in Retrying(
        stop=stop_after_delay(settings.GRACE_INFRA_RETRY_SECONDS),
        wait=wait_exponential_jitter(multiplier=0.5, max=10),
        retry=retry_if_exception(lambda exc: isinstance(exc, Blocked) and exc.unreadable),
        reraise=True,
    ):
        with attempt:
            return run_guarded(action, params, lambda: action.execute(params))
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover


def _run_step(
    run: HealRun,
    step: PlanStep,
    *,
    claim: Callable[[], bool] | None = None,
    done: Callable[[], object] | None = None,
) -> StepFailure | None:
    """Run one step exactly once. ``claim`` moves the run into EXECUTING, committed with the step's attempt;
    ``done`` is the run's next move, committed with the step's success (raises _Lost when the claim fails)."""
    action = registry.get(step.action)
    params = step.params
    last = (
        ActionAttempt.objects.filter(run=run, step_index=step.index, phase=Phase.EXECUTE).order_by("-attempt").first()
    )
    if claim is not None and last is not None:  # attempts are made in EXECUTING only: claim on its own
        if not claim():
            raise _Lost
        claim = None
    if last and last.status in (AttemptStatus.SUCCEEDED, AttemptStatus.SKIPPED):
        return None
    if last and last.status == AttemptStatus.FAILED:
        return StepFailure(step.index, "error", last.error or "the step failed", False)
    number = 1
    if last:  # STARTED: the worker was lost during the action
        if not action.idempotent:
            try:
                results = contracts.verify(
                    step.contract,
                    lambda: action.observe(params),
                    params,
                    _snapshot_state(run, step.index),
                    wait=False,
                )
            except CannotObserve as exc:
                _finish(last, AttemptStatus.FAILED, error=f"the worker was lost; {exc}")
                return StepFailure(step.index, "unavailable", _unavailable(action, exc), False)
            if results and all(r.passed for r in results):
                _finish(last, AttemptStatus.SKIPPED, result={"reobserved": [r.__dict__ for r in results]})
                note(
                    run.pk,
                    f"step {step.index} ({action.name}): effect already present after a lost worker; not repeated",
                )
                return None
        _finish(last, AttemptStatus.FAILED, error="the worker was lost during this attempt")
        number = last.attempt + 1
    attempt = _attempt(run, step, Phase.EXECUTE, number, claim=claim)
    first = number == 1  # a lost earlier attempt may have changed the target even if this one cannot run
    try:
        result = _guarded(action, params)
    except Blocked as exc:
        _finish(attempt, AttemptStatus.FAILED, error=f"blocked: {exc.reason}")
        return StepFailure(step.index, "blocked", f"{action.name} on {step.target}: {exc.reason}", first)
    except ActionUnavailable as exc:
        _finish(attempt, AttemptStatus.FAILED, error=str(exc))
        return StepFailure(step.index, "unavailable", _unavailable(action, exc), first)
    except SoftTimeLimitExceeded:
        _finish(attempt, AttemptStatus.FAILED, error="timed out")
        return StepFailure(step.index, "timeout", f"{action.name} timed out", False)
    except ActionRefused as exc:
        # Refused before it changed anything (a path outside the roots, a pod of another deployment...):
        # a refusal, not a remediation failure.
        _finish(attempt, AttemptStatus.FAILED, error=f"refused: {exc}")
        return StepFailure(step.index, "refused", f"{action.name} refused: {exc}", first)
    except ActionError as exc:
        _finish(attempt, AttemptStatus.FAILED, error=str(exc))
        return StepFailure(step.index, "error", f"{action.name} failed: {exc}", False)
    _finish(attempt, AttemptStatus.SUCCEEDED, result=result or {}, then=done)
    return None


def execute(run: HealRun, *, claim: Callable[[], bool] | None = None) -> None:
    """Run every step in order. The run is in EXECUTING already, or ``claim`` moves it there, in the transaction
    that records the first step's attempt; the move to VERIFYING commits with the last step's success."""
    steps = _steps(run)
    moved = False

    def done() -> None:
        nonlocal moved
        moved = True
        transition(run.pk, S.EXECUTING, S.VERIFYING, note="every step executed", family=run.family, host=run.host)

    if claim is not None and not steps and not claim():
        return
    for index, step in enumerate(steps):
        try:
            failure = _run_step(
                run, step, claim=claim if index == 0 else None, done=done if step is steps[-1] else None
            )
        except _Lost:
            return
        if failure is None:
            _progress(run, step, steps)
            continue
        if index == 0 and failure.changed_nothing:
            transition(run.pk, S.EXECUTING, S.BLOCKED, reason=failure.reason, data={"step": failure.step})
        else:
            transition(
                run.pk,
                S.EXECUTING,
                S.ROLLING_BACK,
                reason=f"step {failure.step} failed: {failure.reason}",
                family=run.family,
                host=run.host,
            )
        return
    if not moved:
        done()


def verify(run: HealRun) -> None:
    results: list[tuple[int, contracts.PredicateResult]] = []
    steps = _steps(run)
    try:
        for step in steps:
            action = registry.get(step.action)
            state = _snapshot_state(run, step.index)
            for r in contracts.verify(step.contract, lambda a=action, p=step.params: a.observe(p), step.params, state):
                results.append((step.index, r))
            _progress(run, step, steps)
    except SoftTimeLimitExceeded:
        transition(
            run.pk,
            S.VERIFYING,
            S.ROLLING_BACK,
            family=run.family,
            host=run.host,
            reason="verification ran out of time (the stage's soft time limit) before the contract held",
        )
        return
    except CannotObserve as exc:
        # Nothing can be judged, so the run never counts as SUCCEEDED: a person decides (the change is in place).
        transition(
            run.pk,
            S.VERIFYING,
            S.BLOCKED,
            reason=f"{_unavailable(action, exc)}; the change is in place and was not verified: check it by hand",
        )
        return
    passed = sum(1 for _, r in results if r.passed)
    confidence = passed / len(results) if results else 1.0
    failed = [
        f"step {i}: {r.field} {r.operator} {r.expected!r} (actual {r.actual!r})" for i, r in results if not r.passed
    ]
    data = {"passed": passed, "total": len(results)}
    with transaction.atomic(savepoint=False):
        # Transition first: a worker that lost the race writes nothing.
        if failed:
            moved = transition(
                run.pk,
                S.VERIFYING,
                S.ROLLING_BACK,
                reason="contract not met: " + "; ".join(failed),
                result=Verified(confidence),
                data=data,
                family=run.family,
                host=run.host,
            )
        else:
            moved = transition(
                run.pk,
                S.VERIFYING,
                S.SUCCEEDED,
                note="contract met" if results else "no contract predicates",
                result=Verified(confidence),
                data=data,
            )
        if not moved:
            return
        ContractResult.objects.filter(run=run, phase=Phase.EXECUTE).delete()
        ContractResult.objects.bulk_create(
            ContractResult(
                run=run,
                step_index=i,
                phase=Phase.EXECUTE,
                field=r.field,
                operator=r.operator,
                expected=r.expected,
                actual=r.actual,
                passed=r.passed,
                detail=r.detail[:500],
            )
            for i, r in results
        )


def _unavailable(action, exc: ActionUnavailable) -> str:
    if isinstance(exc, CannotObserve):
        return f"cannot observe: {exc}"
    return f"{action.family} unavailable: {exc}"


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, ActionError) and exc.transient


class NotRestorable(Exception):
    """A step that changed something cannot be restored (irreversible, or no snapshot)."""


def _executed_steps(run: HealRun) -> list[PlanStep]:
    touched = set(ActionAttempt.objects.filter(run=run, phase=Phase.EXECUTE).values_list("step_index", flat=True))
    return [step for step in _steps(run) if step.index in touched]


def _restore_point(run: HealRun, step: PlanStep, *, files: bool = True) -> Snapshot:
    """The step's snapshot, its files verified against the manifest (SnapshotIntegrityError otherwise).
    ``files=False`` checks what the database knows only (the files are on another host's disk)."""
    if not step.reversible:
        raise NotRestorable(f"step {step.index} ({step.action}) is not reversible")
    snap = Snapshot.objects.filter(run=run, step_index=step.index).first()
    if snap is None:
        raise NotRestorable(f"step {step.index} has no snapshot")
    if snap.purged_at is not None:
        raise NotRestorable(f"step {step.index}: its snapshot was purged by retention at {snap.purged_at:%Y-%m-%d}")
    if files:
        snapshots.verify(snap)
    return snap


def rollback(run: HealRun, *, from_status: str = S.ROLLING_BACK) -> None:
    """Restore every executed step from its verified snapshot, newest first."""
    problems: list[str] = []
    for step in reversed(_executed_steps(run)):
        done = ActionAttempt.objects.filter(
            run=run, step_index=step.index, phase=Phase.ROLLBACK, status=AttemptStatus.SUCCEEDED
        ).exists()
        if done:
            continue
        try:
            snap = _restore_point(run, step)
        except NotRestorable as exc:
            problems.append(str(exc))
            continue
        except snapshots.SnapshotIntegrityError as exc:
            transition(run.pk, from_status, S.ESCALATED, reason=f"restore refused: {exc}")
            return
        action = registry.get(step.action)
        number = ActionAttempt.objects.filter(run=run, step_index=step.index, phase=Phase.ROLLBACK).count() + 1
        attempt = _attempt(run, step, Phase.ROLLBACK, number)
        try:
            for retry in Retrying(
                stop=stop_after_attempt(3),
                wait=wait_exponential_jitter(multiplier=0.2, max=2),
                retry=retry_if_exception(_transient),
                reraise=True,
            ):
                with retry:
                    result = action.rollback(step.params, snap.state, Path(snap.path))
        except ActionError as exc:
            _finish(attempt, AttemptStatus.FAILED, error=str(exc))
            problems.append(f"step {step.index} rollback failed: {exc}")
            continue
        _finish(attempt, AttemptStatus.SUCCEEDED, result=result or {})
        Snapshot.objects.filter(pk=snap.pk).update(restored_at=timezone.now())
        if result and result.get("verified") is False:
            problems.append(f"step {step.index} rollback did not verify: {result.get('detail', '')}")
        heartbeat(run.pk)
    if problems:
        transition(run.pk, from_status, S.FAILED, reason="rollback incomplete: " + "; ".join(problems))
    else:
        transition(run.pk, from_status, S.ROLLED_BACK, note="restored from verified snapshots")


def verify_all_snapshots(run: HealRun) -> list[str]:
    """Problems that would stop an operator rollback of a finished run (empty when it can go ahead). Files on
    another host are verified there, by the rollback stage, before anything is restored."""
    problems = []
    here = run.host in ("", settings.GRACE_HOST)
    for step in _executed_steps(run):
        try:
            _restore_point(run, step, files=here)
        except NotRestorable as exc:
            problems.append(str(exc))
        except snapshots.SnapshotIntegrityError as exc:
            problems.append(f"step {step.index}: {exc}")
    return problems
