"""The import rules of DESIGN.md hold in the code: imports point one way, and no string stands in for an
import (another app's model through get_model, its status values, its admin URLs)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from remediation.choices import RunStatus

ROOT = Path(__file__).resolve().parents[1]
APPS = ("grace_site", "approvals", "incidents", "remediation", "learning")
# What each may import of GRACE's (grace_site, the ground floor, is open to all).
MAY_IMPORT = {
    "grace_site": set(),
    "approvals": {"grace_site"},
    "incidents": {"grace_site", "approvals.audit"},
    "learning": {"grace_site", "approvals.audit", "incidents"},
    "remediation": {"grace_site", "approvals", "incidents", "learning"},
}


def sources(app: str) -> list[Path]:
    return [p for p in (ROOT / app).rglob("*.py") if "migrations" not in p.parts]


def grace_imports(path: Path) -> set[str]:
    """Every GRACE module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] in APPS)
    return found


def allowed(app: str, module: str) -> bool:
    if module.split(".")[0] == app:
        return True
    return any(module == rule or module.startswith(rule + ".") for rule in MAY_IMPORT[app]) or any(
        rule.startswith(module + ".")
        for rule in MAY_IMPORT[app]  # "from approvals import audit"
    )


@pytest.mark.parametrize("app", APPS)
def test_imports_point_one_way(app):
    wrong = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in sources(app)
        for module in grace_imports(path)
        if not allowed(app, module)
    }

    assert not wrong, f"{app} may import only {sorted(MAY_IMPORT[app])}: " + "; ".join(sorted(wrong))


def _literals(path: Path) -> list[str]:
    return [
        node.value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


@pytest.mark.parametrize("app", [a for a in APPS if a != "remediation"])
def test_no_string_stands_in_for_an_import(app):
    """get_model of an app it may not import, run status values, and admin URLs of apps it may not import."""
    forbidden_apps = [other for other in APPS if other != app and not allowed(app, other)]
    patterns = [re.compile(rf"admin[:/]{other}[_/]") for other in forbidden_apps]
    statuses = {status for status in RunStatus.values if "_" in status or len(status) > 8}  # the distinctive ones
    wrong = []
    for path in sources(app):
        text = path.read_text()
        for other in forbidden_apps:
            if re.search(rf"get_model\(\s*[\"']{other}[\"'.]", text):
                wrong.append(f"{path.relative_to(ROOT)}: get_model of {other}")
        for literal in _literals(path):
            if literal in statuses:
                wrong.append(f"{path.relative_to(ROOT)}: run status {literal!r}")
            if any(pattern.search(literal) for pattern in patterns):
                wrong.append(f"{path.relative_to(ROOT)}: admin URL {literal!r}")

    assert not wrong, "; ".join(wrong)
