"""The run state machine: one table of legal moves, enforced by transition() and shown in the docs."""

from pathlib import Path

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from incidents.models import Incident
from remediation import state
from remediation.choices import RunStatus
from remediation.models import HealRun, RunEvent
from remediation.services import transition

DOC = Path(__file__).resolve().parents[2] / "docs" / "pipeline.md"
S = RunStatus


def _run(status: str) -> HealRun:
    now = timezone.now()
    incident = Incident.objects.create(
        fingerprint=f"fp-{status}-{now.timestamp()}", source="api", title="t", first_seen=now, last_seen=now
    )
    return HealRun.objects.create(incident=incident, status=status, finished_at=now if status in S.TERMINAL else None)


def test_the_docs_show_the_transition_table_as_the_code_has_it():
    text = DOC.read_text()
    start = text.index("<!-- transition table")
    shown = text[text.index("\n", start) + 1 : text.index("<!-- end of transition table -->")].strip()

    assert shown == state.table()


def test_final_states_go_nowhere_except_an_operator_rollback_of_a_success():
    for status in S.TERMINAL:
        expected = {S.ROLLING_BACK} if status == S.SUCCEEDED else set()
        assert set(state.MOVES[status]) == expected, status


@pytest.mark.django_db
def test_transition_refuses_a_move_the_table_does_not_list_and_writes_nothing():
    run = _run(S.PLANNED)

    with pytest.raises(state.IllegalTransition, match="cannot move from PLANNED to SUCCEEDED"):
        transition(run.pk, S.PLANNED, S.SUCCEEDED)

    run.refresh_from_db()
    assert run.status == S.PLANNED
    assert not RunEvent.objects.filter(run=run).exists()


@pytest.mark.django_db
def test_finished_at_follows_the_run_into_and_out_of_a_final_state():
    run = _run(S.VERIFYING)
    transition(run.pk, S.VERIFYING, S.SUCCEEDED, advance=False)
    run.refresh_from_db()
    assert run.finished_at is not None

    transition(run.pk, S.SUCCEEDED, S.ROLLING_BACK, advance=False)  # an operator rollback
    run.refresh_from_db()
    assert run.finished_at is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    "changes",
    [{"tier": 0}, {"tier": 4}, {"family": "mainframe"}, {"status": S.SUCCEEDED}, {"finished_at": "2026-01-01T00:00Z"}],
)
def test_the_database_refuses_a_run_row_that_breaks_the_invariants(changes):
    run = _run(S.PLANNED)

    with pytest.raises(IntegrityError), transaction.atomic():
        HealRun.objects.filter(pk=run.pk).update(**changes)
