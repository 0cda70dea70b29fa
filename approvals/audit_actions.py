"""Every action name the audit log may hold, with what it means: the one registry.

``audit.record`` refuses a name that is not here, so the log's vocabulary cannot drift; docs/audit-actions.md
lists the same names (tests/test_audit_actions.py keeps the two in step).
"""

from __future__ import annotations

ACTIONS: dict[str, str] = {
    # intake and the inventory
    "incident.created": "a new incident was recorded (its channel, source, inventory environment, diagnosis)",
    "incident.resolved": "an incident was resolved (an alert's resolution, a sweep, an operator)",
    "incident.status_changed": "an incident's status changed (healing, escalated, ignored, re-opened...)",
    "delivery.parked": "a stored intake delivery failed too often (or can never succeed) and was parked with its error",
    "delivery.replayed": "an operator sent a parked intake delivery back to the consumers",
    "channel.created": "an intake channel was created",
    "channel.saved": "an intake channel was changed (before and after)",
    "channel.deleted": "an intake channel was deleted",
    "channel.token_issued": "a channel got a new token (only its first characters are recorded)",
    "inventory.service_created": "a service was added to the inventory",
    "inventory.service_saved": "an inventory service was changed (before and after)",
    "inventory.service_deleted": "an inventory service (and its resources) was deleted",
    "inventory.resource_created": "a resource was added to a service",
    "inventory.resource_saved": "an inventory resource was changed (before and after)",
    "inventory.resource_deleted": "an inventory resource was deleted",
    "inventory.catalogue_applied": "a catalogue was applied (what it created, updated and deleted)",
    "diagnosis_rule.created": "a shipped diagnosis rule was installed",
    "sweep_target.created": "a shipped sweep target was installed",
    # the heal pipeline
    "run.created": "a heal run was created for an incident",
    "run.transition": "a heal run moved from one status to another",
    "run.note": "a timeline note on a run (a skipped step, a breaker...)",
    "run.reaped": "the reaper sent a stalled run's stage again",
    "run.retry": "an operator sent a run's stage again",
    "action.execute.started": "an action step started (the attempt is committed first)",
    "action.execute.succeeded": "an action step finished",
    "action.execute.failed": "an action step failed or was refused",
    "action.execute.skipped": "a step's effect was already present after a lost worker: not repeated",
    "action.rollback.started": "a step's rollback started",
    "action.rollback.succeeded": "a step was restored from its snapshot",
    "action.rollback.failed": "a step's rollback failed",
    "snapshot.created": "a safe-hold snapshot was taken, with its sha256 manifest",
    "snapshot.purged": "retention removed a snapshot's files",
    "playbook.created": "a playbook was created (its values)",
    "playbook.updated": "a playbook was changed (before and after)",
    "playbook.deleted": "a playbook that never ran was deleted (what it was)",
    "playbook.installed": "a shipped playbook was installed",
    "playbook.paused": "a playbook was paused after consecutive failures",
    "resilience.breaker_opened": "a circuit breaker opened for an action and target",
    "resilience.breaker_reset": "an operator closed a circuit breaker",
    # governance
    "approval.requested": "a run asked for approval (tier, plan hash, who may not decide)",
    "approval.decision": "someone approved or rejected, with the reason",
    "approval.approved": "a request got the approvals its tier needs",
    "approval.rejected": "a request was rejected",
    "approval.expired": "a request expired without a decision",
    "approval.voided": "a request was voided (the plan changed, the run was cancelled)",
    "policy.rule_installed": "a shipped policy rule was installed",
    "notification.test": "an operator sent a test notification",
    "auth.locked_out": "a client address or account was locked out after failed logins or tokens",
    "user.admin_created": "the first admin user was created",
    "token.issued": "a user's API token was issued (only the start of its key is recorded)",
    "token.revoked": "a user's API token was revoked",
    "config.created": "an object was created in the admin (its values, credentials masked)",
    "config.changed": "an object was changed in the admin or by an admin action (before and after)",
    "config.deleted": "an object was deleted in the admin (what it was)",
    # learning and benchmarks
    "learning.outcome_recorded": "a finished run's outcome was recorded",
    "learning.outcome_revised": "a recorded outcome changed (an operator rolled a success back)",
    "learning.statistics_rebuilt": "playbook statistics were rebuilt from the outcome records",
    "learning.streak_reset": "a re-enabled playbook's failure streak was cleared",
    "benchmark.run_queued": "a benchmark run was queued",
    "benchmark.run_finished": "a benchmark run finished (its status, failures and regressions)",
    "audit.checkpoint_requested": "an operator asked for the audit log to be sealed and a checkpoint signed now",
    "benchmark.run_failed": "a benchmark run could not be handed to a worker (the broker was down): marked failed",
}


class UnknownAuditAction(ValueError):
    """An audit event with a name the registry does not know: add it (with its meaning) first."""


def check(action: str) -> None:
    if action not in ACTIONS:
        raise UnknownAuditAction(f"audit action {action!r} is not registered in approvals.audit_actions")
