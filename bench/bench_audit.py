"""Audit appends without a lock, against the global-lock append they replace, measured in the same run.

PostgreSQL only (``make bench`` runs on it). Three measures:

- appends/s with 1, 2, 4 and 8 concurrent writers (processes), each append its own transaction, for
  BENCH_AUDIT_SECONDS each. New: ``audit.record`` (one INSERT, no lock) while a sealer seals every second,
  as beat does. Baseline: the append GRACE used before (``old_record`` below: an advisory lock held to
  commit, a read of the chain's head, the hash, one INSERT) into a table of the old shape. The two
  alternate round by round, so noise on a shared machine falls on both.
- sealing lag at 5,000 appends/s: writer processes pace record_many batches of BENCH_LAG_BATCH entries
  to BENCH_LAG_RATE entries/s for BENCH_LAG_SECONDS, while a real Celery worker seals them on the
  shipped beat entry (every second, a real beat). Lag = seal time - append time, per entry: p50, p99, max.
  Bigger transactions cost the writers less per entry, so a loaded machine still reaches the rate; the
  sealer's work per entry does not depend on them.
- verify_audit over BENCH_VERIFY_EVENTS (1,000,000) events: entries bulk-inserted in SQL, sealed by
  the sealer (timed: seals/s), one checkpoint signed into a file, then ``manage.py verify_audit
  --checkpoints`` timed as a process.

Commit durability changes the first figure most: with fsync and synchronous_commit on, a commit waits
for the disk, and the old append held its lock across that wait. Run with durable settings:
``GRACE_PG_DURABLE=1 bash scripts/bench.sh bench/bench_audit.py`` (the test services keep fsync off).
The settings the server ran with are part of the output. BENCH_AUDIT_PARTS (``appends,lag,verify``)
chooses the measures.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import django

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grace_site.settings")

SECONDS = float(os.environ.get("BENCH_AUDIT_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_AUDIT_ROUNDS", "2"))
WRITERS = [int(n) for n in os.environ.get("BENCH_AUDIT_WRITERS", "1,2,4,8").split(",")]
LAG_RATE = int(os.environ.get("BENCH_LAG_RATE", "5000"))
LAG_SECONDS = float(os.environ.get("BENCH_LAG_SECONDS", "20"))
LAG_BATCH = int(os.environ.get("BENCH_LAG_BATCH", "25"))
LAG_WRITERS = int(os.environ.get("BENCH_LAG_WRITERS", "4"))
VERIFY_EVENTS = int(os.environ.get("BENCH_VERIFY_EVENTS", "1000000"))
PARTS = set(os.environ.get("BENCH_AUDIT_PARTS", "appends,lag,verify").split(","))

# --- the baseline: the append GRACE used before, kept here only ---------------------------------------

OLD_LOCK_KEY = 0x4752414345415544 - (1 << 63)  # the old chain lock's key ("GRACEAUD")
OLD_TABLE_SQL = [
    """CREATE TABLE IF NOT EXISTS bench_old_auditevent (
         seq bigint PRIMARY KEY CHECK (seq >= 1), at timestamptz NOT NULL, actor varchar(150) NOT NULL,
         action varchar(100) NOT NULL, object_type varchar(100) NOT NULL, object_id varchar(64) NOT NULL,
         data jsonb NOT NULL, prev_hash varchar(64) NOT NULL UNIQUE, hash varchar(64) NOT NULL UNIQUE)""",
    "CREATE INDEX IF NOT EXISTS bench_old_object_idx ON bench_old_auditevent (object_type, object_id, seq)",
    "CREATE INDEX IF NOT EXISTS bench_old_at_idx ON bench_old_auditevent (at)",
    "CREATE INDEX IF NOT EXISTS bench_old_action_idx ON bench_old_auditevent (action, seq)",
]


def old_record(action: str, *, actor: str, obj: tuple[str, str], data: dict) -> None:
    """The old ``audit.record``: lock the chain to commit, read its head, hash, insert."""
    from django.db import connection, transaction
    from django.utils import timezone

    from approvals.audit import canonical

    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [OLD_LOCK_KEY])
        cursor.execute("SELECT seq, hash FROM bench_old_auditevent ORDER BY seq DESC LIMIT 1")
        last = cursor.fetchone()
        seq, prev_hash = (last[0] + 1, last[1]) if last else (1, "0" * 64)
        at = timezone.now()
        digest = hashlib.sha256(
            canonical(
                seq=seq,
                at=at,
                actor=actor,
                action=action,
                object_type=obj[0],
                object_id=obj[1],
                data=data,
                prev_hash=prev_hash,
            )
        ).hexdigest()
        cursor.execute(
            "INSERT INTO bench_old_auditevent (seq, at, actor, action, object_type, object_id, data, prev_hash, hash) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [seq, at, actor, action, obj[0], obj[1], json.dumps(data), prev_hash, digest],
        )


# --- writer processes ----------------------------------------------------------------------------------


def _init() -> None:
    django.setup()


def _warm(barrier) -> int:
    """Open the process's connection before anything is measured; the barrier makes every process take one."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    barrier.wait(120)
    return os.getpid()


def append_for(kind: str, writer: int, start_at: float, seconds: float) -> int:
    """Append as fast as possible from ``start_at`` for ``seconds``; one transaction per append."""
    from django.db import transaction

    from approvals import audit

    while time.time() < start_at:
        time.sleep(0.001)
    done, end = 0, start_at + seconds
    data = {"from": "EXECUTING", "to": "VERIFYING", "reason": "contract met", "writer": writer}
    while time.time() < end:
        if kind == "new":
            with transaction.atomic():
                audit.record("run.transition", actor="system", obj=("remediation.healrun", done), data=data)
        else:
            old_record("run.transition", actor="system", obj=("remediation.healrun", str(done)), data=data)
        done += 1
    return done


def paced(writer: int, start_at: float, seconds: float, rate: float, batch: int) -> int:
    """Append ``rate`` entries/s in transactions of ``batch`` entries, from ``start_at`` for ``seconds``."""
    from django.db import transaction

    from approvals import audit

    while time.time() < start_at:
        time.sleep(0.001)
    done, interval = 0, batch / rate
    while True:
        due = start_at + (done // batch) * interval
        if due >= start_at + seconds:
            return done
        pause = due - time.time()
        if pause > 0:
            time.sleep(pause)
        entries = [
            {
                "action": "run.transition",
                "actor": "system",
                "obj": ("remediation.healrun", done + i),
                "data": {"from": "EXECUTING", "to": "VERIFYING", "writer": writer},
            }
            for i in range(batch)
        ]
        with transaction.atomic():
            audit.record_many(entries)
        done += batch


# --- the measures ----------------------------------------------------------------------------------------


def server_settings() -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        out = {}
        for name in ("fsync", "synchronous_commit", "full_page_writes", "server_version"):
            cursor.execute(f"SHOW {name}")
            out[name] = cursor.fetchone()[0]
    return out


def reset() -> None:
    """A clean audit log and baseline table (a throwaway benchmark database; done in SQL, deliberately)."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        for statement in OLD_TABLE_SQL:
            cursor.execute(statement)
        cursor.execute("INSERT INTO approvals_audit_unlock (reason) VALUES ('bench_audit: start from empty')")
        cursor.execute(
            "TRUNCATE approvals_auditseal, approvals_auditevent, approvals_auditcheckpoint, "
            "bench_old_auditevent RESTART IDENTITY"
        )
        cursor.execute("DELETE FROM approvals_audit_unlock")


class Sealer(threading.Thread):
    """Seal every second, as beat does, while the writers run."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()

    def run(self) -> None:
        from django.db import connection

        from approvals import audit

        while not self.stop.wait(1.0):
            audit.seal()
        connection.close()


def throughput(pool) -> list[dict]:
    rows = []
    for writers in WRITERS:
        totals = {"new": 0, "old": 0}
        for _ in range(ROUNDS):
            for kind in ("new", "old"):
                sealer = Sealer() if kind == "new" else None
                if sealer:
                    sealer.start()
                start_at = time.time() + 1.0
                results = [pool.apply_async(append_for, (kind, n, start_at, SECONDS)) for n in range(writers)]
                totals[kind] += sum(r.get() for r in results)
                if sealer:
                    sealer.stop.set()
                    sealer.join()
        seconds = SECONDS * ROUNDS
        new, old = totals["new"] / seconds, totals["old"] / seconds
        rows.append(
            {
                "writers": writers,
                "new_appends_per_s": round(new),
                "old_appends_per_s": round(old),
                "ratio": round(new / old, 2),
            }
        )
        print(f"  {writers} writer(s): new {new:8.0f}/s   old (global lock) {old:8.0f}/s   x{new / old:.2f}")
    return rows


def start(argv: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(argv, cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)  # noqa: SIM115


def stop(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def sealing_lag(pool, tmp: Path) -> dict:
    from django.db import connection
    from django_celery_beat.models import PeriodicTask

    from approvals import audit, defaults, sealing
    from grace_site.celery import app

    audit.seal(wait=True)
    defaults.install()
    others = list(
        PeriodicTask.objects.exclude(task="approvals.seal_audit").filter(enabled=True).values_list("pk", flat=True)
    )
    PeriodicTask.objects.filter(pk__in=others).update(enabled=False)  # only the sealer fires meanwhile
    with app.connection_for_write() as conn:
        for queue in app.conf.task_queues:
            conn.default_channel.queue_purge(queue.name)
    worker = start(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "grace_site",
            "worker",
            "-Q",
            "default",
            "-c",
            "1",
            "-n",
            f"bench-audit-{os.getpid()}@localhost",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "warning",
        ],
        tmp / "audit-worker.log",
    )
    beat = start(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "grace_site",
            "beat",
            "-l",
            "warning",
            "--pidfile=",
            f"--schedule={tmp / 'audit-beat-schedule'}",
        ],
        tmp / "audit-beat.log",
    )
    try:
        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=0.5):
            if time.monotonic() > deadline:
                raise RuntimeError("worker did not start")
        head_before = sealing.head().seq
        start_at = time.time() + 1.0
        per_writer = LAG_RATE / LAG_WRITERS
        results = [
            pool.apply_async(paced, (n, start_at, LAG_SECONDS, per_writer, LAG_BATCH)) for n in range(LAG_WRITERS)
        ]
        appended = sum(r.get() for r in results)
        elapsed = time.time() - start_at
        deadline = time.monotonic() + 60
        while sealing.pending()[0]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{sealing.pending()[0]} entries still unsealed a minute after the writers stopped")
            time.sleep(0.2)
    finally:
        stop(beat)
        stop(worker)
        PeriodicTask.objects.filter(pk__in=others).update(enabled=True)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY lag), max(lag), count(*) FROM ("
            " SELECT extract(epoch FROM s.sealed_at - e.at) AS lag FROM approvals_auditseal s"
            " JOIN approvals_auditevent e ON e.id = s.event_id WHERE s.seq > %s) lags",
            [head_before],
        )
        (p50, p99), worst, sealed = cursor.fetchone()
        p50, p99, worst = float(p50), float(p99), float(worst)
    result = {
        "target_rate": LAG_RATE,
        "achieved_rate": round(appended / elapsed),
        "entries": appended,
        "sealed": sealed,
        "batch": LAG_BATCH,
        "writers": LAG_WRITERS,
        "lag_s": {"p50": round(p50, 3), "p99": round(p99, 3), "max": round(worst, 3)},
    }
    print(
        f"  {appended} entries at {appended / elapsed:.0f}/s: lag p50 {p50:.2f} s, p99 {p99:.2f} s, max {worst:.2f} s"
    )
    return result


def verify_million(tmp: Path) -> dict:
    from django.db import connection

    from approvals import audit, checkpoints, sealing
    from approvals.models import AuditEvent

    missing = VERIFY_EVENTS - AuditEvent.objects.count()
    t0 = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO approvals_auditevent (at, actor, action, object_type, object_id, data) "
            "SELECT now() - make_interval(secs => %s - g), 'system', 'run.transition', 'remediation.healrun', "
            "(g / 8)::text, jsonb_build_object('from', 'EXECUTING', 'to', 'VERIFYING', 'note', 'contract met', "
            "'step', g) FROM generate_series(1, %s) AS g",
            [max(missing, 0), max(missing, 0)],
        )
    inserted_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sealed = audit.seal(wait=True, batch_size=10000, max_seconds=3600)
    seal_s = time.perf_counter() - t0
    sink = tmp / "audit-checkpoints.jsonl"
    sink.unlink(missing_ok=True)
    from django.conf import settings

    settings.GRACE_AUDIT_CHECKPOINT_SINKS = [f"file://{sink}"]
    checkpoints.issue()
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "manage.py", "verify_audit", "--checkpoints", f"file://{sink}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    verify_s = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"verify_audit failed: {out.stderr}")
    events = sealing.head().seq
    print(
        f"  sealed {sealed.sealed} in {seal_s:.1f} s ({sealed.sealed / seal_s:.0f}/s); "
        f"verify_audit of {events} events: {verify_s:.1f} s"
    )
    return {
        "events": events,
        "insert_s": round(inserted_s, 1),
        "seal_s": round(seal_s, 1),
        "seals_per_s": round(sealed.sealed / seal_s),
        "verify_s": round(verify_s, 1),
        "verify_output": out.stdout.strip(),
    }


def main() -> None:
    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    if connection.vendor != "postgresql":
        raise SystemExit("bench_audit measures PostgreSQL: run it through scripts/bench.sh")
    call_command("migrate", "--noinput", verbosity=0)
    tmp = Path(settings.VAR_DIR) / "bench"
    tmp.mkdir(parents=True, exist_ok=True)
    server = server_settings()
    print(", ".join(f"{name}={value}" for name, value in server.items()))
    reset()
    connection.close()
    context = multiprocessing.get_context("spawn")
    size = max(max(WRITERS), LAG_WRITERS)
    with context.Pool(size, initializer=_init) as pool:
        with context.Manager() as manager:
            barrier = manager.Barrier(size)
            pids = pool.map(_warm, [barrier] * size, chunksize=1)
        if len(set(pids)) != size:
            raise RuntimeError("the writer processes did not all start")
        appends = lag = verify = None
        if "appends" in PARTS:
            print(f"appends/s, each its own transaction ({SECONDS:.0f} s x {ROUNDS} rounds per figure):")
            appends = throughput(pool)
        if "lag" in PARTS:
            print(f"sealing lag at {LAG_RATE} appends/s (real worker and beat, sealing every second):")
            lag = sealing_lag(pool, tmp)
    if "verify" in PARTS:
        print(f"verify_audit over {VERIFY_EVENTS} events:")
        verify = verify_million(tmp)
    result = {"database": server, "appends": appends, "sealing_lag": lag, "verify": verify}
    print(json.dumps(result, indent=2))
    (tmp / "audit.json").write_text(json.dumps(result, indent=2))
    reset()  # the benchmarks after this one start from an empty audit log


if __name__ == "__main__":
    main()
