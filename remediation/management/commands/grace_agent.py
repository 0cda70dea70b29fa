"""`manage.py grace_agent`: a light worker that only acts on this host's resources (heal.local.<GRACE_HOST>)."""

import os
import sys

from django.conf import settings
from django.core.management.base import BaseCommand

from remediation.fleet import host_queue


class Command(BaseCommand):
    help = (
        "Run this host's agent: a Celery worker consuming only heal.local.<GRACE_HOST> (the stages that snapshot, "
        "change, verify and roll back this machine's resources), for machines that should run nothing else. "
        "Equivalent to: celery -A grace_site worker -Q heal.local.<GRACE_HOST> -n agent@<GRACE_HOST>"
    )

    def add_arguments(self, parser):
        parser.add_argument("--concurrency", "-c", type=int, default=1, help="worker processes (default 1)")
        parser.add_argument("--loglevel", "-l", default="info")

    def handle(self, *args, **opts):
        host = settings.GRACE_HOST
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "grace_site",
            "worker",
            "-Q",
            host_queue(host),
            "-n",
            f"agent@{host}",
            "-c",
            str(opts["concurrency"]),
            "-l",
            opts["loglevel"],
        ]
        self.stdout.write(f"agent of host {host}: {' '.join(argv[1:])}")
        self.stdout.flush()
        os.execv(sys.executable, argv)  # noqa: S606 - replaces this process with the worker (argv list)
