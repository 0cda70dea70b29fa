"""grace_site.api: one exception handler and the shared permission classes and serializer base."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import ProtectedError
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError
from rest_framework import exceptions

from grace_site import api
from incidents.models import Incident
from remediation.models import HealRun, Playbook

GRACE_APPS = {"approvals", "incidents", "remediation", "learning"}


def handle(exc: Exception):
    return api.exception_handler(exc, {"request": None, "view": None})


def test_a_django_validation_error_is_a_400_with_its_field_errors():
    by_field = handle(DjangoValidationError({"service": "unknown service"}))
    bare = handle(DjangoValidationError("no good"))

    assert (by_field.status_code, by_field.data) == (400, {"service": ["unknown service"]})
    assert (bare.status_code, bare.data) == (400, {"non_field_errors": ["no good"]})


def test_a_400_body_is_always_an_object():
    response = handle(exceptions.ValidationError("a bare message"))

    assert response.data == {"non_field_errors": ["a bare message"]}


@pytest.mark.django_db
def test_a_protected_error_is_a_409_saying_what_refers_to_the_object():
    playbook = Playbook.objects.create(name="kept", diagnosis_codes=["x"], steps=[], tier=1)
    now = timezone.now()
    incident = Incident.objects.create(fingerprint="e", title="t", first_seen=now, last_seen=now)
    runs = [
        HealRun.objects.create(incident=incident, playbook=playbook, status="FAILED", finished_at=now) for _ in range(2)
    ]

    response = handle(ProtectedError("protected", set(runs)))

    assert response.status_code == 409
    assert response.data["detail"] == "it is still referred to by 2 heal runs: it cannot be deleted"


def test_a_registered_domain_exception_gets_its_status_and_detail():
    class NotNow(Exception):
        pass

    api.answer(NotNow, 409, "not now: {exc}")

    response = handle(NotNow("the run is executing"))

    assert (response.status_code, response.data) == (409, {"detail": "not now: the run is executing"})


def test_redis_being_down_is_a_503_saying_what_was_kept():
    response = handle(BrokerError("Error 111 connecting to 127.0.0.1:6390. Connection refused."))

    assert response.status_code == 503
    assert response.data["detail"].startswith("Redis is unavailable (OperationalError: Error 111")
    assert "reaper" in response.data["detail"]


def test_an_unexpected_exception_is_left_to_django():
    assert handle(KeyError("bug")) is None


class UncheckedTierSerializer(api.CheckedModelSerializer):
    """No field bounds on tier: only the model's constraint stands between the input and the database."""

    class Meta:
        model = Playbook
        fields = ["name", "diagnosis_codes", "steps", "tier"]


@pytest.mark.django_db
def test_a_check_constraint_is_checked_before_saving_on_create_and_update():
    created = UncheckedTierSerializer(data={"name": "p", "diagnosis_codes": ["x"], "steps": [], "tier": 7})
    playbook = Playbook.objects.create(name="q", diagnosis_codes=["x"], steps=[], tier=1)
    updated = UncheckedTierSerializer(playbook, data={"tier": 0}, partial=True)

    assert not created.is_valid()
    assert not updated.is_valid()
    assert "playbook_tier_1_to_3" in str(created.errors["non_field_errors"])
    assert "playbook_tier_1_to_3" in str(updated.errors["non_field_errors"])
    assert Playbook.objects.get(pk=playbook.pk).tier == 1


def test_requires_names_the_permissions_it_needs():
    permission = api.requires("remediation.view_healrun")()

    assert permission.message == "needs the remediation.view_healrun permission"


def test_grace_site_imports_no_grace_app():
    imported = set()
    for path in Path(api.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])

    assert imported & GRACE_APPS == set()


def test_every_serializer_that_writes_a_model_checks_its_constraints():
    from drf_spectacular.generators import EndpointEnumerator
    from rest_framework import serializers

    unchecked = set()
    for _path, _regex, method, callback in EndpointEnumerator().get_api_endpoints():
        serializer = getattr(callback.cls, "serializer_class", None)
        writes = method in ("POST", "PUT", "PATCH") and serializer is not None
        if writes and issubclass(serializer, serializers.ModelSerializer):
            writable = set(serializer.Meta.fields) - set(getattr(serializer.Meta, "read_only_fields", ()))
            if writable and not issubclass(serializer, api.CheckedModelSerializer):
                unchecked.add(serializer.__name__)

    assert unchecked == set()


@pytest.mark.django_db
@pytest.mark.parametrize("tier", ["0", "4"])
def test_the_admin_refuses_a_playbook_tier_outside_1_to_3_with_a_form_error(admin_client, tier):
    form = {
        "name": "p",
        "description": "",
        "diagnosis_codes": '["x"]',
        "steps": "[]",
        "tier": tier,
        "cooldown_seconds": "300",
        "enabled": "on",
    }

    response = admin_client.post("/admin/remediation/playbook/add/", form)

    assert response.status_code == 200
    assert "playbook_tier_1_to_3" in response.content.decode()
    assert not Playbook.objects.exists()
