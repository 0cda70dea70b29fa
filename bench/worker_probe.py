"""Benchmark-only probe, loaded into a benchmark's workers with ``--include bench.worker_probe``.

For every task a pool process runs, it appends one JSON line to ``$BENCH_PROBE_DIR/probe-<pid>.jsonl``:
the task's name, when it started (epoch seconds), its wall and CPU time, and how much of the wall time went
to the database (statements, and commits, which wait for the WAL to reach the disk) and to publishing
messages to the broker. It only measures: nothing it does changes what a task does. Without
``BENCH_PROBE_DIR`` it does nothing.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from celery import signals

DIRECTORY = os.environ.get("BENCH_PROBE_DIR", "")
_now = {"db_s": 0.0, "queries": 0, "commit_s": 0.0, "commits": 0, "publish_s": 0.0, "publishes": 0}
_task: dict = {}
_publish_started: list[float] = []
_out = None


def _database_time(execute, sql, params, many, context):
    t0 = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        _now["db_s"] += time.perf_counter() - t0
        _now["queries"] += 1


def _wrap_commit() -> None:
    from django.db.backends.base.base import BaseDatabaseWrapper

    if getattr(BaseDatabaseWrapper._commit, "_probed", False):
        return
    original = BaseDatabaseWrapper._commit

    def _commit(self):
        t0 = time.perf_counter()
        try:
            return original(self)
        finally:
            _now["commit_s"] += time.perf_counter() - t0
            _now["commits"] += 1

    _commit._probed = True
    BaseDatabaseWrapper._commit = _commit


@signals.worker_process_init.connect
def _start(**kwargs) -> None:
    global _out
    if not DIRECTORY:
        return
    from django.db import connections

    connections["default"].execute_wrappers.append(_database_time)
    _wrap_commit()
    Path(DIRECTORY).mkdir(parents=True, exist_ok=True)
    _out = open(Path(DIRECTORY) / f"probe-{os.getpid()}.jsonl", "a", buffering=1)  # noqa: SIM115 - one per process


@signals.task_prerun.connect
def _prerun(task=None, **kwargs) -> None:
    if _out is None:
        return
    for key in _now:
        _now[key] = 0 if isinstance(_now[key], int) else 0.0
    _task.update(name=task.name, at=time.time(), t0=time.perf_counter(), cpu0=time.process_time())


@signals.task_postrun.connect
def _postrun(task=None, **kwargs) -> None:
    if _out is None or not _task:
        return
    record = {
        "task": _task["name"],
        "at": _task["at"],
        "wall_s": time.perf_counter() - _task["t0"],
        "cpu_s": time.process_time() - _task["cpu0"],
        **_now,
    }
    _out.write(json.dumps(record) + "\n")
    _task.clear()


@signals.before_task_publish.connect
def _before_publish(**kwargs) -> None:
    _publish_started.append(time.perf_counter())


@signals.after_task_publish.connect
def _after_publish(**kwargs) -> None:
    if _publish_started:
        _now["publish_s"] += time.perf_counter() - _publish_started.pop()
        _now["publishes"] += 1
