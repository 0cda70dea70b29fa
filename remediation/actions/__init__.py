"""Action families. Importing this package registers every action."""

from importlib import import_module

from remediation.actions.base import registry

FAMILY_MODULES = (
    "remediation.actions.local",
    "remediation.actions.aws",
    "remediation.actions.docker",
    "remediation.actions.kubernetes",
)


def load_all():
    """Import every family (their actions register themselves); RemediationConfig.ready() does it once."""
    for module in FAMILY_MODULES:
        try:
            import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    return registry


__all__ = ["registry", "load_all"]
