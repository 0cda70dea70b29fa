"""Diagnosis latency per signal with 20 and with 1,000 rules (the compiled, indexed rule set, in-process).

Rule sets (all stored as DiagnosisRule rows and loaded by the engine as in production):

- ``20``: the first 20 shipped default rules;
- ``1000``: every shipped rule plus synthetic rules up to 1,000, 90 % with an exact label (indexed) and
  10 % with only regular expressions (tried for every signal of their source);
- ``1000-regex-only``: 1,000 rules with no exact label at all (the engine's worst case), for comparison.

Signals: a fixed mix of shipped-alert names, synthetic names, sweep findings and signals nothing matches.
Baseline in the same run: the same signals against an empty rule set (the engine's fixed cost).
Reported: p50/p99/max in microseconds per signal. Target (reported, not asserted): p99 < 1 ms with 1,000 rules.

Run with ``make bench`` (or ``bash scripts/bench.sh bench/bench_diagnosis.py``).
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grace_site.settings")

import django  # noqa: E402

django.setup()

from bench_ingest import ensure_database  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402

from incidents import defaults, diagnosis  # noqa: E402
from incidents.models import DiagnosisRule  # noqa: E402
from incidents.services import Signal, prepare  # noqa: E402

SIGNALS = int(os.environ.get("BENCH_SIGNALS", "20000"))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def signals(count: int) -> list[Signal]:
    rng = random.Random(7)
    names = ["DatabaseLocked", "HighCPU", "NodeFilesystemAlmostOutOfSpace", "KubePodCrashLooping", "Whatever"]
    made = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            labels = {"alertname": rng.choice(names), "service": "orders-db", "severity": "critical"}
            made.append(Signal(source="alertmanager", title="orders-db alert", labels=labels))
        elif kind == 1:
            labels = {"alertname": f"Synthetic{rng.randrange(1200)}", "service": f"svc-{rng.randrange(50)}"}
            made.append(Signal(source="alertmanager", title=f"synthetic {i}", labels=labels))
        elif kind == 2:
            check = rng.choice(["sqlite_wal", "disk", "memory", "http_latency"])
            made.append(Signal(source="sweep", title="sweep finding", labels={"check": check, "wal_bytes": "99999999"}))
        else:
            made.append(Signal(source="api", title=f"nothing matches this {i}", message="quiet", labels={"x": "y"}))
    return [prepare(signal) for signal in made]


def install(rule_set: str) -> int:
    with transaction.atomic():
        DiagnosisRule.objects.all().delete()
        if rule_set == "empty":
            return 0
        if rule_set == "1000-regex-only":
            DiagnosisRule.objects.bulk_create(
                DiagnosisRule(
                    name=f"regex-{i}",
                    position=i,
                    code="high_cpu",
                    source="alertmanager",
                    label_regex={"alertname": f"^Synthetic{i}$"},
                    title_regex=f"(?i)synthetic {i}\\b",
                )
                for i in range(1000)
            )
            return 1000
        defaults.install()
        shipped = list(DiagnosisRule.objects.order_by("position"))
        if rule_set == "20":
            DiagnosisRule.objects.exclude(pk__in=[rule.pk for rule in shipped[:20]]).delete()
            return 20
        extra = 1000 - len(shipped)
        DiagnosisRule.objects.bulk_create(
            DiagnosisRule(
                name=f"synthetic-{i}",
                position=10_000 + i,
                code="high_cpu",
                **(
                    {"label_equals": {"alertname": f"Synthetic{i}"}}
                    if i % 10
                    else {"source": "alertmanager", "title_regex": f"(?i)^synthetic {i}$"}
                ),
            )
            for i in range(extra)
        )
        return DiagnosisRule.objects.count()


def measure(batch: list[Signal]) -> dict:
    diagnosis.invalidate()
    diagnosis.diagnose(batch[0])  # compile once, as after a rule change
    timings, codes = [], {}
    for signal in batch:
        started = time.perf_counter_ns()
        result = diagnosis.diagnose(signal)
        timings.append((time.perf_counter_ns() - started) / 1000)
        codes[result.code] = codes.get(result.code, 0) + 1
    return {
        "p50_us": round(pct(timings, 0.5), 1),
        "p99_us": round(pct(timings, 0.99), 1),
        "max_us": round(max(timings), 1),
        "unknown_share": round(codes.get("unknown", 0) / len(batch), 3),
    }


def main() -> None:
    ensure_database()
    call_command("migrate", "--noinput", verbosity=0)
    batch = signals(SIGNALS)
    results = {}
    for rule_set in ("empty", "20", "1000", "1000-regex-only"):
        count = install(rule_set)
        started = time.perf_counter()
        diagnosis.invalidate()
        diagnosis.current_ruleset()
        compile_ms = (time.perf_counter() - started) * 1000
        results[rule_set] = {"rules": count, "compile_ms": round(compile_ms, 1), **measure(batch)}
    print(f"{'rule set':18} {'rules':>6} {'compile ms':>11} {'p50 us':>8} {'p99 us':>8} {'max us':>9}")
    for name, row in results.items():
        timings = f"{row['p50_us']:>8} {row['p99_us']:>8} {row['max_us']:>9}"
        print(f"{name:18} {row['rules']:>6} {row['compile_ms']:>11} {timings}")
    summary = {
        "signals": SIGNALS,
        "database": django.db.connection.vendor,
        "results": results,
        "targets": {"p99_under_1ms_with_1000_rules": results["1000"]["p99_us"] < 1000},
    }
    print(json.dumps(summary["targets"]))
    out = ROOT / "var" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "diagnosis.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
