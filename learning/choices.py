from django.db import models


class Outcome(models.TextChoices):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back", "rolled back"
    ESCALATED = "escalated"
    REJECTED = "rejected"
    EXPIRED = "expired"
    BLOCKED = "blocked"
    CANCELLED = "cancelled"
    SIMULATED = "simulated", "simulated (dry run or shadow mode: nothing executed)"


# Outcomes that say something about whether the playbook works. The others
# (escalated, rejected, expired, blocked, cancelled, simulated) never ran the playbook to
# the end, so they are recorded but leave PlaybookStatistics untouched.
Outcome.COUNTED = (Outcome.SUCCEEDED, Outcome.FAILED, Outcome.ROLLED_BACK)
Outcome.FAILURES = (Outcome.FAILED, Outcome.ROLLED_BACK)
# Outcomes a human had to take over (analytics: auto-resolved versus escalated).
Outcome.HUMAN = (Outcome.ESCALATED, Outcome.REJECTED, Outcome.EXPIRED, Outcome.BLOCKED)


class BenchmarkRunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    PASSED = "passed", "passed: every check ran, no regression"
    REGRESSED = "regressed", "regressed: a metric crossed its baseline"
    FAILED = "failed", "failed: a check could not run"


BenchmarkRunStatus.FINISHED = (BenchmarkRunStatus.PASSED, BenchmarkRunStatus.REGRESSED, BenchmarkRunStatus.FAILED)


class Trigger(models.TextChoices):
    API = "api"
    SCHEDULE = "schedule"
    CONTRACT = "contract"
    MANUAL = "manual"
