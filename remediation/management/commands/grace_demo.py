"""`manage.py grace_demo`: the whole heal loop against a running GRACE, in one command.

Creates a real SQLite database under var/demo whose WAL grows (a connection
stays open, as an application's would), raises an incident through the public
API, and prints the run's timeline live until it ends. It finds GRACE where
`make run` started it (the URL `make run` writes to $GRACE_VAR_DIR/web-url),
says so when the run waits for an approval and how to give it, and exits
non-zero unless the run SUCCEEDED.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from approvals import tokens
from approvals.models import ApiToken
from remediation.choices import RunStatus

DEMO_SERVICE = "demo-db"
URL_FILE = "web-url"  # written by scripts/run.sh (`make run`) into GRACE_VAR_DIR


def default_url() -> str:
    """Where GRACE answers: GRACE_PORT when it is set, else the URL `make run` wrote, else the default port."""
    if os.environ.get("GRACE_PORT"):
        return f"http://127.0.0.1:{settings.GRACE_PORT}"
    written = Path(settings.VAR_DIR) / URL_FILE
    if written.is_file() and written.read_text().strip().startswith("http"):
        return written.read_text().strip()
    return f"http://127.0.0.1:{settings.GRACE_PORT}"


class Command(BaseCommand):
    help = "Grow a real SQLite WAL, raise an incident through the API, and follow GRACE healing it."

    def add_arguments(self, parser):
        parser.add_argument(
            "--url",
            default=None,
            help=f"GRACE's base URL (default: $GRACE_PORT, else what `make run` wrote to "
            f"$GRACE_VAR_DIR/{URL_FILE}, else port {settings.GRACE_PORT})",
        )
        parser.add_argument(
            "--token",
            default=os.environ.get("GRACE_API_TOKEN", ""),
            help="API token (default: the first superuser's, created if needed)",
        )
        parser.add_argument("--wal-mib", type=int, default=4, help="grow the WAL to at least this many MiB")
        parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the run to end")

    def handle(self, *args, **opts):
        url = (opts["url"] or default_url()).rstrip("/")
        session = requests.Session()
        session.headers["Authorization"] = f"Token {opts['token'] or self._token()}"
        try:
            health = session.get(f"{url}/api/health/", timeout=5).json()
        except requests.RequestException as exc:
            raise CommandError(f"GRACE does not answer at {url} ({exc}); start it with `make run`") from None
        if health.get("failing"):
            self.stdout.write(self.style.WARNING(f"health reports failing components: {health['failing']}"))

        db = self._demo_db()
        keeper, wal = self._grow_wal(db, opts["wal_mib"] * 1024 * 1024)
        self.stdout.write(f"demo database {db}: WAL is {wal / 1048576:.1f} MiB")
        self._register(session, url, db)

        response = session.post(
            f"{url}/api/incidents/?wait=true",  # the synchronous mode: the answer is the incident
            json={
                "service": DEMO_SERVICE,
                "severity": "warning",
                "title": f"{DEMO_SERVICE}: SQLite WAL is {wal / 1048576:.1f} MiB",
                "labels": {"alertname": "SQLiteWALBloat", "resource": "db", "wal_bytes": str(wal)},
            },
            timeout=10,
        )
        if response.status_code not in (200, 201):
            raise CommandError(f"the API refused the incident: {response.status_code} {response.text}")
        incident = response.json()
        self.stdout.write(f"incident #{incident['id']} diagnosed {incident['diagnosis']['code']!r}")

        try:
            run = self._follow(session, url, incident["id"], opts["timeout"])
        finally:
            keeper.close()
        wal_after = Path(f"{db}-wal").stat().st_size if Path(f"{db}-wal").exists() else 0
        self.stdout.write(f"details: {url}/admin/remediation/healrun/{run['id']}/ and {url}/api/runs/{run['id']}/")
        if run["status"] != RunStatus.SUCCEEDED:
            raise CommandError(f"run #{run['id']} ended {run['status']}: {run.get('status_reason') or 'no reason'}")
        self.stdout.write(
            self.style.SUCCESS(f"run #{run['id']} ended {run['status']}: WAL now {wal_after / 1048576:.2f} MiB")
        )

    def _register(self, session: requests.Session, url: str, db: Path) -> None:
        """Put the demo database in the inventory through the API, as a user would: GRACE acts only on
        inventory resources."""
        api = f"{url}/api/inventory"
        service = {"name": DEMO_SERVICE, "owner": "grace_demo", "environment": "demo", "tier_floor": 1}
        found = session.get(f"{api}/services/", params={"name": DEMO_SERVICE}, timeout=10).json()["results"]
        if not any(s["name"] == DEMO_SERVICE for s in found):
            self._check(session.post(f"{api}/services/", json=service, timeout=10), "register the demo service")
        resource = {"service": DEMO_SERVICE, "name": "db", "kind": "sqlite", "target": str(db)}
        existing = session.get(f"{api}/resources/", params={"service__name": DEMO_SERVICE}, timeout=10).json()
        current = next((r for r in existing["results"] if r["name"] == "db"), None)
        if current is None:
            answer = session.post(f"{api}/resources/", json=resource, timeout=10)
        else:
            answer = session.patch(f"{api}/resources/{current['id']}/", json={"target": str(db)}, timeout=10)
        self._check(answer, "register the demo database")
        self.stdout.write(f"inventory: service {DEMO_SERVICE}, resource db -> {db}")

    def _check(self, response: requests.Response, what: str) -> None:
        if response.status_code >= 300:
            raise CommandError(f"could not {what}: {response.status_code} {response.text[:500]}")

    def _token(self) -> str:
        """A fresh API token of the first superuser, named grace_demo (the previous one is revoked)."""
        user = get_user_model().objects.filter(is_superuser=True).order_by("pk").first()
        if user is None:
            raise CommandError("no superuser exists: run `make run` (it creates one) or pass --token")
        for old in ApiToken.objects.filter(user=user, name="grace_demo"):
            tokens.revoke(old, actor="system:grace_demo")
        return tokens.issue(user, name="grace_demo", actor="system:grace_demo")[1]

    def _demo_db(self) -> Path:
        demo = Path(settings.VAR_DIR) / "demo"
        roots = [Path(r).resolve() for r in settings.GRACE_ALLOWED_ROOTS]
        if not any(demo.resolve().is_relative_to(root) for root in roots):
            raise CommandError(f"{demo} is not under GRACE_ALLOWED_ROOTS ({', '.join(map(str, roots))})")
        demo.mkdir(parents=True, exist_ok=True)
        return demo / f"demo-{int(time.time())}.sqlite3"

    def _grow_wal(self, db: Path, target: int) -> tuple[sqlite3.Connection, int]:
        keeper = sqlite3.connect(db)  # stays open, so the WAL is not checkpointed on close
        keeper.execute("PRAGMA journal_mode=WAL")
        keeper.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, body BLOB)")
        keeper.commit()
        writer = sqlite3.connect(db)
        writer.execute("PRAGMA wal_autocheckpoint=0")
        wal = Path(f"{db}-wal")
        while not wal.exists() or wal.stat().st_size < target:
            with writer:
                writer.executemany("INSERT INTO events (body) VALUES (?)", ((os.urandom(1024),) for _ in range(500)))
        writer.close()
        return keeper, wal.stat().st_size

    def _follow(self, session: requests.Session, url: str, incident_id: int, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        shown = 0
        run = None
        told = False
        while time.monotonic() < deadline:
            if run is None:
                runs = session.get(f"{url}/api/runs/", params={"incident": incident_id}, timeout=5).json()["results"]
                run = runs[0] if runs else None
            if run is not None:
                run = session.get(f"{url}/api/runs/{run['id']}/", timeout=5).json()
                for event in run["timeline"][shown:]:
                    arrow = f"{event['from_status'] or '·'} -> {event['to_status']}" if event["to_status"] else "note"
                    self.stdout.write(f"  {event['at'][11:23]}  {arrow:<32} {event['note']}")
                shown = len(run["timeline"])
                if run["status"] in RunStatus.TERMINAL:
                    return run
                if run["status"] == RunStatus.AWAITING_APPROVAL and not told:
                    told = self._tell_how_to_approve(session, url, run, deadline)
            time.sleep(0.2)
        if run is None:
            raise CommandError(
                f"no run started for incident #{incident_id} within {timeout} s: is a Celery worker running? "
                f"(`make run` starts one; {url}/api/health/ shows it)"
            )
        if run["status"] == RunStatus.AWAITING_APPROVAL:
            raise CommandError(
                f"run #{run['id']} still waits for approval after {timeout} s; approve it and run the demo again "
                "with a longer --timeout, or follow it in the admin"
            )
        raise CommandError(
            f"run #{run['id']} is still {run['status']} after {timeout} s: is a Celery worker running? "
            f"({url}/api/health/ shows it)"
        )

    def _tell_how_to_approve(self, session: requests.Session, url: str, run: dict, deadline: float) -> bool:
        """The run waits for people: say who may approve it, where, and how long the demo keeps waiting."""
        found = session.get(f"{url}/api/approvals/", params={"run": run["id"], "status": "pending"}, timeout=5)
        pending = found.json().get("results", []) if found.status_code == 200 else []
        if not pending:
            return False  # the request is being opened: next poll
        request = pending[0]
        left = max(0, int(deadline - time.monotonic()))
        needs = request.get("required_approvals", 1)
        self.stdout.write(
            self.style.WARNING(
                f"run #{run['id']} waits for approval: tier {request.get('tier')}, {needs} approval(s) needed "
                f"(request #{request['id']}). Approve it, as a user with the approver permission who did not raise "
                f"this incident, in the admin:\n    {url}/admin/approvals/approvalrequest/{request['id']}/change/\n"
                f"  or with the API:\n    curl -X POST -H 'Authorization: Token <an approver's token>' "
                f"-H 'Content-Type: application/json' -d '{{\"reason\": \"demo\"}}' "
                f"{url}/api/approvals/{request['id']}/approve/\n"
                f"  Waiting {left} s more (--timeout)."
            )
        )
        return True
