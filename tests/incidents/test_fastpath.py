"""The light intake path in front of Django: the common case answered 202 without the middleware stack, every
other request handed to Django untouched, the trust boundary and limits kept."""

from __future__ import annotations

import copy
import io
import json

import pytest
import requests
from django.core.wsgi import get_wsgi_application
from hypothesis import example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from incidents import bodies, fastpath
from incidents.api.serializers import AlertmanagerWebhookSerializer, IncidentCreateSerializer
from incidents.models import Delivery, Incident
from tests.incidents.conftest import ALERTMANAGER_BODY, WEBHOOK_TOKEN, alert, alertmanager_body
from tests.support import inventory
from tests.support.processes import start_web

HOOK = "/api/webhooks/alertmanager/"


class Recorder:
    """Django's WSGI app, counting the requests handed to it."""

    def __init__(self):
        self.django = get_wsgi_application()
        self.calls = 0

    def __call__(self, environ, start_response):
        self.calls += 1
        return self.django(environ, start_response)


@pytest.fixture
def app():
    recorder = Recorder()
    return fastpath.IntakeApp(recorder), recorder


def call(app, path: str, body, *, token: str = WEBHOOK_TOKEN, scheme: str = "Bearer", query: str = "", **extra):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "HTTP_HOST": "127.0.0.1:8000",
        "REMOTE_ADDR": "10.1.2.3",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(raw)),
        "HTTP_AUTHORIZATION": f"{scheme} {token}",
        "wsgi.input": io.BytesIO(raw),
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        **extra,
    }
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"], seen["headers"] = int(status.split()[0]), dict(headers)

    content = b"".join(app(environ, start_response))
    is_json = seen["headers"].get("Content-Type", "").startswith("application/json")
    return seen["status"], seen["headers"], json.loads(content) if is_json else content


# --- the fast check never accepts what the serializers refuse -------------------------------------------


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)
ALERT_KEYS = ["status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"]
TOP_KEYS = [
    "version",
    "status",
    "receiver",
    "alerts",
    "groupLabels",
    "commonLabels",
    "commonAnnotations",
    "externalURL",
    "groupKey",
    "truncatedAlerts",
]
STRINGS = st.sampled_from(
    [
        "",
        " ",
        " padded ",
        "fp-1\n",
        "4",
        "firing",
        "resolved",
        "critical",
        "CRITICAL",
        "apocalyptic",
        "yesterday",
        "2026-11-25T10:14:11Z",
        "2026-11-25T10:14:11+05:30",
        "2026-13-45T99:00:00Z",
        "x" * 70,
        "a" * 2001,
    ]
)


@st.composite
def mutated_webhook_bodies(draw):
    body = copy.deepcopy(ALERTMANAGER_BODY)
    body["alerts"] = [copy.deepcopy(body["alerts"][0]) for _ in range(draw(st.integers(0, 3)))]
    for _ in range(draw(st.integers(1, 4))):
        target, keys = body, TOP_KEYS
        alerts = (
            [item for item in body.get("alerts") or [] if isinstance(item, dict)]
            if isinstance(body.get("alerts"), list)
            else []
        )
        if alerts and draw(st.booleans()):
            target, keys = draw(st.sampled_from(alerts)), ALERT_KEYS
            if isinstance(target.get("labels"), dict) and draw(st.booleans()):
                target, keys = target["labels"], ["alertname", "severity", "service", "", "x" * 300]
        key = draw(st.sampled_from(keys))
        if draw(st.integers(0, 4)) == 0:
            target.pop(key, None)
        else:
            target[key] = draw(STRINGS | JSON_VALUES)
    return body


@hypothesis_settings(max_examples=600, deadline=None, derandomize=True)
@given(mutated_webhook_bodies())
def test_the_fast_check_accepts_only_webhook_bodies_the_serializer_accepts_and_reads_them_alike(body):
    try:
        validated = bodies.validate_alertmanager(body)
    except bodies.NotSure:
        return
    serializer = AlertmanagerWebhookSerializer(data=body)
    assert serializer.is_valid(), serializer.errors
    assert validated == _plain(serializer.validated_data)


@hypothesis_settings(max_examples=600, deadline=None, derandomize=True)
@given(
    st.dictionaries(
        st.sampled_from(
            ["title", "service", "environment", "message", "severity", "source", "labels", "fingerprint", "extra"]
        ),
        STRINGS | JSON_VALUES | st.just({"alertname": "X"}),
        max_size=6,
    )
)
@example({"title": " t ", "fingerprint": "fp-1\n"})  # the serializer strips the key before matching it
@example({"title": "t", "message": " kept as sent ", "service": " s "})
def test_the_fast_check_accepts_only_signals_the_serializer_accepts_and_reads_them_alike(body):
    try:
        validated = bodies.validate_incident(body)
    except bodies.NotSure:
        return
    serializer = IncidentCreateSerializer(data=body)
    assert serializer.is_valid(), serializer.errors
    assert validated == _plain(serializer.validated_data)


def _plain(value):
    """Serializer output (ordered dicts, lists) as plain dicts and lists."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def test_the_fast_check_takes_the_common_bodies():
    assert bodies.check_alertmanager(ALERTMANAGER_BODY) == 1
    assert bodies.check_alertmanager(alertmanager_body(*[alert(f"A{i}") for i in range(100)])) == 100
    assert bodies.check_incident({"title": "Checkout slow", "service": "checkout", "labels": {"a": "b"}}) == 1


# --- the light path in process (a real database, Redis and Django behind it) --------------------------------


pytestmark_db = pytest.mark.django_db(transaction=True)


@pytestmark_db
def test_a_channel_token_post_is_stored_and_answered_202_without_django(app, default_rules):
    light, django = app
    api, token = inventory.channel("ci-client")

    status, headers, body = call(light, "/api/incidents/", {"title": "x", "source": "sweep"}, token=token)
    hook_status, _, hook_body = call(light, HOOK, ALERTMANAGER_BODY)

    assert (status, hook_status, django.calls) == (202, 202, 0)
    delivery = Delivery.objects.get(pk=body["delivery"])
    assert body == {"delivery": delivery.pk, "status": "pending", "alerts": 1, "url": f"/api/deliveries/{delivery.pk}/"}
    assert headers["Location"] == body["url"]
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
    assert (delivery.kind, delivery.channel, delivery.raised_by, delivery.status) == ("incident", api, None, "pending")
    assert json.loads(delivery.body) == {"title": "x", "source": "sweep"}
    webhook = Delivery.objects.get(pk=hook_body["delivery"])
    assert (webhook.kind, webhook.channel.name, webhook.alerts) == ("alertmanager", "alertmanager", 1)
    assert not Incident.objects.exists()


@pytestmark_db
def test_a_token_of_the_other_endpoints_kind_is_handed_to_django_and_refused(app):
    light, django = app
    _, api_token = inventory.channel("ci-client")

    status, headers, _ = call(light, HOOK, ALERTMANAGER_BODY, token=api_token)

    assert (status, django.calls) == (401, 1)
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert not Delivery.objects.exists()


@pytestmark_db
def test_wrong_tokens_are_counted_by_django_and_lock_out_the_fast_path_too(app, settings):
    light, django = app
    settings.GRACE_AUTH_FAILURE_LIMIT = "3 per 10 minutes"

    wrong = [call(light, HOOK, ALERTMANAGER_BODY, token=f"wrong-token-{i}")[0] for i in range(4)]
    right, headers, _ = call(light, HOOK, ALERTMANAGER_BODY)

    assert wrong == [401, 401, 401, 429]
    assert (right, django.calls) == (429, 5)  # locked out: the right token too, answered by Django
    assert headers["Retry-After"]
    assert not Delivery.objects.exists()


@pytestmark_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        (alertmanager_body(alert(severity="apocalyptic")), "alerts"),
        ({**ALERTMANAGER_BODY, "version": "3"}, "version"),
        (b'{"version": "4", "alerts": [', "detail"),
        (b'{"version": "4", "x": "\\u0000"}', "x"),
    ],
)
def test_bad_bodies_get_djangos_400_and_nothing_is_stored(app, body, field):
    light, django = app

    status, _, answer = call(light, HOOK, body)

    assert (status, django.calls) == (400, 1)
    assert field in answer
    assert not Delivery.objects.exists()


@pytestmark_db
@pytest.mark.parametrize(
    "extra",
    [
        {"query": "wait=true"},
        {"HTTP_GRACE_WAIT": "true"},
        {"scheme": "Token"},
        {"CONTENT_TYPE": "text/plain"},
        {"HTTP_HOST": "evil.example.com"},
    ],
)
def test_other_requests_are_djangos(app, default_rules, extra):
    light, django = app

    status, _, _ = call(light, HOOK, ALERTMANAGER_BODY, **extra)

    assert django.calls == 1
    assert status != 202


@pytestmark_db
def test_the_synchronous_mode_goes_through_django(app, default_rules):
    light, django = app

    status, headers, answer = call(light, HOOK, ALERTMANAGER_BODY, query="wait=true")

    assert (status, django.calls) == (200, 1)
    assert answer["incidents"] == [Incident.objects.get().pk]
    assert Delivery.objects.get(pk=int(headers["Grace-Delivery"])).status == "done"


@pytestmark_db
@pytest.mark.parametrize(
    ("length", "answer"), [("\u00b2", 400), ("+10", 400), (" 10", 400), ("-1", 400), ("", 400), ("9" * 5000, 413)]
)
def test_a_content_length_that_is_not_a_plain_number_is_djangos(app, length, answer):
    light, django = app

    status, _, _ = call(light, HOOK, ALERTMANAGER_BODY, CONTENT_LENGTH=length)

    assert (status, django.calls) == (answer, 1)
    assert not Delivery.objects.exists()


@pytestmark_db
def test_an_oversized_body_is_djangos_413(app, settings):
    light, django = app
    settings.GRACE_API_MAX_BODY_BYTES = 1024

    status, _, _ = call(light, HOOK, alertmanager_body(*[alert(f"A{i}") for i in range(20)]))

    assert (status, django.calls) == (413, 1)


@pytestmark_db
def test_past_the_backlog_bound_the_fast_path_answers_429(app, settings):
    from incidents import channels

    light, django = app
    channels.ensure_builtin()  # migrations create it; the test flush removed it
    settings.GRACE_INTAKE_MAX_BACKLOG = 1
    settings.GRACE_INTAKE_BACKLOG_RECHECK_SECONDS = 0

    statuses = [call(light, HOOK, ALERTMANAGER_BODY) for _ in range(3)]

    assert [s for s, _, _ in statuses] == [202, 202, 429]
    assert statuses[2][1]["Retry-After"] == str(settings.GRACE_INTAKE_RETRY_AFTER)
    assert django.calls == 0
    assert Delivery.objects.count() == 2


@pytestmark_db
def test_a_disabled_channel_is_refused_at_once(app):
    light, django = app
    api, token = inventory.channel("ci-client")
    assert call(light, "/api/incidents/", {"title": "x"}, token=token)[0] == 202
    api.enabled = False
    api.save()

    status, _, _ = call(light, "/api/incidents/", {"title": "x"}, token=token)

    assert (status, django.calls) == (401, 1)
    assert Delivery.objects.count() == 1


# --- mounted in front of Django by grace_site.wsgi, served by GRACE's web server (grace_site.serve) ---------------


@pytestmark_db
def test_the_web_server_serves_the_light_path_and_the_worker_applies_it(
    tmp_path, default_rules, celery_worker, settings
):
    web, base = start_web(tmp_path, GRACE_WEBHOOK_TOKEN=WEBHOOK_TOKEN)
    try:
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {WEBHOOK_TOKEN}"
            answers = [session.post(f"{base}{HOOK}", json=ALERTMANAGER_BODY, timeout=30) for _ in range(20)]
            synchronous = session.post(f"{base}{HOOK}?wait=true", json=ALERTMANAGER_BODY, timeout=30)
            refused = session.post(f"{base}{HOOK}", json={"version": "4"}, timeout=30)
        oversized = _answer_to_a_body_declared_but_not_sent(base, settings.GRACE_API_MAX_BODY_BYTES + 1)
    finally:
        web.stop()

    assert [a.status_code for a in answers] == [202] * 20, answers[0].text
    assert synchronous.status_code == 200 and refused.status_code == 400
    # The server streams the body to the application, which refuses it by its declared length without waiting
    # for it (a server that buffered the body first would not answer at all here).
    assert oversized.startswith(b"HTTP/1.1 413"), oversized
    from tests.support.runs import wait_for

    wait_for(
        lambda: Incident.objects.filter(occurrences=21).exists(),
        fresh_reads=True,
        what="every delivery applied to one incident",
    )
    assert set(Delivery.objects.values_list("status", flat=True)) == {"done"}


def _answer_to_a_body_declared_but_not_sent(base: str, length: int) -> bytes:
    """The first bytes of the answer to a webhook POST that declares ``length`` bytes of body and sends 10."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(
            f"POST {HOOK} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {WEBHOOK_TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n".encode()
            + b'{"version"'
        )
        return sock.recv(64)


@pytest.mark.django_db(transaction=True)
def test_concurrent_light_path_writes_each_store_their_own_delivery_or_none():
    """On SQLite the request threads of a process store together (one transaction per turn at the writer): every
    request still gets its own committed row, and a token no channel has stores nothing."""
    import threading
    from datetime import UTC, datetime

    from django.db import connection

    _, token = inventory.channel("burst-client")
    barrier = threading.Barrier(24)
    results: dict[int, int | None] = {}

    def post(i: int) -> None:
        try:
            barrier.wait()
            sent = token if i % 4 else "grc_" + "0" * 40  # every fourth one: a token no channel has
            body = json.dumps({"title": f"burst {i}"})
            results[i] = fastpath.store("incident", "api", sent, body, 1, datetime.now(UTC))
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    stored = {i: d for i, d in results.items() if d is not None}
    assert len(results) == 24 and sorted(stored) == [i for i in range(24) if i % 4]
    assert len(set(stored.values())) == 18
    bodies = dict(Delivery.objects.values_list("pk", "body"))
    assert {i: json.loads(bodies[d])["title"] for i, d in stored.items()} == {i: f"burst {i}" for i in stored}
    assert len(bodies) == 18


@pytest.mark.django_db(transaction=True)
def test_a_row_that_fails_in_a_shared_write_fails_only_its_own_request():
    from datetime import UTC, datetime

    from django.db import DatabaseError

    _, token = inventory.channel("shared-client")
    at = datetime.now(UTC)
    good = fastpath._Slot(_params(token, "good", at))
    bad = fastpath._Slot(_params(token, "bad", at, alerts=-1))  # the alerts column takes no negative count
    writes = fastpath.GroupedWrites()

    writes._write([good, bad])

    assert good.done and bad.done
    assert good.error is None and good.delivery_id is not None
    assert isinstance(bad.error, DatabaseError) and bad.delivery_id is None
    assert list(Delivery.objects.values_list("pk", flat=True)) == [good.delivery_id]


def _params(token: str, title: str, at, *, alerts: int = 1) -> list:
    from django.db import connection

    from incidents import channels

    stamp = Delivery._meta.get_field("received_at").get_db_prep_save(at, connection)
    body = json.dumps({"title": title})
    return ["incident", body, alerts, stamp, stamp, "api", channels.digest(token), False, channels.DEFAULT_ALERTMANAGER]
