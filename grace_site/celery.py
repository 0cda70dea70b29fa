"""The Celery application: `celery -A grace_site worker` / `celery -A grace_site beat`."""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grace_site.settings")

app = Celery("grace")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [Queue(name) for name in ("heal.local", "heal.cloud", "sweeps", "benchmarks", "default")]
app.autodiscover_tasks(["grace_site", "approvals", "incidents", "remediation", "learning"])
