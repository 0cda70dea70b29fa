"""Every admin screen renders for a superuser, with data in it."""

import pytest
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from incidents.models import Incident
from remediation.choices import RunStatus
from remediation.models import HealRun, RunEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def some_run():
    incident = Incident.objects.create(
        fingerprint="admin",
        source="api",
        title="orders-db locked",
        service="orders-db",
        first_seen=timezone.now(),
        last_seen=timezone.now(),
        diagnosis_code="database_locked",
    )
    run = HealRun.objects.create(
        incident=incident, status=RunStatus.SUCCEEDED, tier=2, target="local:orders", finished_at=timezone.now()
    )
    RunEvent.objects.create(run=run, from_status="VERIFYING", to_status="SUCCEEDED", note="contract met")
    return run


@pytest.mark.parametrize(
    "model", sorted(admin.site._registry, key=lambda m: m._meta.label), ids=lambda m: m._meta.label
)
def test_every_changelist_renders(client, admin_user, some_run, model):
    client.force_login(admin_user)

    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    response = client.get(url, follow=True)  # a singleton (governance settings) redirects to its one row

    assert response.status_code == 200


def test_a_run_page_shows_its_timeline(client, admin_user, some_run):
    client.force_login(admin_user)

    response = client.get(reverse("admin:remediation_healrun_change", args=[some_run.pk]))

    assert response.status_code == 200
    assert b"contract met" in response.content and b"timeline" in response.content.lower()
