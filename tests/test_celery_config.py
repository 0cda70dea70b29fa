"""The Celery contract: names, serialization and delivery guarantees."""

from django.conf import settings

from grace_site.celery import app

# Renaming a task strands the messages already queued under the old name:
# a change here must be deliberate.
PINNED_TASK_NAMES = {
    "grace.ping",
    "remediation.start_run",
    "remediation.start_runs",
    "remediation.plan_run",
    "remediation.gate_run",
    "remediation.resume_run",
    "remediation.snapshot_run",
    "remediation.execute_run",
    "remediation.verify_run",
    "remediation.rollback_run",
    "remediation.record_outcome",
    "remediation.cancel_for_incident",
    "remediation.reap",
    "remediation.purge_snapshots",
    "incidents.sweep_host",
    "incidents.sweep_sqlite",
    "incidents.sweep_postgres",
    "incidents.sweep_http",
    "incidents.sweep_target",
    "incidents.consume_deliveries",
    "incidents.redrive_deliveries",
    "approvals.expire_requests",
    "approvals.deliver_notification",
    "approvals.seal_audit",
    "learning.benchmark_run",
    "learning.benchmark_execute",
}


def test_task_names_are_pinned():
    app.loader.import_default_modules()
    ours = {name for name in app.tasks if not name.startswith("celery.")}
    assert ours == PINNED_TASK_NAMES


def test_only_json_crosses_the_broker():
    assert app.conf.task_serializer == "json"
    assert app.conf.result_serializer == "json"
    assert app.conf.accept_content == ["json"]


def test_delivery_survives_a_lost_worker():
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.task_soft_time_limit < app.conf.task_time_limit
    # A message must not be redelivered while its task may still be running.
    assert app.conf.broker_transport_options["visibility_timeout"] > app.conf.task_time_limit


def test_every_queue_is_declared_and_routed():
    declared = {queue.name for queue in app.conf.task_queues}
    assert declared == {"heal.local", "heal.cloud", "sweeps", "benchmarks", "default", "intake"}
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    assert routed <= declared


def test_beat_uses_the_database_scheduler():
    from django_celery_beat.schedulers import DatabaseScheduler

    from grace_site.scheduler import GraceScheduler

    assert app.conf.beat_scheduler == "grace_site.scheduler:GraceScheduler"
    assert issubclass(GraceScheduler, DatabaseScheduler)


def test_every_hand_off_names_a_registered_task_and_a_declared_queue():
    from grace_site import handoff

    app.loader.import_default_modules()
    declared = {queue.name for queue in app.conf.task_queues}

    assert set(handoff.TASKS) <= PINNED_TASK_NAMES
    assert set(handoff.TASKS.values()) <= declared == set(handoff.QUEUES)
