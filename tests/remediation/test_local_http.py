"""http.probe against a real HTTP server on loopback."""

import socket
import threading
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.conf import settings as django_settings
from rest_framework.exceptions import ValidationError

from remediation.actions import load_all
from remediation.actions.base import ActionRefused

PROBE = load_all().get("http.probe")


class Handler(BaseHTTPRequestHandler):
    release = threading.Event()

    def do_GET(self):  # noqa: N802 - the http.server API
        if self.path == "/slow":
            self.release.wait(30)
        status = 503 if self.path == "/down" else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def server(settings):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    settings.GRACE_PROBE_LOOPBACK_PORTS = [settings.GRACE_PORT, httpd.server_address[1]]
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    Handler.release.set()
    httpd.shutdown()
    httpd.server_close()
    Handler.release.clear()


def test_it_reports_status_and_latency(server):
    facts = PROBE.observe(PROBE.validate({"url": f"{server}/health"}))

    assert facts["status"] == 200
    assert facts["ok"] is True
    assert facts["latency_ms"] > 0
    assert facts["error"] == ""


def test_an_error_status_is_a_fact_not_an_exception(server):
    facts = PROBE.execute(PROBE.validate({"url": f"{server}/down"}))

    assert facts["status"] == 503
    assert facts["ok"] is False


def test_a_refused_connection_is_reported_without_a_status(settings):
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.GRACE_PROBE_LOOPBACK_PORTS = [port]

    facts = PROBE.observe(PROBE.validate({"url": f"http://127.0.0.1:{port}/"}))

    assert facts["status"] is None
    assert facts["ok"] is False
    assert facts["error"]


def test_the_probe_gives_up_after_its_timeout(server):
    facts = PROBE.observe(PROBE.validate({"url": f"{server}/slow", "timeout_seconds": 0.2}))

    assert facts["status"] is None
    assert "timed out" in facts["error"].lower()
    assert facts["latency_ms"] < 5000


@pytest.mark.parametrize("url", ["ftp://example.com/file", "file:///etc/passwd", "not a url"])
def test_only_http_and_https_urls_are_accepted(url):
    with pytest.raises(ValidationError) as exc:
        PROBE.validate({"url": url})

    assert "url" in exc.value.detail


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # a cloud metadata service
        "http://internal-admin.example.com/",
        "http://127.0.0.1@evil.example.com/",  # userinfo that looks like an allowed host
        "http://localhost.evil.example.com/",
        "http://[fe80::1]/",
        "http://169.254.169.254\\@localhost/",  # parsers disagree on the host: refused outright
        "http://2130706433/",  # 127.0.0.1 to the resolver, but not a listed name
    ],
)
def test_hosts_outside_the_allow_list_are_refused_before_any_request(url):
    with pytest.raises(ValidationError) as exc:
        PROBE.validate({"url": url})

    assert "url" in exc.value.detail


def test_credentials_in_a_probe_url_are_refused():
    with pytest.raises(ValidationError) as exc:
        PROBE.validate({"url": "http://admin:secret@localhost/"})

    assert "credentials" in str(exc.value.detail["url"])


def test_the_allow_list_takes_host_patterns(settings, server):
    settings.GRACE_PROBE_ALLOWED_HOSTS = ["*.svc.example.com", "127.0.0.0/8", "status.example.org"]

    assert PROBE.validate({"url": "https://orders.svc.example.com/healthz"})
    assert PROBE.validate({"url": "https://ORDERS.svc.example.com./healthz"})  # case and the root dot
    assert PROBE.validate({"url": "https://status.example.org:8443/"})
    assert PROBE.observe(PROBE.validate({"url": f"{server}/health"}))["status"] == 200
    for url in [
        "https://svc.example.com.attacker.net/",
        "https://evilsvc.example.com/",
        "http://127.0.0.attacker.net/",  # a name, not an address in the network
        "http://localhost/",  # no longer listed
    ]:
        with pytest.raises(ValidationError):
            PROBE.validate({"url": url})


@pytest.fixture
def listener():
    """A TCP listener on loopback standing in for Redis: any connection attempt lands in its backlog."""
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock


def _contacted(sock: socket.socket) -> bool:
    try:
        sock.accept()[0].close()
    except BlockingIOError:
        return False
    return True


def test_by_default_only_grace_own_port_is_reachable_on_loopback():
    assert django_settings.GRACE_PROBE_LOOPBACK_PORTS == [django_settings.GRACE_PORT]
    assert PROBE.validate({"url": f"http://127.0.0.1:{django_settings.GRACE_PORT}/api/health/"})
    assert PROBE.validate({"url": f"http://localhost:{django_settings.GRACE_PORT}/api/health/"})


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_a_probe_of_redis_on_loopback_is_refused_before_any_connection(listener, host):
    redis_port = int(django_settings.REDIS_URL.rsplit(":", 1)[1].split("/")[0])

    for port in (redis_port, listener.getsockname()[1]):
        with pytest.raises(ValidationError) as exc:
            PROBE.validate({"url": f"http://{host}:{port}/"})
        assert "GRACE_PROBE_LOOPBACK_PORTS" in str(exc.value.detail["url"])

    assert not _contacted(listener)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1", "2130706433", "0.0.0.0", "localhost"])  # noqa: S104
def test_loopback_ports_are_checked_again_on_the_resolved_address_before_connecting(settings, listener, host):
    settings.GRACE_PROBE_ALLOWED_HOSTS = ["*"]  # the host list lets everything through: the port rule holds
    url = f"http://{host}:{listener.getsockname()[1]}/"

    with pytest.raises(ActionRefused, match="GRACE_PROBE_LOOPBACK_PORTS"):
        PROBE.observe({"url": url})  # parameters that skipped validation are refused all the same

    assert not _contacted(listener)
    settings.GRACE_PROBE_LOOPBACK_PORTS = [listener.getsockname()[1]]
    assert PROBE.observe({"url": url, "timeout_seconds": 0.3})["status"] is None  # allowed: it connects
    assert _contacted(listener)
