from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    verbose_name = "Governance and audit"

    def ready(self) -> None:
        from approvals import (
            auth_audit,  # noqa: F401 - connects the lockout audit receivers
            checkpoints,
        )
        from grace_site import health

        # Sealing lag and checkpoints are warnings on /api/health/, never a 503: GRACE heals without them.
        health.register_warning_check("audit", checkpoints.health)
