"""`manage.py grace_inventory apply FILE.yaml [--dry-run] [--prune]` and `manage.py grace_inventory show`."""

from __future__ import annotations

import sys

import yaml
from django.core.management.base import BaseCommand, CommandError

from incidents import inventory
from incidents.models import Service


class Command(BaseCommand):
    help = (
        "Load the service inventory from a declarative YAML catalogue (kept in git like Backstage's "
        "catalog-info.yaml), or show it. See docs/trust.md and docs/inventory.example.yaml."
    )

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="verb", required=True)
        apply = sub.add_parser("apply", help="make the inventory match the catalogue (idempotent)")
        apply.add_argument("file", help="the catalogue (YAML); '-' reads standard input")
        apply.add_argument("--dry-run", action="store_true", help="say what would change, change nothing")
        apply.add_argument("--prune", action="store_true", help="delete services and resources not in the file")
        sub.add_parser("show", help="print the inventory as a catalogue")

    def handle(self, *args, **opts):
        if opts["verb"] == "show":
            return self._show()
        document = self._load(opts["file"])
        try:
            report = inventory.apply_catalogue(
                document, prune=opts["prune"], dry_run=opts["dry_run"], actor="system:grace_inventory"
            )
        except inventory.CatalogueError as exc:
            raise CommandError(
                f"{opts['file']}: nothing was changed; fix these first:\n  " + "\n  ".join(exc.errors)
            ) from None
        verb = "would " if opts["dry_run"] else ""
        for label, items in (("create", report.created), ("update", report.updated), ("delete", report.deleted)):
            for item in items:
                self.stdout.write(f"{verb}{label} {item}")
        summary = (
            f"{len(report.created)} to create, {len(report.updated)} to update, {len(report.deleted)} to delete, "
            f"{report.unchanged} unchanged"
        )
        self.stdout.write(self.style.SUCCESS(("dry run: " if opts["dry_run"] else "") + summary))

    def _load(self, path: str):
        try:
            text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()  # noqa: SIM115
        except OSError as exc:
            raise CommandError(f"{path}: cannot be read: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise CommandError(f"{path}: is not UTF-8 text ({exc.reason})") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CommandError(f"{path}: is not valid YAML: {exc}") from None

    def _show(self) -> None:
        services = []
        for service in Service.objects.prefetch_related("resources").order_by("name"):
            entry = inventory.service_data(service)
            entry["resources"] = [
                {"name": r.name, "kind": r.kind, "target": r.target, **r.scope, **({"host": r.host} if r.host else {})}
                for r in service.resources.order_by("name")
            ]
            services.append(entry)
        self.stdout.write(yaml.safe_dump({"services": services}, sort_keys=False))
