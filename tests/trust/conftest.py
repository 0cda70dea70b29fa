from tests.governance.conftest import _fresh_budgets, make_run, make_user  # noqa: F401 - shared governance fixtures
from tests.incidents.conftest import _fresh_rules, default_rules  # noqa: F401 - shared intake fixtures
from tests.remediation.conftest import allowed_root, wal_rule  # noqa: F401 - shared pipeline fixtures
