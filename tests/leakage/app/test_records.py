"""The typed records of ``secagg evaluate`` and the results.json schema they document."""

from __future__ import annotations

import json
import re

from leakage.app import records
from leakage.app.records import EvaluateRecord, RunRecord, Verdicts, colluding_verdict
from leakage.assess import AssessmentRow
from secagg.costs import FIELDS


def _row(observer: str, observable: str, verdict: str) -> AssessmentRow:
    return AssessmentRow(
        "p", observer, observable, "plaintext", "idlg", 30.0, 30.0, 0.9, 1.0, 1.0, 10.0, True,
        verdict, "", 10, 0.1, True, 10, 1,
    )


def test_the_documented_cost_fields_are_the_cost_record() -> None:
    doc = records.__doc__ or ""
    block = doc[doc.index("COSTS = {") : doc.index("}", doc.index("COSTS = {"))]
    assert set(re.findall(r'"(\w+)"', block)) == set(FIELDS)
    assert records.SCHEMA in doc


def test_verdicts_keep_single_servers_and_coalitions_apart() -> None:
    rows = [
        _row("server", "client-0 PlainUpdate", "not exposed"),
        _row("server", "aggregate", "exposed"),
        _row("colluding", "client-0 (joint view)", "exposed"),
    ]
    assert Verdicts.of(rows) == Verdicts("not exposed", "exposed")
    assert colluding_verdict(rows) == "exposed"
    assert colluding_verdict(rows[:2]) is None
    assert Verdicts.of([]) == Verdicts(None, None)


def test_a_round_that_did_not_start_serialises_with_no_costs() -> None:
    run = RunRecord(
        name="x", protocol="x", defense=None, kind="protocol", update="gradient",
        aggregate_kind="sum", config={"clip": 1.0}, config_note="default config",
        threat_model={"keys": "none"}, error="ConfigError: too many bits",
    )
    record = EvaluateRecord(
        created="2026-01-01T00:00:00Z", wall_seconds=1.0, environment={}, settings={},
        originals=(), runs=(run,),
    )
    data = json.loads(record.to_json())
    assert data["schema"] == records.SCHEMA
    assert data["runs"][0]["costs"] is None and data["runs"][0]["rows"] == []
    assert data["runs"][0]["verdicts"] == {"client_messages": None, "aggregate": None}
    assert record.run("x") is run


def test_a_not_exposed_row_says_what_the_same_attack_did_on_the_plaintext() -> None:
    import dataclasses

    row = dataclasses.replace(
        _row("server", "client-0 EncryptedUpdate", "not exposed"), psnr=5.4, baseline_psnr=5.6,
        budget=150, restarts=4, reference_psnr=43.5, reference="plaintext-fedavg",
    ).as_dict()
    assert records.row_sentence(row) == (
        "the same attack at the same budget (150 steps x 4 restarts) recovers the plaintext at "
        "43.5 dB; here it reaches 5.4 dB, random vectors 5.6 dB"
    )
    hard = dict(row, reference_psnr=6.3)
    assert "reaches on the plaintext only 6.3 dB" in records.row_sentence(hard)
    assert "no plaintext run" in records.row_sentence(dict(row, reference_psnr=None))
    assert records.row_sentence(dict(row, verdict="exposed")) == ""
