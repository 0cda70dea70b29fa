from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    verbose_name = "Governance and audit"

    def ready(self) -> None:
        from approvals import auth_audit  # noqa: F401 - connects the lockout audit receivers
