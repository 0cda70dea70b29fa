from django.apps import AppConfig


class IncidentsConfig(AppConfig):
    name = "incidents"
    verbose_name = "Incidents"

    def ready(self) -> None:
        from grace_site import health
        from incidents import intake

        # The intake backlog is a warning on /api/health/, never a 503: accepted deliveries are stored.
        health.register_warning_check("intake", intake.health)
