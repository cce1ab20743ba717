"""The terminal verdict table says what budget each verdict rests on."""

from __future__ import annotations

from leakage.app.cli import verdict_table
from leakage.assess import AssessmentRow


def test_each_verdict_line_carries_its_budget() -> None:
    row = AssessmentRow(
        "secagg", "server", "client-0 MaskedInput", "ring", "idlg", 5.4, 5.4, 0.01, 0.0, 0.5,
        5.6, False, "not exposed", "", 1200, 3.0, True, 300, 4,
    ).as_dict()
    lines = verdict_table([row]).splitlines()
    assert "budget" in lines[0]
    assert "300x4" in lines[2] and lines[2].endswith("not exposed")
