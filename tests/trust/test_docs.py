"""docs/trust.md lists every action with the resource kind it binds to and its tier, as the registry says."""

from pathlib import Path

from remediation.actions import load_all

DOC = Path(__file__).resolve().parents[2] / "docs" / "trust.md"


def render() -> str:
    rows = [
        "| action | family | resource kind | parameters bound from the resource | declared tier | reversible |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for action in load_all().all():
        binds = ", ".join(f"`{param}` ← {source}" for param, source in action.binds.items())
        reversible = "yes" if action.reversible else "no"
        rows.append(
            f"| `{action.name}` | {action.family} | `{action.resource_kind}` | {binds} | {action.tier} | {reversible} |"
        )
    return "\n".join(rows)


def test_the_trust_page_lists_every_action_as_registered():
    text = DOC.read_text()
    start = text.index("<!-- actions table")
    table = text[text.index("\n", start) + 1 : text.index("<!-- end of actions table -->")].strip()

    assert table == render()
