"""Burst throughput of the heal pipeline with 1, 2 and 4 worker processes and with two hosts, beside bare
Celery chains measured in the same run.

- pipeline burst: BENCH_FLEET_BURST (500) distinct incidents, each for its own service with its own small
  SQLite database in the inventory (tier 1, one `sqlite.analyze` step and its contract), ingested in batches
  of 50 as intake's consumer does; runs finished per second, from the first ingest to the last SUCCEEDED
  timeline entry (the outcome of each run is recorded too before the next burst starts).
- baseline burst: the same number of Celery chains of 6 no-op tasks (`grace.ping`, the stages a tier-1 run
  passes through until SUCCEEDED), sent at once to the same workers; chains finished per second.
- configurations: one worker with 1, 2 and 4 processes (resources on "this machine", the single-host
  default), and two simulated hosts: two workers with 2 processes each, with distinct GRACE_HOST and
  GRACE_VAR_DIR, each also consuming the shared queues; the resources are split between the hosts, so each
  run's snapshot, execute and verify stages go to its host's queue.
- rounds: BENCH_FLEET_ROUNDS (2) per configuration, pipeline and baseline alternating (the order flips each
  round), so a noisy spell on the shared machine falls on both.

Where the time goes, per burst:
- CPU seconds per run by process: worker pool processes (the tasks), worker main processes (the broker
  consumer), PostgreSQL, Redis, and this process (the ingest); the machine's total, and the load average;
- per task, from the probe loaded into the workers (bench/worker_probe.py): wall, CPU, database statements,
  commits (with synchronous_commit on, each waits for the WAL flush) and broker publishes;
- the p50 gap before each timeline entry (in a burst, mostly time queued behind other runs).

Run with `make bench` (PostgreSQL with fsync and synchronous commit on) or
`flock /work/notes/bench.lock bash scripts/bench.sh bench/bench_fleet.py`. BENCH_FLEET_CONFIGS picks
configurations (default "1,2,4,hosts").
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import django

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grace_site.settings")
django.setup()

import psutil  # noqa: E402
from celery import chain  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from grace_site.celery import app  # noqa: E402
from grace_site.tasks import ping  # noqa: E402
from incidents.models import DiagnosisRule, Incident, Resource, Service  # noqa: E402
from incidents.services import Signal, ingest_many  # noqa: E402
from remediation.models import HealRun, Playbook, RunEvent  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BURST = int(os.environ.get("BENCH_FLEET_BURST", "500"))
ROUNDS = int(os.environ.get("BENCH_FLEET_ROUNDS", "2"))
CONFIGS = os.environ.get("BENCH_FLEET_CONFIGS", "1,2,4,hosts").split(",")
WARMUP = 20
BATCH = 50
TIMEOUT = float(os.environ.get("BENCH_FLEET_TIMEOUT", "900"))
QUEUES = "heal.local,heal.cloud,sweeps,benchmarks,default"
HOSTS = ("fleet-a", "fleet-b")
VAR = Path(settings.VAR_DIR) / "bench" / "fleet"
PROBES = VAR / "probe"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else 0.0


# --- inventory: one service and one SQLite database per incident ----------------------------------------


def setup() -> None:
    call_command("migrate", "--noinput", verbosity=0)
    DiagnosisRule.objects.update_or_create(
        name="bench: fleet probe",
        defaults={
            "code": "bench_fleet_probe",
            "position": 1,
            "enabled": True,
            "title_regex": r"^bench fleet probe",
            "confidence": 0.99,
        },
    )
    Playbook.objects.update_or_create(
        name="bench-fleet-analyze",
        defaults={
            "diagnosis_codes": ["bench_fleet_probe"],
            "tier": 1,
            "cooldown_seconds": 0,
            "enabled": True,
            "steps": [{"action": "sqlite.analyze", "contract": [{"field": "integrity", "op": "==", "value": "ok"}]}],
        },
    )


def template_db() -> Path:
    path = VAR / "template.sqlite3"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            conn.executemany("INSERT INTO t (v) VALUES (?)", (("x",) for _ in range(100)))
        sqlite3.connect(path).close()  # the last close checkpoints: the file alone is the database
    return path


def managed_root(host: str) -> Path:
    return (VAR / "hosts" / host / "managed") if host else Path(settings.GRACE_ALLOWED_ROOTS[0]) / "bench-fleet"


def inventory(label: str, count: int, hosts: tuple[str, ...]) -> list[str]:
    """``count`` services ``fleet-<label>-<i>``, each with its own database, on ``hosts`` in turn."""
    template = template_db()
    services, resources = [], []
    for i in range(count):
        host = hosts[i % len(hosts)]
        directory = managed_root(host) / label
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"db{i}.sqlite3"
        shutil.copyfile(template, path)
        services.append(Service(name=f"fleet-{label}-{i}", environment="bench", hosts=[host] if host else []))
        resources.append((f"fleet-{label}-{i}", str(path), host))
    Service.objects.bulk_create(services, ignore_conflicts=True)
    ids = dict(Service.objects.filter(name__in=[s.name for s in services]).values_list("name", "pk"))
    Resource.objects.bulk_create(
        [
            Resource(service_id=ids[name], name="db", kind="sqlite", target=target, host=host)
            for name, target, host in resources
        ],
        ignore_conflicts=True,
    )
    return [s.name for s in services]


# --- processes -----------------------------------------------------------------------------------------------


class Workers:
    """The configuration's Celery workers, with the probe loaded into them."""

    def __init__(self, config: str):
        self.config = config
        self.procs: list[subprocess.Popen] = []
        self.names: list[str] = []
        if config == "hosts":
            self.hosts = HOSTS
            plan = [(2, host) for host in HOSTS]
        else:
            self.hosts = ("",)
            plan = [(int(config), "")]
        for concurrency, host in plan:
            self._start(concurrency, host)
        deadline = time.monotonic() + 90
        while len(app.control.ping(destination=self.names, timeout=0.5)) < len(self.names):
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers {self.names} did not start; see {VAR}")

    def _start(self, concurrency: int, host: str) -> None:
        name = f"fleet-{self.config}-{host or 'local'}-{os.getpid()}@localhost"
        env = dict(os.environ, BENCH_PROBE_DIR=str(PROBES))
        if host:
            var = VAR / "hosts" / host
            env.update(GRACE_HOST=host, GRACE_VAR_DIR=str(var), GRACE_ALLOWED_ROOTS=str(managed_root(host)))
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "grace_site",
            "worker",
            "-Q",
            QUEUES,
            "-c",
            str(concurrency),
            "-n",
            name,
            "--without-mingle",
            "--without-gossip",
            "-l",
            "warning",
            "--include",
            "bench.worker_probe",
        ]
        log = open(VAR / f"worker-{self.config}-{host or 'local'}.log", "ab")  # noqa: SIM115 - lives with the worker
        self.procs.append(
            subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )
        self.names.append(name)

    def mains(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def stop(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def service_pids() -> dict[str, int]:
    """The postmaster and redis-server of this run (scripts/with-services.sh)."""
    found: dict[str, int] = {}
    tmp = os.environ.get("GRACE_SERVICES_TMP", "")
    pidfile = Path(tmp) / "pg" / "data" / "postmaster.pid"
    if pidfile.exists():
        found["postgres"] = int(pidfile.read_text().split()[0])
    port = (os.environ.get("REDIS_URL", "").rsplit(":", 1)[-1].split("/")[0]) or "6379"
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "redis-server" and any(port in part for part in proc.info["cmdline"] or []):
            found["redis"] = proc.pid
    return found


def cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of a process itself, and of its descendants: the live ones and those it has reaped (a
    database backend that ended during a burst still counts)."""
    try:
        process = psutil.Process(pid)
        times = process.cpu_times()
        descendants = times.children_user + times.children_system
        for child in process.children(recursive=True):
            try:
                child_times = child.cpu_times()
            except psutil.Error:
                continue
            descendants += child_times.user + child_times.system
    except psutil.Error:
        return 0.0, 0.0
    return times.user + times.system, descendants


class CpuMeter:
    """CPU seconds used by each group of processes during a burst (and by the whole machine)."""

    def __init__(self, workers: Workers):
        self.workers = workers

    def _read(self) -> dict[str, float]:
        mains = [cpu(pid) for pid in self.workers.mains()]
        services = {name: cpu(pid) for name, pid in service_pids().items()}
        return {
            "worker_pool": sum(descendants for _, descendants in mains),
            "worker_main": sum(own for own, _ in mains),
            "postgres": sum(services.get("postgres", (0.0, 0.0))),
            "redis": services.get("redis", (0.0, 0.0))[0],
            "bench": cpu(os.getpid())[0],
        }

    def __enter__(self):
        self.before = self._read()
        self.machine = psutil.cpu_times()
        self.load = os.getloadavg()
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc):
        after = self._read()
        self.used = {name: after[name] - self.before[name] for name in after}
        machine = psutil.cpu_times()
        busy = lambda t: t.user + t.system + t.nice + getattr(t, "irq", 0) + getattr(t, "softirq", 0)  # noqa: E731
        self.used["machine"] = busy(machine) - busy(self.machine)
        self.load_after = os.getloadavg()
        self.window = time.monotonic() - self.started


# --- bursts -------------------------------------------------------------------------------------------------


def pipeline_burst(names: list[str]) -> dict:
    marker = f"{time.time():.6f}"
    signals = [
        Signal(source="api", title=f"bench fleet probe {marker} {name}", service=name, severity="warning")
        for name in names
    ]
    t0 = time.time()
    incident_ids = []
    for start in range(0, len(signals), BATCH):
        incident_ids += [r.incident.pk for r in ingest_many(signals[start : start + BATCH])]
    ingested = time.time()
    deadline = time.monotonic() + TIMEOUT
    runs = HealRun.objects.filter(incident_id__in=incident_ids)
    while True:
        connection.close_if_unusable_or_obsolete()
        done = runs.filter(finished_at__isnull=False).count()
        if done >= len(incident_ids):
            break
        if time.monotonic() > deadline:
            stuck = list(runs.exclude(finished_at__isnull=False).values_list("pk", "status")[:10])
            raise RuntimeError(f"{len(incident_ids) - done} runs unfinished after {TIMEOUT} s, e.g. {stuck}")
        time.sleep(0.2)
    failed = list(runs.exclude(status="SUCCEEDED").values_list("pk", "status", "status_reason")[:5])
    if failed:
        raise RuntimeError(f"runs that did not succeed: {failed}")
    last = RunEvent.objects.filter(run__in=runs, to_status="SUCCEEDED").order_by("-at").values_list("at", flat=True)
    finished = last.first().timestamp()
    # The outcomes are recorded before the next burst starts (their work belongs to this one).
    while Incident.objects.filter(pk__in=incident_ids).exclude(status="resolved").exists():
        if time.monotonic() > deadline:
            raise RuntimeError("incidents not resolved after their runs succeeded")
        time.sleep(0.2)
    settled = time.time()
    return {
        "seconds": finished - t0,
        "ingest_seconds": ingested - t0,
        "settled_seconds": settled - t0,
        "t0": t0,
        "t1": settled,
        "runs": runs,
    }


def chain_burst(count: int) -> dict:
    t0 = time.time()
    results = [chain(*(ping.si() for _ in range(6))).apply_async() for _ in range(count)]
    client = app.backend.client
    keys = [app.backend.get_key_for_task(r.id) for r in results]
    deadline = time.monotonic() + TIMEOUT
    while True:
        metas = client.mget(keys)
        if all(metas):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{sum(1 for m in metas if not m)} chains unfinished after {TIMEOUT} s")
        time.sleep(0.2)
    done = [app.backend.decode_result(m) for m in metas]
    bad = [m for m in done if m["status"] != "SUCCESS"]
    if bad:
        raise RuntimeError(f"chains that failed: {bad[:3]}")
    finished = max(_epoch(m["date_done"]) for m in done)
    settled = time.time()
    return {"seconds": finished - t0, "t0": t0, "t1": settled}


def _epoch(value) -> float:
    from datetime import datetime

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.timestamp()


def stage_gaps(runs) -> dict[str, float]:
    gaps: dict[str, list[float]] = {}
    created = dict(runs.values_list("pk", "incident__created_at"))
    previous: dict[int, object] = {}
    for run_id, status, at in (
        RunEvent.objects.filter(run__in=runs)
        .exclude(to_status="")
        .order_by("run_id", "at", "pk")
        .values_list("run_id", "to_status", "at")
    ):
        before = previous.get(run_id, created[run_id])
        gaps.setdefault(status, []).append((at - before).total_seconds() * 1000)
        previous[run_id] = at
    return {status: round(pct(values, 0.5), 1) for status, values in gaps.items()}


def probe_records(t0: float, t1: float) -> list[dict]:
    records = []
    for path in PROBES.glob("probe-*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if t0 <= record["at"] <= t1:
                records.append(record)
    return records


def task_table(records: list[dict], per: int) -> dict:
    """Per task name: how many per run (or chain), and mean milliseconds of wall, CPU, database and broker."""
    table: dict[str, dict] = {}
    for name in sorted({r["task"] for r in records}):
        rows = [r for r in records if r["task"] == name]

        def mean(key: str, rows: list[dict] = rows) -> float:
            return round(statistics.mean(r[key] for r in rows) * 1000, 2)

        table[name] = {
            "per_unit": round(len(rows) / per, 2),
            "wall_ms": mean("wall_s"),
            "cpu_ms": mean("cpu_s"),
            "db_ms": mean("db_s"),
            "commit_ms": mean("commit_s"),
            "publish_ms": mean("publish_s"),
            "queries": round(statistics.mean(r["queries"] for r in rows), 1),
            "commits": round(statistics.mean(r["commits"] for r in rows), 1),
        }
    total = lambda key: round(sum(r[key] for r in records) / per * 1000, 2)  # noqa: E731
    table["per unit, all tasks"] = {
        "wall_ms": total("wall_s"),
        "cpu_ms": total("cpu_s"),
        "db_ms": total("db_s"),
        "commit_ms": total("commit_s"),
        "publish_ms": total("publish_s"),
    }
    return table


def measure(kind: str, workers: Workers, label: str, names: list[str] | None = None) -> dict:
    with CpuMeter(workers) as cpu:
        burst = pipeline_burst(names) if kind == "pipeline" else chain_burst(BURST)
    per = BURST
    result = {
        "per_s": round(BURST / burst["seconds"], 1),
        "seconds": round(burst["seconds"], 2),
        "cpu_s_per_unit_ms": {k: round(v / per * 1000, 2) for k, v in cpu.used.items()},
        "load_before_after": [round(cpu.load[0], 2), round(cpu.load_after[0], 2)],
        # Cores busy during the burst (every process on the machine, other users' too; 2 = all of this machine).
        "busy_cores": round(cpu.used["machine"] / cpu.window, 2),
        "grace_cores": round(sum(v for k, v in cpu.used.items() if k != "machine") / cpu.window, 2),
        "tasks": task_table(probe_records(burst["t0"], burst["t1"]), per),
    }
    if kind == "pipeline":
        result.update(
            ingest_seconds=round(burst["ingest_seconds"], 2),
            settled_seconds=round(burst["settled_seconds"], 2),
            stage_gap_p50_ms=stage_gaps(burst["runs"]),
        )
    print(
        f"  {label} {kind}: {result['per_s']} /s ({result['seconds']} s), load {result['load_before_after']}",
        flush=True,
    )
    return result


def warm_up(workers: Workers, config: str) -> None:
    names = inventory(f"{config}-warm", WARMUP, workers.hosts)
    pipeline_burst(names)
    chain_burst(WARMUP)


def main() -> None:
    setup()
    if VAR.exists():
        shutil.rmtree(VAR)
    PROBES.mkdir(parents=True)
    with app.connection_for_write() as conn:
        dropped = sum(conn.default_channel.queue_purge(q.name) or 0 for q in app.conf.task_queues)
    if dropped:
        print(f"dropped {dropped} queued task(s) left by earlier work on this broker")
    results: dict = {
        "burst": BURST,
        "rounds": ROUNDS,
        "cpus": os.cpu_count(),
        "database": connection.vendor,
        "configs": {},
    }
    for config in CONFIGS:
        hosts = HOSTS if config == "hosts" else ("",)
        bursts = [inventory(f"{config}-r{r}", BURST, hosts) for r in range(ROUNDS)]
        print(f"{config}: {ROUNDS} rounds of {BURST}", flush=True)
        workers = Workers(config)
        try:
            warm_up(workers, config)
            rounds = []
            for r in range(ROUNDS):
                order = ("chain", "pipeline") if r % 2 == 0 else ("pipeline", "chain")
                measured = {kind: measure(kind, workers, f"round {r + 1}", bursts[r]) for kind in order}
                rounds.append(measured)
        finally:
            workers.stop()
        runs = [r["pipeline"]["per_s"] for r in rounds]
        chains = [r["chain"]["per_s"] for r in rounds]
        results["configs"][config] = {
            "processes": 4 if config == "hosts" else int(config),
            "pipeline_runs_per_s": round(statistics.median(runs), 1),
            "chains_per_s": round(statistics.median(chains), 1),
            "ratio": round(statistics.median(runs) / statistics.median(chains), 2),
            "rounds": rounds,
        }
    summary = {c: {k: v for k, v in r.items() if k != "rounds"} for c, r in results["configs"].items()}
    print(json.dumps(summary, indent=2))
    out = ROOT / "var" / "bench" / "fleet.json"  # beside the checkout: the services' directory goes away
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"details (per task, CPU per process group, stage gaps): {out}")


if __name__ == "__main__":
    main()
