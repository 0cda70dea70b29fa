"""Redis killed and restarted during a burst of incidents: every incident the API acknowledged reaches a final
state within 120 s of Redis returning, and no action runs twice.

Real processes on a Redis of the test's own (granian, one worker, beat), with a lowered dispatch lease and
hand-off grace and the reaper every 2 s, as an operator would tune a fleet that must recover quickly. Redis
runs without persistence, so killing it loses every queued message: recovery is the reaper's alone.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from django.db.models import Count

from approvals import tokens
from grace_site.beat import ensure_interval_task
from incidents.models import DiagnosisRule
from remediation.choices import RunStatus
from remediation.models import ActionAttempt, HealRun, Playbook, RunEvent
from tests.support import inventory
from tests.support.processes import free_port, start_beat, start_redis, start_web, start_worker
from tests.support.runs import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

BURST = 300
KILL_AFTER = 100  # acknowledged incidents before Redis is killed
DOWN_FOR = 4.0  # seconds Redis stays down
RECOVERY = 120.0  # every acknowledged incident is final this long after Redis is back


def small_db(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t (v) VALUES (?)", (("x",) for _ in range(50)))


@pytest.fixture
def burst_inventory(allowed_root):
    """BURST services, each with its own small SQLite database: independent targets, as real incidents have."""
    for i in range(BURST):
        db = allowed_root / f"db{i}.sqlite3"
        small_db(db)
        inventory.resource(f"burst-{i}", "sqlite", db, name="db")
    DiagnosisRule.objects.create(name="test: burst", code="burst_probe", position=1, title_regex=r"^burst probe")
    Playbook.objects.create(
        name="burst-analyze",
        diagnosis_codes=["burst_probe"],
        tier=1,
        cooldown_seconds=0,
        steps=[{"action": "sqlite.analyze", "contract": [{"field": "integrity", "op": "==", "value": "ok"}]}],
    )
    return allowed_root


def test_every_acknowledged_incident_is_final_within_120_s_of_redis_returning_and_nothing_runs_twice(
    tmp_path, burst_inventory, admin_user
):
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    redis_server = start_redis(tmp_path, port)
    env = {
        "REDIS_URL": broker,
        "GRACE_DISPATCH_LEASE_SECONDS": "5",
        "GRACE_HANDOFF_GRACE_SECONDS": "5",
        "GRACE_INFRA_RETRY_SECONDS": "30",
    }
    ensure_interval_task("remediation: reaper", "remediation.reap", every=2, queue="heal.local", expires=2)
    _, key = tokens.issue(admin_user, name="burst")
    processes = []
    try:
        worker, _ = start_worker(tmp_path, concurrency=2, broker_url=broker, **env)
        processes.append(worker)
        processes.append(start_beat(tmp_path, **env))
        web, base = start_web(tmp_path, **env)
        processes.append(web)

        acknowledged: list[int] = []
        answers: Counter = Counter()
        lock = threading.Lock()
        returned_at: list[float] = []

        def post(i: int) -> None:
            with requests.Session() as session:
                response = session.post(
                    f"{base}/api/incidents/?wait=true",
                    timeout=30,
                    headers={"Authorization": f"Token {key}"},
                    json={"service": f"burst-{i}", "title": f"burst probe {i}", "severity": "warning"},
                )
            with lock:
                answers[response.status_code] += 1
                if response.status_code in (200, 201, 202):
                    acknowledged.append(response.json()["id"])

        def outage() -> None:
            wait_for(lambda: len(acknowledged) >= KILL_AFTER, timeout=120, what=f"{KILL_AFTER} acknowledged")
            redis_server.kill()  # SIGKILL: queued and unacknowledged messages are gone
            redis_server.proc.wait(10)
            time.sleep(DOWN_FOR)
            processes.append(start_redis(tmp_path, port))
            returned_at.append(time.monotonic())

        killer = threading.Thread(target=outage)
        killer.start()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(post, range(BURST)))
        killer.join()
        assert returned_at, "Redis was never killed: the burst finished first"

        def unfinished() -> set[int]:
            final = set(
                HealRun.objects.filter(incident_id__in=acknowledged, status__in=RunStatus.TERMINAL).values_list(
                    "incident_id", flat=True
                )
            )
            return set(acknowledged) - final

        remaining = RECOVERY - (time.monotonic() - returned_at[0])
        wait_for(
            lambda: not unfinished(),
            timeout=max(remaining, 1),
            interval=0.5,
            fresh_reads=True,
            what="every acknowledged incident's run to finish",
            detail=lambda: (
                f"unfinished: {sorted(unfinished())[:20]}; answers {dict(answers)}; "
                f"runs {Counter(HealRun.objects.values_list('status', flat=True))}; "
                f"worker {'running' if worker.proc.poll() is None else f'exited {worker.proc.returncode}'}, "
                f"its log ends:\n{worker.log()[-1500:]}"
            ),
        )
    finally:
        for process in reversed(processes):
            process.stop()
        redis_server.stop()

    recovered_in = time.monotonic() - returned_at[0]
    print(
        f"answers {dict(answers)}; final {recovered_in:.1f} s after Redis returned; reaper notes "
        f"{Counter(RunEvent.objects.filter(note__startswith='reaper').values_list('note', flat=True))}"
    )
    assert len(acknowledged) >= KILL_AFTER
    runs = HealRun.objects.filter(incident_id__in=acknowledged)
    statuses = Counter(runs.values_list("status", flat=True))
    assert statuses == {RunStatus.SUCCEEDED: len(acknowledged)}, statuses  # one run each, none lost or blocked
    executions = (
        ActionAttempt.objects.filter(run__incident_id__in=acknowledged, phase="execute")
        .values("run__incident_id")
        .annotate(n=Count("pk"))
    )
    assert {row["n"] for row in executions} == {1}
    assert len(executions) == len(acknowledged)
