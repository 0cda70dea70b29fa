from django.core.management.base import BaseCommand, CommandError

from approvals.audit import verify_chain


class Command(BaseCommand):
    help = "Recompute the audit log's hash chain; exit non-zero naming the first broken seq."

    def handle(self, *args, **options):
        report = verify_chain()
        if not report.ok:
            raise CommandError(
                f"audit chain broken at seq {report.broken_seq}: {report.reason} "
                f"({report.count} events verified before it)"
            )
        self.stdout.write(self.style.SUCCESS(f"audit chain intact: {report.count} events verified"))
