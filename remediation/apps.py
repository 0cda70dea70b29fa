from django.apps import AppConfig


class RemediationConfig(AppConfig):
    name = "remediation"
    verbose_name = "Remediation"

    def ready(self) -> None:
        # Learning ranks the playbooks remediation owns: the catalogue is passed in, never read by name.
        from learning import services as learning
        from remediation import links, playbooks
        from remediation.actions import load_all

        learning.register_playbook_catalogue(playbooks.catalogue)
        # Every action family registers once, here (before a worker forks): everyone else reads ``registry``.
        load_all()
        # Incident and outcome pages link to runs through grace_site.links: they never name our admin URLs.
        links.register()
