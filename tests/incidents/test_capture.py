"""Exception capture: middleware and logging handler turn a monitored app's failures into incidents."""

import logging
import socket
import time

import pytest

from approvals import tokens
from approvals.models import AuditEvent
from incidents import capture
from incidents.models import Incident
from tests.support import inventory
from tests.support.runs import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

MIDDLEWARE = "incidents.capture.ExceptionCaptureMiddleware"


@pytest.fixture
def monitored(settings, default_rules):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, MIDDLEWARE]
    settings.ROOT_URLCONF = "tests.incidents.capture_urls"
    settings.GRACE_CAPTURE_URL = ""
    settings.GRACE_CAPTURE_SERVICE = "shop"
    handler = capture.IncidentLogHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    yield settings
    root.removeHandler(handler)
    assert capture.deliverer.join(15)


@pytest.fixture
def browser(client):
    client.raise_request_exception = False
    return client


def test_an_unhandled_exception_becomes_one_incident_per_code_path(monitored, browser):
    assert browser.get("/checkout/1/").status_code == 500
    assert browser.get("/checkout/2/").status_code == 500
    assert capture.deliverer.join(15)

    incident = Incident.objects.get()
    assert incident.source == "exception" and incident.service == "shop"
    assert incident.occurrences == 2  # the message differs, the frames do not
    assert incident.title.startswith("tests.incidents.capture_urls.PaymentDeclined: card declined")
    assert incident.labels["exception"] == "tests.incidents.capture_urls.PaymentDeclined"
    assert incident.labels["path"] == "/checkout/1/"
    assert "in charge" in incident.message


def test_error_log_records_become_incidents_keyed_by_their_template(monitored, browser):
    browser.get("/log/1/")
    browser.get("/log/2/")
    assert capture.deliverer.join(15)

    incident = Incident.objects.get()
    assert incident.title == "shop.payments: payment for order 1 failed"
    assert incident.labels == {"logger": "shop.payments", "level": "ERROR"}
    assert incident.occurrences == 2


def test_the_same_exception_seen_by_middleware_and_handler_is_captured_once(monitored, browser):
    # Django also logs the unhandled exception to "django.request" at ERROR, which the handler sees.
    browser.get("/checkout/1/")
    assert capture.deliverer.join(15)

    assert Incident.objects.get().occurrences == 1


def test_another_project_delivers_over_http_with_its_channel_token(monitored, browser, live_server, celery_worker):
    _, token = inventory.channel("shop-exceptions", source="exception")
    monitored.GRACE_CAPTURE_URL = f"{live_server.url}/api/incidents/"
    monitored.GRACE_CAPTURE_TOKEN = token

    browser.get("/checkout/1/")
    assert capture.deliverer.join(15)

    # Acknowledged once stored (202): the intake consumer on the worker makes the incident.
    incident = wait_for(lambda: Incident.objects.first(), fresh_reads=True, what="the captured incident")
    assert (incident.source, incident.service, incident.channel.name) == ("exception", "shop", "shop-exceptions")
    assert incident.labels["exception"] == "tests.incidents.capture_urls.PaymentDeclined"
    # It came through the API, authenticated as the channel.
    created = AuditEvent.objects.get(action="incident.created", object_id=str(incident.pk))
    assert created.actor == "channel:shop-exceptions"


def test_a_user_api_token_delivers_as_that_user_with_the_api_source(
    monitored, browser, live_server, intake_user, celery_worker
):
    monitored.GRACE_CAPTURE_URL = f"{live_server.url}/api/incidents/"
    monitored.GRACE_CAPTURE_TOKEN = tokens.issue(intake_user, name="capture")[1]

    browser.get("/checkout/1/")
    assert capture.deliverer.join(15)

    incident = wait_for(lambda: Incident.objects.first(), fresh_reads=True, what="the captured incident")
    assert (incident.source, incident.raised_by) == ("api", intake_user)  # a user is not a capture channel


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/api/incidents/"
    sock.close()


def test_a_slow_or_failing_grace_never_blocks_the_request_nor_recurses(monitored, browser, silent_server):
    monitored.GRACE_CAPTURE_URL = silent_server
    monitored.GRACE_CAPTURE_TIMEOUT = 3.0
    failed_before, delivered_before = capture.deliverer.failed, capture.deliverer.delivered

    started = time.monotonic()
    assert browser.get("/checkout/1/").status_code == 500
    elapsed = time.monotonic() - started

    assert elapsed < 2.5  # the request did not wait for the 3 s delivery timeout
    assert capture.deliverer.join(15)
    # Exactly one failed delivery; the warning it logged was not captured in turn.
    assert capture.deliverer.failed == failed_before + 1
    assert capture.deliverer.delivered == delivered_before
    assert not Incident.objects.exists()


def test_exception_fingerprints_ignore_line_numbers_but_not_code_paths():
    def fail_here():
        raise KeyError("a")

    def fail_there():
        raise KeyError("a")

    caught = []
    for func in (fail_here, fail_here, fail_there):
        try:
            func()
        except KeyError as exc:
            caught.append(capture.exception_fingerprint(exc))

    assert caught[0] == caught[1] != caught[2]
