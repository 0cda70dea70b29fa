"""Record smoke-suite series on this machine, idle and under load, for the regression-detection replay test.

    bash scripts/with-services.sh bash -c 'DATABASE_URL=$GRACE_PG_URL .venv/bin/python bench/record_smoke_series.py'

tests/learning/data holds RECORD_RUNS=120 RECORD_INTERVAL=10, both databases recorded at the same time, each
under its own with-services.sh.

Starts the same processes as bench_smoke.py (a Celery worker, beat and granian), runs the smoke suite
RECORD_RUNS times, RECORD_INTERVAL seconds apart, and for one run out of every fifteen keeps every CPU busy
with spinning processes while the run measures (a "busy minute" on a shared machine; the machine's other
work adds its own noise). Writes tests/learning/data/smoke_series_<database>.json: each metric's
values in run order, and which runs were under load. tests/learning/test_detection.py replays them.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_smoke as smoke  # noqa: E402 - sets up Django and the processes' settings
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from grace_site import serve  # noqa: E402
from grace_site.celery import app as celery_app  # noqa: E402
from learning import benchmarks, defaults  # noqa: E402

RUNS = int(os.environ.get("RECORD_RUNS", "120"))
# Seconds between runs: the scheduled suite runs every 5 minutes, so each run meets the machine's other work at
# another moment; back to back, one burst of someone else's work would land on several runs in a row.
INTERVAL = float(os.environ.get("RECORD_INTERVAL", "20"))
# Runs during which every CPU is kept busy: a busy minute hits one smoke run (they are 5 minutes apart).
LOADED = [(start, 1) for start in range(20, RUNS - 5, 15)]
OUT = smoke.ROOT / "tests" / "learning" / "data"


def _spin() -> None:
    while True:
        pass


def _loaded(i: int) -> bool:
    return any(start <= i < start + length for start, length in LOADED)


def main() -> int:
    # One directory per database: both recordings can run side by side (each under its own with-services.sh).
    log_dir = smoke.ROOT / "var" / "bench" / f"record-{connection.vendor}"
    log_dir.mkdir(parents=True, exist_ok=True)
    smoke._ensure_database()
    call_command("migrate", verbosity=0)
    defaults.install()
    py = sys.executable
    name = f"record-{smoke.PORT}@localhost"
    worker = [
        py,
        "-m",
        "celery",
        "-A",
        "grace_site",
        "worker",
        "-Q",
        "default",
        "-c",
        "2",
        "-n",
        name,
        "--without-mingle",
        "--without-gossip",
        "-l",
        "warning",
    ]
    web = serve.command(port=smoke.PORT, workers=2, threads=4)
    beat = [
        py,
        "-m",
        "celery",
        "-A",
        "grace_site",
        "beat",
        "-l",
        "warning",
        "--pidfile=",
        f"--schedule={log_dir / 'record-beat-schedule'}",
        "--max-interval",
        "1",
    ]
    procs = [smoke.Proc("worker", worker, log_dir), smoke.Proc("beat", beat, log_dir), smoke.Proc("web", web, log_dir)]
    series: dict[str, list[float | None]] = {}
    spinners: list[multiprocessing.Process] = []
    try:
        smoke._wait("the Celery worker", lambda: bool(celery_app.control.ping(timeout=0.5)), procs)
        smoke._wait("the web server, with a healthy /api/health/", smoke._health_ok, procs)
        for _ in range(5):
            benchmarks.run_suite("smoke", trigger="manual")
        for i in range(RUNS):
            if _loaded(i):
                spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(os.cpu_count() or 2)]
                for spinner in spinners:
                    spinner.start()
                time.sleep(0.5)
            run = benchmarks.run_suite("smoke", trigger="manual")
            for spinner in spinners:
                spinner.terminate()
                spinner.join()
            spinners = []
            for metric, value in run.results.values_list("metric", "value"):
                series.setdefault(metric, []).append(value)
            time.sleep(INTERVAL)
    finally:
        for spinner in spinners:
            spinner.terminate()
        for proc in reversed(procs):
            proc.stop()
    OUT.mkdir(parents=True, exist_ok=True)
    document = {
        "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, shared with other test runs",
        "database": connection.vendor,
        "runs": RUNS,
        "loaded_runs": [i for i in range(RUNS) if _loaded(i)],
        "note": f"smoke suite runs {INTERVAL:g} s apart; loaded runs had every CPU kept busy by spinning processes",
        "series": {metric: [None if v is None else round(v, 4) for v in values] for metric, values in series.items()},
    }
    path = OUT / f"smoke_series_{connection.vendor}.json"
    path.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
