from tests.remediation.conftest import allowed_root  # noqa: F401 - shared pipeline fixtures
