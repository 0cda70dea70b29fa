"""Durable intake: a delivery is stored and acknowledged (202), consumers apply it exactly once, in batches;
back-pressure (429), parking after failures and replay, the beat re-send of a lost wake-up, health."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from approvals.models import AuditEvent
from incidents import intake
from incidents.choices import DeliveryKind, DeliveryStatus
from incidents.models import Delivery, Incident
from tests.incidents.conftest import ALERTMANAGER_BODY, WEBHOOK_TOKEN, alert, alertmanager_body
from tests.support import inventory
from tests.support.runs import wait_for

HOOK = "/api/webhooks/alertmanager/"
BEARER = {"HTTP_AUTHORIZATION": f"Bearer {WEBHOOK_TOKEN}"}


def deliver(client, body, url=HOOK, **headers):
    return client.post(url, data=json.dumps(body), content_type="application/json", **{**BEARER, **headers})


def store(body: dict, channel=None) -> Delivery:
    """A delivery as the webhook stores it (the wake-up it sends goes to a queue no worker reads here)."""
    from incidents import channels

    channel = channel or channels.builtin(channels.DEFAULT_ALERTMANAGER)
    return intake.accept(DeliveryKind.ALERTMANAGER, channel, json.dumps(body), alerts=len(body["alerts"]))


def drain() -> None:
    """Run the consumer in this process until nothing is pending (what the intake worker does)."""
    while intake.consume()["applied"]:
        pass


def total_occurrences() -> int:
    return sum(Incident.objects.values_list("occurrences", flat=True))


@pytest.fixture
def poison():
    """A database trigger that refuses to insert an incident titled 'poison': a real failing write."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'poisoned write'; END $$ "
                "LANGUAGE plpgsql"
            )
            cursor.execute(
                "CREATE TRIGGER poison BEFORE INSERT ON incidents_incident FOR EACH ROW "
                "WHEN (NEW.title = 'poison') EXECUTE FUNCTION poison()"
            )
        else:
            cursor.execute(
                "CREATE TRIGGER poison BEFORE INSERT ON incidents_incident WHEN NEW.title = 'poison' "
                "BEGIN SELECT RAISE(ABORT, 'poisoned write'); END"
            )

    def cure() -> None:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER IF EXISTS poison" + (" ON incidents_incident" if _pg() else ""))
            if _pg():
                cursor.execute("DROP FUNCTION IF EXISTS poison()")

    yield cure
    cure()


def _pg() -> bool:
    return connection.vendor == "postgresql"


def poisoned_alert() -> dict:
    item = alert("Poison")
    item["annotations"] = {"summary": "poison"}
    return item


# --- the request path ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_acknowledges_a_webhook_delivery_with_202_once_it_is_stored(
    api_client, default_rules, published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(api_client, ALERTMANAGER_BODY)

    assert response.status_code == 202, response.content
    delivery = Delivery.objects.get()
    assert response.json() == {
        "delivery": delivery.pk,
        "status": "pending",
        "alerts": 1,
        "url": f"/api/deliveries/{delivery.pk}/",
    }
    assert response["Location"] == f"/api/deliveries/{delivery.pk}/"
    assert (delivery.kind, delivery.channel.name, delivery.status) == ("alertmanager", "alertmanager", "pending")
    assert json.loads(delivery.body)["alerts"][0]["labels"]["alertname"] == "DatabaseLocked"
    assert not Incident.objects.exists()  # nothing else happened in the request
    assert not AuditEvent.objects.filter(action="incident.created").exists()
    assert published == [("incidents.consume_deliveries", [0])]  # one wake-up of a consumer


@pytest.mark.django_db
def test_many_deliveries_wake_the_consumer_once(api_client, default_rules, published, redis_client):
    redis_client.delete(intake.WAKE_KEY.format(slot=0))
    for i in range(5):
        from django.test import TestCase

        with TestCase.captureOnCommitCallbacks(execute=True):
            deliver(api_client, alertmanager_body(alert(f"A{i}")))

    assert Delivery.objects.count() == 5
    assert [name for name, _ in published] == ["incidents.consume_deliveries"]


@pytest.mark.django_db
def test_a_signal_posted_by_a_user_is_stored_with_the_users_channel_and_the_user(intake_client, intake_user):
    response = intake_client.post("/api/incidents/", {"title": "Checkout slow", "service": "checkout"}, format="json")

    assert response.status_code == 202, response.content
    delivery = Delivery.objects.get(pk=response.json()["delivery"])
    assert (delivery.kind, delivery.channel.name, delivery.raised_by) == ("incident", "api-users", intake_user)

    drain()

    incident = Incident.objects.get()
    assert (incident.raised_by, incident.channel.name, incident.title) == (intake_user, "api-users", "Checkout slow")
    assert AuditEvent.objects.get(action="incident.created").actor == "intake"


@pytest.mark.django_db
def test_bad_input_is_refused_before_anything_is_stored(api_client):
    body = alertmanager_body(alert())
    body["alerts"][0]["labels"]["severity"] = "apocalyptic"

    response = deliver(api_client, body)

    assert response.status_code == 400
    assert "unknown severity" in json.dumps(response.json())
    assert not Delivery.objects.exists()


@pytest.mark.django_db
def test_a_wrong_token_stores_nothing(api_client):
    response = deliver(api_client, ALERTMANAGER_BODY, HTTP_AUTHORIZATION="Bearer wrong-token-wrong-token")

    assert response.status_code == 401
    assert not Delivery.objects.exists()


# --- synchronous mode --------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("how", [{"url": HOOK + "?wait=true"}, {"HTTP_GRACE_WAIT": "true"}])
def test_the_synchronous_mode_answers_with_the_incidents_and_keeps_the_delivery(api_client, default_rules, how):
    response = deliver(api_client, ALERTMANAGER_BODY, **how)

    assert response.status_code == 200, response.content
    incident = Incident.objects.get()
    assert response.json()["incidents"] == [incident.pk]
    delivery = Delivery.objects.get(pk=int(response["Grace-Delivery"]))
    assert (delivery.status, delivery.result["created"], delivery.attempts) == ("done", 1, 1)
    assert intake.consume()["applied"] == 0  # nothing left for a consumer: applied once


@pytest.mark.django_db
def test_a_wait_value_that_is_not_a_boolean_is_a_400_naming_it(api_client):
    response = deliver(api_client, ALERTMANAGER_BODY, url=HOOK + "?wait=soon")

    assert response.status_code == 400
    assert "wait" in response.json()
    assert not Delivery.objects.exists()


# --- the consumer -------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_batch_applies_deliveries_in_order_firing_then_resolved_then_firing_again(default_rules):
    store(alertmanager_body(alert("DatabaseLocked", flap="1")))
    store(alertmanager_body(alert("DatabaseLocked", flap="1")))
    resolved = store(alertmanager_body(alert("DatabaseLocked", status="resolved", flap="1"), status="resolved"))
    again = store(alertmanager_body(alert("DatabaseLocked", flap="1")))

    assert intake.consume()["batches"] == 1

    first, second = Incident.objects.order_by("pk")
    assert (first.status, first.occurrences) == ("resolved", 2)
    assert (second.status, second.occurrences) == ("open", 1)
    resolved.refresh_from_db()
    again.refresh_from_db()
    assert resolved.result == {"alerts": 1, "created": 0, "absorbed": 0, "resolved": 1, "incidents": [first.pk]}
    assert again.result["created"] == 1 and again.result["incidents"] == [second.pk]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("linger", "applied"), [(0.6, 2), (0.0, 1)])
def test_a_consumer_lingers_for_the_deliveries_that_arrive_after_its_batch(default_rules, settings, linger, applied):
    """GRACE_INTAKE_LINGER_SECONDS: a consumer whose batch was not full waits before claiming again, and takes
    what arrived meanwhile; without it, it stops once it finds nothing left."""
    settings.GRACE_INTAKE_LINGER_SECONDS = linger
    store(alertmanager_body(alert("LingerFirst")))
    result: dict = {}

    def consumer() -> None:
        try:
            result.update(intake.consume())
        finally:
            connection.close()

    thread = threading.Thread(target=consumer)
    thread.start()
    wait_for(lambda: Delivery.objects.filter(status=DeliveryStatus.DONE).exists(), timeout=10)
    time.sleep(0.15)  # the first batch is applied; the consumer lingers (or has stopped)
    store(alertmanager_body(alert("LingerSecond")))
    thread.join(10)

    assert result["applied"] == applied
    assert Delivery.objects.filter(status=DeliveryStatus.PENDING).count() == 2 - applied


@pytest.mark.django_db
def test_a_consumer_whose_lease_ran_out_applies_nothing_the_next_one_did(default_rules):
    delivery = store(alertmanager_body(alert("Slow")))
    slow = intake.claim(10, "slow-consumer")
    Delivery.objects.filter(pk=delivery.pk).update(lease_until=timezone.now() - timedelta(seconds=1))

    assert intake.recover() == {"released": 1, "parked": 0}
    assert intake.consume()["applied"] == 1
    assert intake.process(slow, "slow-consumer") == 0  # its batch was claimed again and applied meanwhile

    assert Incident.objects.get().occurrences == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("done", 2)


@pytest.mark.django_db
def test_a_claim_takes_at_most_its_limit_whatever_plan_the_database_picks():
    stored = [store(alertmanager_body(alert(f"Claim{i}"))).pk for i in range(30)]
    if connection.vendor == "postgresql":
        # The plan a young table gets (few rows in its statistics): a nested loop that re-runs an
        # ``IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)`` subquery for each row, and so claims past ``n``.
        with connection.cursor() as cursor:
            for knob in ("enable_hashagg", "enable_hashjoin", "enable_mergejoin", "enable_material"):
                cursor.execute(f"SET LOCAL {knob} = off")

    claimed = intake.claim(5, "small")

    assert [d.pk for d in claimed] == stored[:5]
    assert Delivery.objects.filter(status=DeliveryStatus.PROCESSING).count() == 5
    assert Delivery.objects.filter(status=DeliveryStatus.PENDING).count() == 25


@pytest.mark.django_db
def test_a_consumer_that_lost_part_of_its_batch_applies_the_rest_once(default_rules):
    kept, lost = store(alertmanager_body(alert("Kept"))), store(alertmanager_body(alert("Lost")))
    slow = intake.claim(10, "slow-consumer")
    assert [d.pk for d in slow] == [kept.pk, lost.pk]
    Delivery.objects.filter(pk=lost.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert intake.recover() == {"released": 1, "parked": 0}
    assert intake.consume()["applied"] == 1  # the lost one, by another consumer

    assert intake.process(slow, "slow-consumer") == 1  # the one it still held, and only that one

    assert total_occurrences() == 2
    assert sorted(Incident.objects.values_list("occurrences", flat=True)) == [1, 1]
    assert AuditEvent.objects.filter(action="incident.created").count() == 2
    for delivery, attempts in ((kept, 1), (lost, 2)):
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts, delivery.claim) == ("done", attempts, "")
        assert delivery.result["created"] == 1


@pytest.mark.django_db
def test_a_redelivered_consumer_task_finds_nothing_left(default_rules):
    for i in range(3):
        store(alertmanager_body(alert(f"Once{i}")))

    assert intake.consume()["applied"] == 3
    assert intake.consume()["applied"] == 0  # the same task delivered again

    assert total_occurrences() == 3


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_consumers_on_a_real_worker_apply_every_delivery_exactly_once(
    default_rules, celery_worker, settings
):
    """The worker runs two processes; every consumer task is also sent twice, as a redelivery would."""
    from grace_site import handoff

    settings.GRACE_INTAKE_BATCH = 7  # many small batches, so the two consumers interleave
    names = [f"Storm{i}" for i in range(40)]
    for round_ in range(6):
        for name in names:
            body = alertmanager_body(alert(name), alert(name)) if round_ == 5 else alertmanager_body(alert(name))
            store(body)
    deliveries = Delivery.objects.count()
    alerts = sum(Delivery.objects.values_list("alerts", flat=True))

    for _ in range(2):
        for slot in (0, 1):
            handoff.send(intake.CONSUME_TASK, slot)

    wait_for(
        lambda: not Delivery.objects.exclude(status=DeliveryStatus.DONE).exists(),
        fresh_reads=True,
        timeout=120,
        what="every delivery applied",
    )
    assert deliveries == 240 and alerts == 280
    assert Incident.objects.count() == 40
    assert total_occurrences() == alerts  # nothing applied twice, nothing lost
    assert AuditEvent.objects.filter(action="incident.created").count() == 40
    assert Counter(Delivery.objects.values_list("attempts", flat=True)) == {1: deliveries}


@pytest.mark.django_db(transaction=True)
def test_a_posted_delivery_reaches_its_incident_through_the_worker(api_client, default_rules, celery_worker):
    response = deliver(api_client, ALERTMANAGER_BODY)
    assert response.status_code == 202

    delivery_url = response["Location"]
    done = wait_for(
        lambda: api_client.get(delivery_url, **BEARER).json().get("status") == "done",
        fresh_reads=True,
        what="the delivery applied",
    )
    assert done
    status = api_client.get(delivery_url, **BEARER).json()
    incident = Incident.objects.get()
    assert status["result"] == {"alerts": 1, "created": 1, "absorbed": 0, "resolved": 0, "incidents": [incident.pk]}
    assert incident.diagnosis_code == "database_locked"


# --- back-pressure ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_past_the_backlog_bound_intake_answers_429_with_retry_after_and_stores_nothing(
    api_client, intake_user, settings
):
    from rest_framework.test import APIClient

    user_client = APIClient()
    user_client.force_authenticate(intake_user)
    settings.GRACE_INTAKE_MAX_BACKLOG = 3
    settings.GRACE_INTAKE_BACKLOG_RECHECK_SECONDS = 0
    settings.GRACE_INTAKE_RETRY_AFTER = 7
    answers = [deliver(api_client, alertmanager_body(alert(f"B{i}"))).status_code for i in range(4)]

    refused = deliver(api_client, ALERTMANAGER_BODY)
    refused_api = user_client.post("/api/incidents/", {"title": "x"}, format="json")

    assert answers == [202, 202, 202, 202]  # 3 pending when the 4th came: not past the bound yet
    assert (refused.status_code, refused["Retry-After"]) == (429, "7")
    assert "GRACE_INTAKE_MAX_BACKLOG" in refused.json()["detail"]
    assert refused_api.status_code == 429
    assert Delivery.objects.count() == 4

    drain()
    assert deliver(api_client, ALERTMANAGER_BODY).status_code == 202


# --- failures: retried, parked, replayed --------------------------------------------------------------------


@pytest.mark.django_db
def test_a_failing_delivery_is_retried_then_parked_and_a_replay_applies_it(
    api_client, admin_user, default_rules, settings, poison
):
    settings.GRACE_INTAKE_MAX_ATTEMPTS = 3
    settings.GRACE_INTAKE_RETRY_SECONDS = 0
    bad = store(alertmanager_body(poisoned_alert()))
    good = [store(alertmanager_body(alert(f"Fine{i}"))) for i in range(2)]

    intake.consume()  # the batch fails; applied one by one: the good ones pass
    assert Delivery.objects.filter(pk__in=[g.pk for g in good], status="done").count() == 2
    bad.refresh_from_db()
    assert (bad.status, bad.attempts) == ("pending", 1)
    assert "poisoned write" in bad.error

    intake.consume()
    intake.consume()
    bad.refresh_from_db()
    assert (bad.status, bad.attempts) == ("parked", 3)
    assert intake.consume()["applied"] == 0  # parked: left alone, never lost
    parked = AuditEvent.objects.get(action="delivery.parked")
    assert parked.object_id == str(bad.pk) and "poisoned write" in parked.data["error"]

    api_client.force_authenticate(admin_user)
    listed = api_client.get("/api/deliveries/", {"status": "parked"}).json()["results"]
    assert [(d["id"], d["attempts"]) for d in listed] == [(bad.pk, 3)]
    assert "poisoned write" in listed[0]["error"]

    poison()  # the cause is fixed
    response = api_client.post(f"/api/deliveries/{bad.pk}/replay/")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "pending"
    assert AuditEvent.objects.get(action="delivery.replayed").actor == admin_user.username
    assert api_client.post(f"/api/deliveries/{bad.pk}/replay/").status_code == 409  # not parked any more

    drain()
    bad.refresh_from_db()
    assert bad.status == "done"
    assert Incident.objects.filter(title="poison").count() == 1


@pytest.mark.django_db
def test_a_delivery_that_can_never_validate_again_is_parked_at_once(default_rules, settings):
    delivery = store(alertmanager_body(alert(extra="1", more="2")))
    settings.GRACE_INTAKE_MAX_LABELS = 2  # limits lowered after it was accepted

    intake.consume()

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("parked", 1)
    assert "labels" in delivery.error


@pytest.mark.django_db
def test_a_delivery_whose_consumer_keeps_getting_lost_is_parked(default_rules, settings):
    settings.GRACE_INTAKE_MAX_ATTEMPTS = 2
    delivery = store(alertmanager_body(alert("Crashy")))
    for attempt in range(2):
        intake.claim(10, f"lost-{attempt}")  # claimed, then its worker died
        Delivery.objects.filter(pk=delivery.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
        intake.recover()

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("parked", 2)
    assert "consumer was lost 2 times" in delivery.error


@pytest.mark.django_db
def test_the_admin_lists_deliveries_read_only_and_replays_parked_ones_through_the_service(
    client, admin_user, default_rules, settings, poison
):
    settings.GRACE_INTAKE_MAX_ATTEMPTS = 1
    bad = store(alertmanager_body(poisoned_alert()))
    intake.consume()
    poison()
    client.force_login(admin_user)

    listing = client.get("/admin/incidents/delivery/", {"status__exact": "parked"})
    page = client.get(f"/admin/incidents/delivery/{bad.pk}/change/")
    client.post("/admin/incidents/delivery/", {"action": "replay_selected", "_selected_action": [bad.pk]})

    assert listing.status_code == 200 and "poisoned write" in listing.content.decode()
    assert page.status_code == 200 and "Save" not in page.content.decode()
    assert AuditEvent.objects.filter(action="delivery.replayed", object_id=str(bad.pk)).count() == 1
    drain()
    assert Delivery.objects.get(pk=bad.pk).status == "done"


# --- trust: the stored channel is the authenticated one -----------------------------------------------------


@pytest.mark.django_db
def test_nothing_in_the_body_chooses_the_channel_source_or_environment(api_client, default_rules):
    inventory.service("orders", environment="staging")
    api, token = inventory.channel("ci-client")
    body = {
        "title": "WAL bloat",
        "service": "orders",
        "source": "sweep",
        "environment": "production",
        "channel": "alertmanager",
        "raised_by": 1,
        "labels": {"channel": "grace-sweeps"},
    }

    response = api_client.post("/api/incidents/", body, format="json", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 202, response.content
    delivery = Delivery.objects.get()
    assert (delivery.channel, delivery.raised_by) == (api, None)

    drain()

    incident = Incident.objects.get()
    assert (incident.channel, incident.source, incident.raised_by) == (api, "api", None)
    assert (incident.environment, incident.claimed_environment) == ("staging", "production")
    assert AuditEvent.objects.get(action="incident.created").actor == "channel:ci-client"


@pytest.mark.django_db
def test_a_channel_reads_its_own_deliveries_and_no_other(api_client, default_rules):
    _, token = inventory.channel("ci-client")
    _, other_token = inventory.channel("other-client")
    mine = api_client.post("/api/incidents/", {"title": "x"}, format="json", HTTP_AUTHORIZATION=f"Bearer {token}")
    url = mine["Location"]

    own = api_client.get(url, HTTP_AUTHORIZATION=f"Bearer {token}")
    others = api_client.get(url, HTTP_AUTHORIZATION=f"Bearer {other_token}")
    listing = api_client.get("/api/deliveries/", HTTP_AUTHORIZATION=f"Bearer {token}")

    assert own.status_code == 200 and own.json()["channel"] == "ci-client"
    assert others.status_code == 404
    assert listing.status_code == 403
    assert "body" not in own.json()


# --- the beat re-send of a lost wake-up, and health ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_delivery_whose_wake_up_was_lost_is_applied_after_the_beat_redrive(
    api_client, default_rules, request, redis_client, tmp_path
):
    from grace_site.beat import ensure_interval_task
    from tests.conftest import purge_queues
    from tests.support.processes import start_beat

    response = deliver(api_client, ALERTMANAGER_BODY)
    assert response.status_code == 202
    purge_queues()  # the consumer's message is lost (Redis restarted empty) ...
    redis_client.delete(intake.WAKE_KEY.format(slot=0))  # ... with its wake-up key
    request.getfixturevalue("celery_worker")
    delivery = Delivery.objects.get()
    assert Delivery.objects.get().status == "pending"  # nobody was told

    ensure_interval_task("incidents: intake redrive", intake.REDRIVE_TASK, every=1, queue="intake", expires=1)
    beat = start_beat(tmp_path)
    try:
        wait_for(
            lambda: Delivery.objects.filter(pk=delivery.pk, status="done").exists(),
            fresh_reads=True,
            timeout=60,
            what="the beat pass to send a consumer",
            detail=beat.log,
        )
    finally:
        beat.stop()
    assert Incident.objects.get().occurrences == 1


@pytest.mark.django_db
def test_health_shows_the_backlog_and_its_age_as_a_warning(client, default_rules, settings):
    settings.GRACE_INTAKE_MAX_AGE = 60
    old = store(ALERTMANAGER_BODY)
    Delivery.objects.filter(pk=old.pk).update(received_at=timezone.now() - timedelta(seconds=300))
    store(ALERTMANAGER_BODY)

    report = client.get("/api/health/").json()

    component = report["components"]["intake"]
    assert (component["pending"], component["parked"]) == (2, 0)
    assert component["oldest_seconds"] >= 300
    assert "intake" in report["warnings"]
    assert "intake" not in report["failing"]
    assert "waits for" in component["warning"]

    drain()
    assert "warning" not in client.get("/api/health/").json()["components"]["intake"]


@pytest.mark.django_db
@pytest.mark.skipif(
    "connection.vendor != 'postgresql'",
    reason="the plan of PostgreSQL's claim: SQLite has no bitmap scans, and its single writer takes claims in turn",
)
def test_the_claim_walks_the_pending_index_in_order_whatever_the_statistics_say():
    """Deliveries claimed since the last vacuum leave entries in the pending index. The claim reads it in id order
    up to its limit with an index scan, which marks those entries dead for the next claim. A bitmap scan (the
    planner's choice on a table grown since its last ANALYZE, as here) read every one of them in every claim."""
    from incidents import channels

    channel = channels.builtin(channels.DEFAULT_ALERTMANAGER)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO incidents_delivery (kind, channel_id, body, alerts, received_at, status, attempts, "
            "available_at, claim, result, error) SELECT 'alertmanager', %s, '{}', 1, now(), 'pending', 0, now(), "
            "'', '{}', '' FROM generate_series(1, 5000)",
            [channel.pk],
        )
        cursor.execute("SELECT min(id) FROM incidents_delivery")
        (first,) = cursor.fetchone()
        cursor.execute("UPDATE incidents_delivery SET status = 'done' WHERE id < %s", [first + 4990])
    plans: list[str] = []

    def explain(execute, sql, params, many, context):
        if sql.startswith("WITH picked AS MATERIALIZED"):
            with context["connection"].cursor() as cursor:
                cursor.execute("EXPLAIN " + sql, params)
                plans.append("\n".join(line for (line,) in cursor.fetchall()))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explain):
        claimed = intake.claim(500, "a-token")

    assert len(claimed) == 10
    assert len(plans) == 1 and "Index Scan using delivery_pending_idx" in plans[0], plans
    assert "Bitmap" not in plans[0], plans
