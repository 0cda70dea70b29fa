from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from approvals import audit, checkpoints


class Command(BaseCommand):
    help = "Seal every committed audit entry now, then sign a checkpoint of the chain's head into every sink."

    def handle(self, *args, **options):
        sealed = audit.seal(wait=True)
        try:
            checkpoint = checkpoints.issue(requested_by="manage.py audit_checkpoint")
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"sealed {sealed.sealed} entries; chain head at seq {sealed.head}")
        for url, result in sorted(checkpoint.sinks.items()):
            self.stdout.write(f"  {url}: {result}")
        self.stdout.write(checkpoint.body, ending="")
        if any(result != "ok" for result in checkpoint.sinks.values()):
            raise CommandError("the checkpoint could not be written to every sink (see above)")
