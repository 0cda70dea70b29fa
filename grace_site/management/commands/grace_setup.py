"""Idempotent first-run set-up: every installed app's shipped defaults, then an admin user.

The project's command: it names no app. Each app that ships defaults has a ``defaults`` module with
``install() -> int`` (rows created); they run in INSTALLED_APPS order, each in its own transaction.
"""

import importlib

from django.apps import apps
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction


class Command(BaseCommand):
    help = (
        "Load GRACE's shipped defaults (safe to run again) and create an admin user when none exists "
        "(see `manage.py grace_admin --help`)."
    )

    def handle(self, *args, **options):
        for app in apps.get_app_configs():
            try:
                module = importlib.import_module(f"{app.name}.defaults")
            except ModuleNotFoundError as exc:
                if exc.name != f"{app.name}.defaults":
                    raise
                continue
            if not callable(getattr(module, "install", None)):
                continue
            with transaction.atomic():
                created = module.install()
            self.stdout.write(f"defaults for {app.label}: {created} created")
        call_command("grace_admin", stdout=self.stdout, stderr=self.stderr)
