"""`manage.py grace_admin`: create the first admin user when there is none (idempotent, audited)."""

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from approvals import audit


class Command(BaseCommand):
    help = (
        "Create an admin user when none exists. GRACE_ADMIN_USER / GRACE_ADMIN_EMAIL / GRACE_ADMIN_PASSWORD "
        "choose its credentials; without a password one is generated and printed once."
    )

    def handle(self, *args, **options):
        self._ensure_admin()

    def _ensure_admin(self) -> None:
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write("admin user: already present")
            return
        username = os.environ.get("GRACE_ADMIN_USER", "admin")
        email = os.environ.get("GRACE_ADMIN_EMAIL", "")
        password = os.environ.get("GRACE_ADMIN_PASSWORD")
        generated = password is None
        if generated:
            password = secrets.token_urlsafe(15)
        with transaction.atomic():
            user = User.objects.create_superuser(username=username, email=email, password=password)
            audit.record("user.admin_created", obj=user, data={"username": username, "generated": generated})
        if generated:
            self.stdout.write(
                self.style.WARNING(f"admin user created: {username} / {password}  (shown once; change it in the admin)")
            )
        else:
            self.stdout.write(f"admin user created: {username} (password from GRACE_ADMIN_PASSWORD)")
