"""The input sentinel: ordered rules, regexes, thresholds, compiled once per change."""

import subprocess
import sys

import pytest
from django.core.exceptions import ValidationError

from incidents import defaults, diagnosis
from incidents.choices import KNOWN_DIAGNOSES
from incidents.models import DiagnosisRule
from incidents.services import Signal, prepare
from tests.support.processes import ROOT, process_env

pytestmark = pytest.mark.django_db


def signal(**values) -> Signal:
    return prepare(Signal(**{"source": "alertmanager", "title": "t", **values}))


def test_the_first_enabled_rule_in_position_order_wins():
    DiagnosisRule.objects.create(name="broad", position=20, code="disk_pressure", label_regex={"alertname": "(?i)disk"})
    DiagnosisRule.objects.create(
        name="specific", position=10, code="database_wal_bloat", label_equals={"alertname": "DiskWalGrowth"}
    )
    DiagnosisRule.objects.create(name="off", position=1, code="high_cpu", enabled=False)

    result = diagnosis.diagnose(signal(labels={"alertname": "DiskWalGrowth"}))

    assert result.code == "database_wal_bloat"
    assert result.evidence["rule_name"] == "specific"
    assert result.evidence["matched"] == {"labels": {"alertname": "DiskWalGrowth"}}
    assert diagnosis.diagnose(signal(labels={"alertname": "DiskFull"})).code == "disk_pressure"


def test_every_condition_of_a_rule_must_hold():
    DiagnosisRule.objects.create(
        name="wal",
        code="database_wal_bloat",
        confidence=0.9,
        source="sweep",
        label_equals={"check": "sqlite_wal"},
        title_regex="(?i)wal",
        message_regex="bytes",
        thresholds=[{"field": "labels.wal_bytes", "op": ">=", "value": 1048576}],
    )
    labels = {"check": "sqlite_wal", "wal_bytes": "2000000"}

    hit = diagnosis.diagnose(signal(source="sweep", title="WAL big", message="2000000 bytes", labels=labels))
    assert (hit.code, hit.confidence) == ("database_wal_bloat", 0.9)
    assert hit.evidence["matched"]["thresholds"] == [
        {"field": "labels.wal_bytes", "op": ">=", "value": 1048576.0, "actual": 2000000.0}
    ]
    assert hit.evidence["matched"]["title"] == "WAL"
    small = {**labels, "wal_bytes": "10"}
    assert diagnosis.diagnose(signal(source="sweep", title="WAL", message="bytes", labels=small)).code == "unknown"
    assert diagnosis.diagnose(signal(source="api", title="WAL", message="bytes", labels=labels)).code == "unknown"
    assert diagnosis.diagnose(signal(source="sweep", title="x", message="bytes", labels=labels)).code == "unknown"


def test_thresholds_read_alertmanager_annotations():
    DiagnosisRule.objects.create(
        name="cpu", code="high_cpu", thresholds=[{"field": "annotations.cpu_percent", "op": ">", "value": 90}]
    )

    assert diagnosis.diagnose(signal(raw={"annotations": {"cpu_percent": "97.5"}})).code == "high_cpu"
    assert diagnosis.diagnose(signal(raw={"annotations": {"cpu_percent": "12"}})).code == "unknown"
    assert diagnosis.diagnose(signal(raw={"annotations": {"cpu_percent": "n/a"}})).code == "unknown"


def test_no_match_gives_unknown_with_no_confidence():
    result = diagnosis.diagnose(signal(labels={"alertname": "Whatever"}))

    assert (result.code, result.confidence, result.evidence["rule"]) == ("unknown", 0.0, None)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title_regex", "(unclosed"),
        ("message_regex", "*oops"),
        ("label_regex", {"alertname": "[z-a]"}),
        ("label_equals", {"alertname": 3}),
        ("thresholds", [{"field": "labels.x", "op": "~", "value": 1}]),
        ("thresholds", [{"field": "nowhere.x", "op": ">", "value": 1}]),
        ("thresholds", [{"field": "labels.x", "op": ">", "value": "high"}]),
        ("confidence", 1.5),
        ("code", "Not A Code"),
    ],
)
def test_an_invalid_rule_is_refused_on_save_naming_the_field(field, value):
    with pytest.raises(ValidationError) as excinfo:
        DiagnosisRule.objects.create(**{"name": "bad", "code": "high_cpu", field: value})

    assert field in excinfo.value.message_dict
    assert not DiagnosisRule.objects.exists()


def test_rules_are_compiled_once_per_change_not_per_signal(settings):
    settings.GRACE_DIAGNOSIS_RECHECK_SECONDS = 3600
    rule = DiagnosisRule.objects.create(name="a", code="high_cpu", label_equals={"alertname": "Cpu"})
    diagnosis.invalidate()
    compiled = diagnosis.current_ruleset()

    for _ in range(3):
        diagnosis.diagnose(signal(labels={"alertname": "Cpu"}))
    assert diagnosis.current_ruleset() is compiled

    rule.code = "memory_pressure"
    rule.save()
    settings.GRACE_DIAGNOSIS_RECHECK_SECONDS = 0
    assert diagnosis.current_ruleset() is not compiled
    assert diagnosis.diagnose(signal(labels={"alertname": "Cpu"})).code == "memory_pressure"


@pytest.mark.django_db(transaction=True)
def test_a_rule_changed_by_another_process_is_picked_up():
    DiagnosisRule.objects.create(name="a", code="high_cpu", label_equals={"alertname": "Cpu"})
    assert diagnosis.diagnose(signal(labels={"alertname": "Cpu"})).code == "high_cpu"
    script = (
        "import django; django.setup()\n"
        "from incidents.models import DiagnosisRule\n"
        "rule = DiagnosisRule.objects.get(name='a'); rule.code = 'memory_pressure'; rule.save()\n"
    )

    subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=process_env(DJANGO_SETTINGS_MODULE="grace_site.settings"),
        check=True,
        timeout=60,
    )

    assert diagnosis.diagnose(signal(labels={"alertname": "Cpu"})).code == "memory_pressure"


def test_the_shipped_rules_cover_every_known_diagnosis():
    defaults.install()

    shipped = set(DiagnosisRule.objects.values_list("code", flat=True))

    assert set(KNOWN_DIAGNOSES) <= shipped


@pytest.mark.parametrize(
    ("values", "code"),
    [
        ({"labels": {"alertname": "DatabaseLocked"}}, "database_locked"),
        ({"source": "exception", "message": "OperationalError: database is locked"}, "database_locked"),
        ({"source": "sweep", "labels": {"check": "sqlite_wal"}}, "database_wal_bloat"),
        ({"labels": {"alertname": "NodeFilesystemAlmostOutOfSpace"}}, "disk_pressure"),
        ({"labels": {"alertname": "HighMemoryUsage"}}, "memory_pressure"),
        ({"labels": {"alertname": "HighCPU"}}, "high_cpu"),
        ({"labels": {"alertname": "CheckoutLatencyHigh"}}, "latency_spike"),
        ({"labels": {"alertname": "HighErrorRate"}}, "error_rate_spike"),
        ({"labels": {"alertname": "ServiceDown"}}, "service_down"),
        ({"labels": {"alertname": "CacheCorrupted"}}, "cache_corruption"),
        ({"labels": {"alertname": "KubePodCrashLooping"}}, "pod_crashloop"),
        ({"labels": {"alertname": "ContainerUnhealthy"}}, "container_unhealthy"),
        ({"labels": {"alertname": "AsgCapacityLow"}}, "asg_capacity_low"),
        ({"labels": {"alertname": "RDSInstanceUnavailable"}}, "rds_unavailable"),
        ({"source": "benchmark", "title": "smoke suite regressed"}, "benchmark_regression"),
    ],
)
def test_the_shipped_rules_diagnose_typical_signals(values, code):
    defaults.install()

    assert diagnosis.diagnose(signal(**values)).code == code


def test_the_index_finds_the_right_rule_among_a_thousand():
    DiagnosisRule.objects.bulk_create(
        [
            DiagnosisRule(name=f"r{i}", position=i, code="high_cpu", label_equals={"alertname": f"A{i}"})
            for i in range(999)
        ]
    )
    DiagnosisRule.objects.create(name="last", position=5000, code="disk_pressure", title_regex="disk")

    hit = diagnosis.diagnose(signal(labels={"alertname": "A777"}))
    assert (hit.evidence["rule_name"], hit.evidence["candidates"]) == ("r777", 2)
    assert diagnosis.diagnose(signal(title="disk full", labels={"alertname": "B"})).code == "disk_pressure"
