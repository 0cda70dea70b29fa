"""Local actions: SQLite files, PostgreSQL sessions, cache directories, services, HTTP probes.

Importing this package registers every local action in ``remediation.actions.base.registry``.
Everything a local action touches on disk lies under ``GRACE_ALLOWED_ROOTS``.
"""

from remediation.actions.local import cache, http, postgres, services, sqlite  # noqa: F401 - registers the actions
