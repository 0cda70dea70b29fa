"""Signed checkpoints anchor the chain outside the database: what an insider can hide without them, and
what each checkpoint catches."""

import base64
import io
import json
import os
import subprocess
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError

from approvals import audit, checkpoints, sinks
from approvals.models import AuditCheckpoint, AuditEvent, AuditSeal
from tests.support import audit as audit_lock

pytestmark = pytest.mark.django_db


@pytest.fixture
def sink(settings, tmp_path):
    """This test's own checkpoint file (the default one is shared by the whole run)."""
    url = f"file://{tmp_path / 'checkpoints.jsonl'}"
    settings.GRACE_AUDIT_CHECKPOINT_SINKS = [url]
    return url


def _append_and_checkpoint(n: int, start: int = 0) -> AuditCheckpoint:
    for i in range(start, start + n):
        audit.record("test.event", actor="approver-1", obj=("thing", i), data={"i": i})
    audit.seal()
    return checkpoints.issue()


def _verify(*sink_urls: str, public_key: str | None = None) -> str:
    args = [arg for url in sink_urls for arg in ("--checkpoints", url)]
    if public_key:
        args += ["--public-key", public_key]
    out = io.StringIO()
    call_command("verify_audit", *args, stdout=out)
    return out.getvalue()


def _rehash(from_seq: int) -> None:
    """What an insider with the database and this code can do: recompute every link from ``from_seq`` on."""
    links = list(AuditSeal.objects.filter(seq__gte=from_seq).order_by("seq").select_related("event"))
    prev_hash = AuditSeal.objects.get(seq=from_seq - 1).hash if from_seq > 1 else "0" * 64
    for link in links:
        new_hash = audit.link_hash(seq=link.seq, prev_hash=prev_hash, event=link.event)
        AuditSeal.objects.filter(seq=link.seq).update(prev_hash=prev_hash, hash=new_hash)
        prev_hash = new_hash


def test_a_checkpoint_is_signed_into_the_sink_and_verify_audit_accepts_it(sink, tmp_path):
    checkpoint = _append_and_checkpoint(3)

    lines = (tmp_path / "checkpoints.jsonl").read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["body"] == checkpoint.body
    assert f"size 3\nhead {AuditSeal.objects.get(seq=3).hash}\n" in record["body"]
    assert checkpoint.sinks == {sink: "ok"}
    assert "3 events verified; 1 checkpoints match (latest: 3 events" in _verify(sink)


def test_a_deleted_tail_is_found_only_with_checkpoints(sink):
    _append_and_checkpoint(5)
    audit_lock.drop_triggers()  # rolled back with the test's transaction: what the database's owner can do
    tail = list(AuditSeal.objects.filter(seq__gte=4).values_list("event_id", flat=True))
    AuditSeal.objects.filter(seq__gte=4).delete()
    AuditEvent.objects.filter(pk__in=tail).delete()

    assert "audit chain intact: 3 events verified" in _verify()  # the limit: nothing to compare with
    with pytest.raises(CommandError, match=r"broken at seq 4: seq 4 is missing: .* covers 5 \(tail deleted\)"):
        _verify(sink)


def test_a_rewritten_and_rehashed_event_is_found_only_with_checkpoints(sink):
    _append_and_checkpoint(3)
    _append_and_checkpoint(3, start=3)
    audit_lock.drop_triggers()
    AuditEvent.objects.filter(seal__seq=5).update(actor="mallory")  # who approved
    _rehash(5)

    assert "audit chain intact: 6 events verified" in _verify()
    with pytest.raises(CommandError, match=r"broken at seq 4: .*rewritten somewhere in seq 4\.\.6"):
        _verify(sink)


def test_a_fully_rehashed_chain_is_found_only_with_checkpoints(sink):
    _append_and_checkpoint(2)
    _append_and_checkpoint(3, start=2)
    audit_lock.drop_triggers()
    # Remove one entry and let GRACE's own sealer chain the rest again, from genesis: a clean-looking history.
    removed = AuditSeal.objects.get(seq=2).event_id
    AuditSeal.objects.all().delete()
    AuditEvent.objects.filter(pk=removed).delete()
    audit.seal()

    assert "audit chain intact: 4 events verified" in _verify()
    with pytest.raises(CommandError, match=r"broken at seq 1: the chain's head at seq 2 is .*seq 1\.\.2"):
        _verify(sink)


def test_a_forged_checkpoint_is_reported(sink, tmp_path):
    checkpoint = _append_and_checkpoint(2)
    forged = checkpoint.body.replace("size 2", "size 1")
    with open(tmp_path / "checkpoints.jsonl", "a") as handle:
        handle.write(json.dumps({"body": forged, "signature": checkpoint.signature, "key_id": checkpoint.key_id}))
        handle.write("\nnot json at all\n")

    with pytest.raises(CommandError) as raised:
        _verify(sink)

    assert "checkpoints.jsonl:2: the signature does not match the text (forged or altered)" in str(raised.value)
    assert "checkpoints.jsonl:3: not JSON" in str(raised.value)


def test_a_checkpoint_signed_by_another_key_is_reported(sink, settings):
    checkpoint = _append_and_checkpoint(1)
    other = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    settings.GRACE_AUDIT_SIGNING_KEY = base64.b64encode(other).decode()

    with pytest.raises(CommandError, match=f"signed by key {checkpoint.key_id}, not by the trusted key"):
        _verify(sink)


def test_an_empty_or_unusable_sink_is_an_error(tmp_path):
    _append_and_checkpoint(1)

    with pytest.raises(CommandError, match="no checkpoint found"):
        _verify(f"file://{tmp_path / 'nothing-here.jsonl'}")
    with pytest.raises(CommandError, match="must be file:///absolute/path or s3://bucket/prefix/"):
        _verify("ftp://example.com/checkpoints")


def test_an_auditor_verifies_a_checkpoint_by_hand_with_the_printed_public_key(sink, tmp_path, capsys):
    checkpoint = _append_and_checkpoint(2)
    call_command("audit_public_key")
    printed = capsys.readouterr()
    pem = tmp_path / "grace-audit.pub.pem"
    pem.write_text(printed.out)
    assert printed.out.startswith("-----BEGIN PUBLIC KEY-----")
    assert f"key id {checkpoint.key_id}" in printed.err
    record = json.loads((tmp_path / "checkpoints.jsonl").read_text().splitlines()[0])
    (tmp_path / "body.txt").write_text(record["body"])
    (tmp_path / "sig.bin").write_bytes(base64.b64decode(record["signature"]))

    # The documented procedure (docs/governance.md): OpenSSL 3, Ed25519 over the body as it is.
    command = [
        "openssl",
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        str(pem),
        "-rawin",
        "-in",
        str(tmp_path / "body.txt"),
        "-sigfile",
        str(tmp_path / "sig.bin"),
    ]
    genuine = subprocess.run(command, capture_output=True, text=True, timeout=30)
    (tmp_path / "body.txt").write_text(record["body"].replace("size 2", "size 3"))
    altered = subprocess.run(command, capture_output=True, text=True, timeout=30)

    assert genuine.returncode == 0 and "Signature Verified Successfully" in genuine.stdout
    assert altered.returncode != 0
    assert "1 checkpoints match" in _verify(sink, public_key=str(pem))


def test_checkpoints_are_due_while_the_chain_grows_and_now_and_then_when_it_does_not(sink, settings):
    settings.GRACE_AUDIT_CHECKPOINT_SECONDS = 60
    settings.GRACE_AUDIT_CHECKPOINT_IDLE_SECONDS = 3600
    assert checkpoints.is_due()
    first = _append_and_checkpoint(1)
    at = first.issued_at

    assert checkpoints.issue(only_if_due=True) is None
    assert not checkpoints.is_due(at + timedelta(seconds=61))  # nothing new to vouch for
    assert checkpoints.is_due(at + timedelta(seconds=3601))  # still, now and then
    audit.record("test.more")
    audit.seal()
    assert not checkpoints.is_due(at + timedelta(seconds=59))
    assert checkpoints.is_due(at + timedelta(seconds=61))


def test_a_failing_sink_is_noted_and_the_others_still_get_the_checkpoint(settings, tmp_path):
    (tmp_path / "a-file").write_text("")
    good, bad = f"file://{tmp_path / 'good.jsonl'}", f"file://{tmp_path / 'a-file' / 'under-a-file.jsonl'}"
    settings.GRACE_AUDIT_CHECKPOINT_SINKS = [good, bad]

    checkpoint = _append_and_checkpoint(1)

    assert checkpoint.sinks[good] == "ok"
    assert checkpoint.sinks[bad].startswith("failed: ")
    assert "1 checkpoints match" in _verify(good)
    warning = checkpoints.health()["warning"]
    assert "not written to 1 of 2 sinks" in warning
    assert str(tmp_path) not in warning  # health is public: the admin page names the sink


def test_the_signing_key_comes_from_the_environment_or_a_file(settings, tmp_path):
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    expected = checkpoints.key_id(key.public_key())

    settings.GRACE_AUDIT_SIGNING_KEY = base64.b64encode(seed).decode()
    from_seed = checkpoints.key_id(checkpoints.public_key())
    settings.GRACE_AUDIT_SIGNING_KEY = pem.decode()
    from_pem = checkpoints.key_id(checkpoints.public_key())
    settings.GRACE_AUDIT_SIGNING_KEY = ""
    (tmp_path / "key.pem").write_bytes(pem)
    settings.GRACE_AUDIT_SIGNING_KEY_FILE = str(tmp_path / "key.pem")
    from_file = checkpoints.key_id(checkpoints.public_key())
    settings.GRACE_AUDIT_SIGNING_KEY_FILE = str(tmp_path / "missing.pem")

    assert from_seed == from_pem == from_file == expected
    with pytest.raises(ImproperlyConfigured, match="GRACE_AUDIT_SIGNING_KEY_FILE: cannot read .*missing.pem"):
        checkpoints.signing_key()


def test_without_a_configured_key_one_is_generated_once_readable_only_by_its_owner(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.GRACE_AUDIT_SIGNING_KEY = settings.GRACE_AUDIT_SIGNING_KEY_FILE = ""

    first = checkpoints.key_id(checkpoints.public_key())
    checkpoints._load_signing_key.cache_clear()
    again = checkpoints.key_id(checkpoints.public_key())

    path = tmp_path / "audit_signing_key.pem"
    assert first == again
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert not AuditCheckpoint.objects.filter(body__contains="PRIVATE").exists()


def test_audit_checkpoint_seals_and_signs_on_demand(sink, capsys):
    audit.record("test.event")

    call_command("audit_checkpoint")

    out = capsys.readouterr().out
    assert "sealed 1 entries; chain head at seq 1" in out
    assert f"{sink}: ok" in out
    assert AuditCheckpoint.objects.get().requested_by == "manage.py audit_checkpoint"


def test_a_sink_url_names_a_file_or_a_bucket():
    assert isinstance(sinks.from_url("file:///var/lib/grace/cp.jsonl"), sinks.FileSink)
    assert isinstance(sinks.from_url("/var/lib/grace/cp.jsonl"), sinks.FileSink)
    s3 = sinks.from_url("s3://audit-bucket/grace/prod")
    assert (s3.bucket, s3.prefix) == ("audit-bucket", "grace/prod/")
    for bad in ("file://host/cp.jsonl", "relative.jsonl", "s3:///no-bucket", "file:///a/dir/"):
        with pytest.raises(sinks.SinkError):
            sinks.from_url(bad)
