from django.core.management.base import BaseCommand

from learning import services


class Command(BaseCommand):
    help = "Recompute every playbook statistics row from the recorded outcomes (audited)."

    def handle(self, *args, **options):
        rows = services.rebuild_statistics(actor="system:rebuild_playbook_stats")
        self.stdout.write(f"rebuilt {rows} playbook statistics rows")
