"""Failed admin logins, wrong API tokens and wrong webhook tokens are limited per client address and per
account: 429 with Retry-After, the right credential refused too until the window passes, lockouts audited."""

import pytest

from approvals import tokens
from approvals.models import AuditEvent
from tests.support.runs import wait_for

pytestmark = pytest.mark.django_db

WEBHOOK_TOKEN = "a-webhook-token-of-32-characters"
ALERT = {"version": "4", "status": "firing", "receiver": "grace", "groupKey": "g", "alerts": []}


@pytest.fixture(autouse=True)
def _no_lockouts_left(redis_client):
    """Lockouts live in Redis for minutes: none may leak into another test (same loopback address)."""

    def clear():
        for pattern in ("*axes*", "grace:auth*"):
            for key in redis_client.scan_iter(match=pattern):
                redis_client.delete(key)

    clear()
    yield
    clear()


def _login(client, password: str, address: str = "127.0.0.1", username: str = "root"):
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": password, "next": "/admin/"},
        REMOTE_ADDR=address,
    )


def _lockouts(channel: str) -> list[dict]:
    return [e.data for e in AuditEvent.objects.filter(action="auth.locked_out") if e.data["channel"] == channel]


def test_after_25_wrong_admin_passwords_the_right_one_is_refused_until_the_cool_off(client, admin_user, settings):
    answers = [_login(client, f"wrong-{i}").status_code for i in range(25)]

    right = _login(client, "pw-root-123456")

    assert answers[:9] == [200] * 9  # the form again, with its error
    assert set(answers[10:]) == {429}
    assert right.status_code == 429
    assert right["Retry-After"] == str(int(settings.AXES_COOLOFF_TIME.total_seconds()))
    assert "Too many failed logins" in right.content.decode()
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/").status_code == 302  # still not logged in
    (lockout,) = _lockouts("admin")  # the lockout once, not each refused attempt
    assert (lockout["username"], lockout["address"], lockout["failures"]) == ("root", "127.0.0.1", 10)


def test_wrong_passwords_lock_the_account_from_any_address_and_the_address_for_any_account(client, admin_user):
    for i in range(10):
        _login(client, f"wrong-{i}", address=f"10.0.0.{i}")  # one account, ten addresses

    assert _login(client, "pw-root-123456", address="10.0.1.1").status_code == 429
    for i in range(10):
        _login(client, "guess", address="10.0.2.2", username=f"user-{i}")  # one address, ten accounts
    assert _login(client, "pw-root-123456", address="10.0.2.2", username="someone").status_code == 429
    # Another address and account is not affected.
    assert _login(client, "guess", address="10.0.3.3", username="other").status_code == 200


def test_a_right_password_before_the_limit_logs_in(client, admin_user):
    for i in range(3):
        _login(client, f"wrong-{i}")

    assert _login(client, "pw-root-123456").status_code == 302
    assert client.session["_auth_user_id"] == str(admin_user.pk)


def test_150_wrong_api_tokens_get_429_with_retry_after_and_the_right_token_too(api_client, admin_user, settings):
    settings.GRACE_AUTH_FAILURE_LIMIT = "10 per 2 seconds"
    _, key = tokens.issue(admin_user, name="brute")

    answers = []
    for i in range(150):
        response = api_client.get("/api/runs/", HTTP_AUTHORIZATION=f"Token wrong{i:036d}")
        answers.append((response.status_code, response.get("Retry-After")))
    right = api_client.get("/api/runs/", HTTP_AUTHORIZATION=f"Token {key}")

    assert [status for status, _ in answers[:10]] == [401] * 10
    assert {status for status, _ in answers[10:]} == {429}
    assert all(retry and 1 <= int(retry) <= 2 for _, retry in answers[10:])
    assert right.status_code == 429 and right["Retry-After"]
    (lockout,) = _lockouts("api-token")
    assert (lockout["address"], lockout["limit"]) == ("127.0.0.1", "10 per 2 second")
    # Once the window has passed the right token works again; another address was never refused.
    wait_for(
        lambda: api_client.get("/api/runs/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 200,
        timeout=10,
        interval=0.2,
        what="the window to pass",
    )
    other = api_client.get("/api/runs/", HTTP_AUTHORIZATION="Token nope", REMOTE_ADDR="10.9.9.9")
    assert other.status_code == 401


def test_150_wrong_webhook_tokens_get_429_with_retry_after_and_the_right_token_too(api_client, settings):
    settings.GRACE_WEBHOOK_TOKEN = WEBHOOK_TOKEN
    settings.GRACE_AUTH_FAILURE_LIMIT = "10 per 2 seconds"

    def post(token: str):
        return api_client.post(
            "/api/webhooks/alertmanager/", ALERT, format="json", HTTP_AUTHORIZATION=f"Bearer {token}"
        )

    answers = [post(f"wrong-{i}") for i in range(150)]
    right = post(WEBHOOK_TOKEN)

    assert [r.status_code for r in answers[:10]] == [401] * 10
    assert {r.status_code for r in answers[10:]} == {429}
    assert all(r["Retry-After"] for r in answers[10:])
    assert right.status_code == 429
    assert len(_lockouts("webhook")) == 1
    wait_for(lambda: post(WEBHOOK_TOKEN).status_code != 429, timeout=10, interval=0.2, what="the window to pass")


def test_behind_a_trusted_proxy_the_address_is_the_one_the_proxy_saw(api_client, settings):
    settings.GRACE_AUTH_FAILURE_LIMIT = "2 per minute"
    settings.GRACE_TRUSTED_PROXIES = 1

    def wrong(forwarded: str):
        return api_client.get(
            "/api/runs/", HTTP_AUTHORIZATION="Token nope", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded
        ).status_code

    # A client cannot pick its address by sending X-Forwarded-For: the proxy appends the real one.
    assert [wrong(f"1.1.1.{i}, 203.0.113.7") for i in range(3)] == [401, 401, 429]
    assert wrong("203.0.113.8") == 401


def test_limits_fail_open_when_redis_is_down(api_client, admin_user, settings, client):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    _, key = tokens.issue(admin_user, name="brute")

    assert api_client.get("/api/runs/", HTTP_AUTHORIZATION="Token nope").status_code == 401
    assert api_client.get("/api/runs/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 200
    assert _login(client, "pw-root-123456").status_code == 302
