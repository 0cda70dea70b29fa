"""Former home of ModelPermissions: the permission classes now live in grace_site.api."""

from grace_site.api import ModelPermissions

__all__ = ["ModelPermissions"]
