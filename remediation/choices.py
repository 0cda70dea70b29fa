from django.db import models


class RunStatus(models.TextChoices):
    RECEIVED = "RECEIVED"
    DIAGNOSED = "DIAGNOSED"
    PLANNED = "PLANNED"
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    BLOCKED_ON_HOST = "BLOCKED_ON_HOST", "BLOCKED_ON_HOST (no live agent on its host: resumes when it is back)"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    BLOCKED = "BLOCKED"
    ESCALATED = "ESCALATED"
    SNAPSHOTTED = "SNAPSHOTTED"
    EXECUTING = "EXECUTING"
    VERIFYING = "VERIFYING"
    SUCCEEDED = "SUCCEEDED"
    ROLLING_BACK = "ROLLING_BACK"
    ROLLED_BACK = "ROLLED_BACK"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    SIMULATED = "SIMULATED", "SIMULATED (dry run or shadow mode: nothing executed)"


S = RunStatus
RunStatus.TERMINAL = (
    S.REJECTED,
    S.EXPIRED,
    S.BLOCKED,
    S.ESCALATED,
    S.SUCCEEDED,
    S.ROLLED_BACK,
    S.FAILED,
    S.CANCELLED,
    S.SIMULATED,
)
# Runs that wait (for a human, or for their host's agent): the reaper leaves them alone but for deadlines.
RunStatus.WAITING = (S.AWAITING_APPROVAL, S.BLOCKED_ON_HOST)
# Runs a worker should be moving forward; the reaper re-dispatches stale ones.
RunStatus.ACTIVE = tuple(s for s in S.values if s not in RunStatus.TERMINAL and s not in RunStatus.WAITING)
# A resolved alert or an operator may cancel a run only before it touches anything.
RunStatus.CANCELLABLE = (S.RECEIVED, S.DIAGNOSED, S.PLANNED, S.AWAITING_APPROVAL, S.APPROVED)


class AttemptStatus(models.TextChoices):
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped", "skipped: effect already present"


class Phase(models.TextChoices):
    EXECUTE = "execute"
    ROLLBACK = "rollback"


class Family(models.TextChoices):
    LOCAL = "local"
    AWS = "aws"
    DOCKER = "docker"
    KUBERNETES = "kubernetes"
