"""Audit checkpoints in an S3 bucket with Object Lock (moto server): written locked, not deletable, and
checked by verify_audit."""

import io
import json
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.exceptions import ClientError
from django.core.management import call_command
from django.core.management.base import CommandError

from approvals import audit, checkpoints
from approvals.models import AuditEvent, AuditSeal
from tests.support import audit as audit_lock

pytestmark = pytest.mark.django_db


def _s3(moto):
    return boto3.client("s3", endpoint_url=moto, region_name="us-east-1")


@pytest.fixture
def locked_bucket(moto, settings):
    _s3(moto).create_bucket(Bucket="grace-audit", ObjectLockEnabledForBucket=True)
    url = "s3://grace-audit/prod/checkpoints/"
    settings.GRACE_AUDIT_CHECKPOINT_SINKS = [url]
    settings.GRACE_AUDIT_S3_LOCK_MODE = "COMPLIANCE"
    settings.GRACE_AUDIT_S3_RETENTION_DAYS = 30
    return url


def _checkpoint(n: int) -> None:
    for i in range(n):
        audit.record("test.event", actor="tester", data={"i": i})
    audit.seal()
    return checkpoints.issue()


def test_a_checkpoint_is_written_to_the_bucket_under_a_compliance_retention(moto, locked_bucket):
    checkpoint = _checkpoint(3)
    s3 = _s3(moto)

    [item] = s3.list_objects_v2(Bucket="grace-audit", Prefix="prod/checkpoints/")["Contents"]
    stored = s3.get_object(Bucket="grace-audit", Key=item["Key"])

    assert checkpoint.sinks == {locked_bucket: "ok"}
    assert json.loads(stored["Body"].read())["body"] == checkpoint.body
    assert stored["ObjectLockMode"] == "COMPLIANCE"
    assert stored["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(days=29)
    with pytest.raises(ClientError, match="AccessDenied"):
        s3.delete_object(Bucket="grace-audit", Key=item["Key"], VersionId=stored["VersionId"])


def test_verify_audit_checks_the_chain_against_the_bucket(moto, locked_bucket):
    _checkpoint(4)
    out = io.StringIO()
    call_command("verify_audit", "--checkpoints", locked_bucket, stdout=out)
    assert "4 events verified; 1 checkpoints match" in out.getvalue()

    audit_lock.drop_triggers()
    tail = AuditSeal.objects.get(seq=4).event_id
    AuditSeal.objects.filter(seq=4).delete()
    AuditEvent.objects.filter(pk=tail).delete()

    with pytest.raises(CommandError, match=r"broken at seq 4: seq 4 is missing: .*s3://grace-audit/prod/checkpoints/"):
        call_command("verify_audit", "--checkpoints", locked_bucket)


def test_a_bucket_without_object_lock_refuses_the_checkpoint_and_says_why(moto, settings):
    _s3(moto).create_bucket(Bucket="grace-unlocked")
    settings.GRACE_AUDIT_CHECKPOINT_SINKS = ["s3://grace-unlocked/"]

    checkpoint = _checkpoint(1)

    assert checkpoint.sinks["s3://grace-unlocked/"].startswith("failed: s3://grace-unlocked/: ")
    assert "not written to 1 of 1 sinks" in checkpoints.health()["warning"]
