"""Schema-driven fuzzing of the whole published API (``/api/schema/``) with schemathesis.

Every operation of the schema is called with generated requests, valid and invalid, as an admin (the
Alertmanager webhook with its bearer token), against a database seeded with one object of each kind so
detail routes reach real objects as well as unknown ids. Every answer must be a documented status
(no 5xx) whose body and content type match the schema.

Checks run: no server error, status code, content type, headers and body conform to the schema, and
an operation that needs credentials answers 401 without them. Left out, and why: the checks that an
invalid request is refused and that a valid one is accepted measure how strict GRACE is compared with
what OpenAPI can say (label caps count name plus value bytes, NUL and lone surrogates are refused
anywhere, django-filter ignores an empty filter value by design); tests/test_hostile_input.py covers
those inputs one by one. The stateful phase (links between operations) is not used: the schema
declares no links.

Nothing is excluded from the run. ``/api/health/`` answers its documented 503 here (no worker and
no beat run during the fuzz); its 200 is tested in tests/test_health.py. Benchmark waits are capped at
half a second, so a queued run nobody executes cannot stall the run.

Bounded: Hypothesis is derandomized (a fixed seed, the same cases every run) and each operation gets at
most ``MAX_EXAMPLES`` generated cases per phase; the whole module takes about a minute per backend.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from django.utils import timezone
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from approvals import tokens

MAX_EXAMPLES = 25
WEBHOOK_TOKEN = "fuzz-webhook-token-0123456789"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    ignored_auth,
]

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())


@pytest.fixture
def seeded(admin_user) -> dict[str, int | str]:
    """One object of each kind an id in a path can name, plus the shipped defaults."""
    from approvals import defaults as approval_defaults
    from approvals import services as approvals
    from incidents import defaults as incident_defaults
    from incidents.models import Incident
    from learning import benchmarks
    from learning import defaults as learning_defaults
    from remediation import defaults as remediation_defaults
    from remediation.models import HealRun, Playbook

    for defaults in (approval_defaults, incident_defaults, remediation_defaults, learning_defaults):
        defaults.install()
    now = timezone.now()
    incident = Incident.objects.create(
        fingerprint="fuzz-1",
        source="api",
        service="orders-db",
        title="orders-db WAL is large",
        first_seen=now,
        last_seen=now,
        diagnosis_code="sqlite_wal_bloat",
    )
    playbook = Playbook.objects.order_by("pk").first()
    waiting = HealRun.objects.create(
        incident=incident,
        status="AWAITING_APPROVAL",
        diagnosis_code="sqlite_wal_bloat",
        playbook=playbook,
        target="orders-db",
        family="local",
        plan={"steps": []},
    )
    approval = approvals.open_request(run_id=waiting.pk, plan_hash="0" * 64, tier=2, requested_by_id=None, context={})
    return {
        "/api/incidents/": incident.pk,
        "/api/runs/": waiting.pk,
        "/api/approvals/": approval.pk,
        "/api/playbooks/": playbook.pk,
        "/api/policy-rules/": approvals_first_rule(),
        "/api/audit/": 1,
        "/api/verification/runs/": benchmarks.create_run("smoke").pk,
        "suite": "smoke",
        "token": tokens.issue(admin_user, name="fuzz")[1],
    }


def approvals_first_rule() -> int:
    from approvals.models import PolicyRule

    return PolicyRule.objects.order_by("pk").values_list("pk", flat=True).first()


def aim_at_seeded_objects(case, seeded) -> None:
    """Half the generated ids (the even ones) are replaced by the seeded object's: real objects get fuzzed too."""
    for name, value in (case.path_parameters or {}).items():
        if name == "suite" and isinstance(value, str) and len(value) % 2 == 0:
            case.path_parameters[name] = seeded["suite"]
        elif isinstance(value, int) and value % 2 == 0:
            prefix = next((p for p in seeded if isinstance(p, str) and case.path.startswith(p)), None)
            if prefix is not None:
                case.path_parameters[name] = seeded[prefix]


@schema.parametrize()
@hypothesis_settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@pytest.mark.django_db(transaction=True)
def test_every_operation_answers_within_its_schema(case, seeded, settings):
    settings.GRACE_WEBHOOK_TOKEN = WEBHOOK_TOKEN
    settings.GRACE_BENCH_WAIT_TIMEOUT = 0.5
    # The check for ignored auth sends wrong credentials on every case: the brute-force limiter (tested in
    # tests/test_brute_force.py) would answer 429 instead of 401 after a few.
    settings.GRACE_AUTH_FAILURE_LIMIT = "1000000 per 10 minutes"
    aim_at_seeded_objects(case, seeded)
    if case.path == "/api/webhooks/alertmanager/":
        headers = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
    else:
        headers = {"Authorization": f"Token {seeded['token']}"}
    checks = CHECKS
    if case.path == "/api/health/":
        checks = [check for check in CHECKS if check is not not_a_server_error]

    response = case.call_and_validate(headers=headers, checks=checks)

    if case.path == "/api/health/" and response.status_code == 503:
        assert set(response.json()["failing"]) <= {"worker", "beat"}, response.json()
