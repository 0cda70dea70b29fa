"""docs/playbooks.md lists every shipped playbook with what it needs from the inventory, as the code says."""

from pathlib import Path

from incidents.choices import KNOWN_DIAGNOSES
from remediation.defaults import default_playbooks
from remediation.planner import required_inputs

DOC = Path(__file__).resolve().parents[2] / "docs" / "playbooks.md"


def _needs(steps: list) -> str:
    parts = []
    for need in required_inputs(steps):
        if need["resource_kind"]:
            optional = " (read when present)" if "evidence" in need else ""
            parts.append(f"`{need['resource_kind']}` resource{optional}, chosen by label `{need['resource_label']}`")
        parts.extend(f"label `{label}`" for label in need["labels"])
    return "; ".join(dict.fromkeys(parts)) or "nothing"


def _does(spec: dict) -> str:
    if spec.get("escalate_only"):
        gathered = ", ".join(f"`{step['evidence']}`" for step in spec["steps"])
        return f"escalates with evidence: {gathered}" if gathered else "escalates"
    return ", then ".join(f"`{step['action']}`" for step in spec["steps"])


def render() -> str:
    rows = [
        "| diagnosis | playbook | does | tier | needs from the incident's service |",
        "| --- | --- | --- | --- | --- |",
    ]
    shipped = default_playbooks()
    for code in [*KNOWN_DIAGNOSES, "unknown"]:
        for spec in sorted(
            (s for s in shipped if code in s["diagnosis_codes"]),
            key=lambda s: (s.get("escalate_only", False), s["name"]),
        ):
            rows.append(f"| `{code}` | `{spec['name']}` | {_does(spec)} | {spec['tier']} | {_needs(spec['steps'])} |")
    return "\n".join(rows)


def test_the_playbook_page_lists_every_shipped_playbook_as_the_code_declares_it():
    text = DOC.read_text()
    start = text.index("<!-- playbooks table")
    table = text[text.index("\n", start) + 1 : text.index("<!-- end of playbooks table -->")].strip()

    assert table == render()
