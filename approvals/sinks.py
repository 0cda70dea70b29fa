"""Where signed checkpoints go: places outside the database that keep what was written.

A sink is named by a URL (``GRACE_AUDIT_CHECKPOINT_SINKS``, ``verify_audit --checkpoints``):

- ``file:///var/lib/grace/audit-checkpoints.jsonl`` (or a plain absolute path): one JSON
  line per checkpoint, appended with O_APPEND under an exclusive lock and fsynced. Only
  as append-only as the file system lets it be: ``chattr +a``, or ship it elsewhere.
- ``s3://bucket/prefix/``: one object per checkpoint, written with an Object Lock
  retention (``GRACE_AUDIT_S3_LOCK_MODE`` for ``GRACE_AUDIT_S3_RETENTION_DAYS``), so not
  even the account's root can delete or overwrite it in COMPLIANCE mode until the date.
  The bucket must have Object Lock enabled; the put is refused otherwise. AWS settings
  (region, profile, endpoint, timeouts) are the ``GRACE_AWS_*`` ones.

Each record is ``{"body": <signed text>, "signature": <base64>, "key_id": <hex>}``.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

from django.conf import settings


class SinkError(Exception):
    """A sink URL that names no usable place, or a sink that refused a write."""


class FileSink:
    def __init__(self, url: str, path: Path):
        self.url = url
        self.path = path

    def write(self, record: dict, *, size: int, issued_at: datetime) -> None:
        line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # one line at a time, whoever writes
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> Iterator[tuple[str, dict | str]]:
        """Every record as (where, record), or (where, why it is unreadable)."""
        try:
            handle = open(self.path, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return
        with handle:
            for number, line in enumerate(handle, start=1):
                where = f"{self.path}:{number}"
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    yield where, f"not JSON: {exc}"
                    continue
                yield where, record if isinstance(record, dict) else "not a JSON object"


class S3Sink:
    def __init__(self, url: str, bucket: str, prefix: str):
        self.url = url
        self.bucket = bucket
        self.prefix = prefix

    def _client(self):
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(
            profile_name=settings.GRACE_AWS_PROFILE or None, region_name=settings.GRACE_AWS_REGION or None
        )
        config = Config(
            connect_timeout=settings.GRACE_AWS_CONNECT_TIMEOUT,
            read_timeout=settings.GRACE_AWS_READ_TIMEOUT,
            retries={"max_attempts": settings.GRACE_AWS_MAX_ATTEMPTS, "mode": "standard"},
            s3={"addressing_style": "path"} if settings.GRACE_AWS_ENDPOINT_URL else {},
            max_pool_connections=16,
        )
        return session.client("s3", endpoint_url=settings.GRACE_AWS_ENDPOINT_URL or None, config=config)

    def key(self, size: int, issued_at: datetime) -> str:
        # Sorted by size, then time: a listing reads them in the chain's order.
        return f"{self.prefix}{size:020d}-{issued_at.strftime('%Y%m%dT%H%M%S%fZ')}.json"

    def write(self, record: dict, *, size: int, issued_at: datetime) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        body = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
        try:
            self._client().put_object(
                Bucket=self.bucket,
                Key=self.key(size, issued_at),
                Body=body,
                ContentType="application/json",
                ObjectLockMode=settings.GRACE_AUDIT_S3_LOCK_MODE,
                ObjectLockRetainUntilDate=issued_at + timedelta(days=settings.GRACE_AUDIT_S3_RETENTION_DAYS),
            )
        except (BotoCoreError, ClientError) as exc:
            raise SinkError(f"{self.url}: {exc}") from exc

    def read(self) -> Iterator[tuple[str, dict | str]]:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self._client()
        try:
            keys = [
                item["Key"]
                for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
                for item in page.get("Contents", [])
            ]
        except (BotoCoreError, ClientError) as exc:
            raise SinkError(f"{self.url}: {exc}") from exc

        def fetch(key: str) -> tuple[str, dict | str]:
            where = f"s3://{self.bucket}/{key}"
            try:
                response = client.get_object(Bucket=self.bucket, Key=key)
                record = json.loads(response["Body"].read())
            except (BotoCoreError, ClientError) as exc:
                return where, f"unreadable: {exc}"
            except ValueError as exc:
                return where, f"not JSON: {exc}"
            if not isinstance(record, dict):
                return where, "not a JSON object"
            if not response.get("ObjectLockMode"):
                return where, "written without an Object Lock retention"
            return where, record

        with ThreadPoolExecutor(16) as pool:
            yield from pool.map(fetch, keys)


def from_url(url: str) -> FileSink | S3Sink:
    """The sink a URL names; SinkError with a sentence when it names none."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise SinkError(f"checkpoint sink {url!r} names no bucket (s3://bucket/prefix/)")
        prefix = parsed.path.lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return S3Sink(url, parsed.netloc, prefix)
    if parsed.scheme == "file" or (not parsed.scheme and url.startswith("/")):
        path = parsed.path if parsed.scheme else url
        if parsed.scheme and parsed.netloc:
            raise SinkError(f"checkpoint sink {url!r}: a file URL has no host (file:///absolute/path)")
        if not path.startswith("/") or path.endswith("/"):
            raise SinkError(f"checkpoint sink {url!r} must name a file by its absolute path")
        return FileSink(url, Path(path))
    raise SinkError(f"checkpoint sink {url!r} must be file:///absolute/path or s3://bucket/prefix/")


def configured() -> list[FileSink | S3Sink]:
    return [from_url(url) for url in settings.GRACE_AUDIT_CHECKPOINT_SINKS]
