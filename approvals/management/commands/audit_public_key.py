from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from approvals import checkpoints


class Command(BaseCommand):
    help = (
        "Print the public key audit checkpoints are signed with (PEM), for an auditor to verify them "
        "independently; its key id goes to stderr."
    )

    def handle(self, *args, **options):
        try:
            key = checkpoints.public_key()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(checkpoints.public_pem(key), ending="")
        self.stderr.write(f"key id {checkpoints.key_id(key)} (Ed25519)")
