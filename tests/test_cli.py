from __future__ import annotations

import json

import pytest

from secagg.cli import main


def test_aggregate_json_has_the_documented_keys(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "aggregate",
            "--protocol",
            "plaintext-fedavg",
            "--clients",
            "8",
            "--params",
            "1000",
            "--drop",
            "2",
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["schema"] == "secagg-aggregate/2"
    for key in (
        "protocol",
        "clients",
        "params",
        "dropped",
        "max_abs_error",
        "bytes_up_per_client",
        "bytes_per_param",
        "client_s",
        "server_s",
        "finalize_s",
    ):
        assert key in report
    assert report["dropped"] == [6, 7] and report["included"] == [0, 1, 2, 3, 4, 5]
    assert report["max_abs_error"] <= report["declared_precision"]
    assert 4.0 <= report["bytes_per_param"] < 4.2


def test_unknown_protocol_lists_valid_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["aggregate", "--protocol", "nope"]) == 2
    err = capsys.readouterr().err
    assert "plaintext-fedavg" in err and "UnknownProtocolError" in err


def test_protocols_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["protocols", "--json"]) == 0
    names = [row["name"] for row in json.loads(capsys.readouterr().out)["protocols"]]
    assert "plaintext-fedsgd" in names


def test_bad_numbers_are_typed_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["aggregate", "--protocol", "plaintext-fedsgd", "--drop", "4", "--clients", "4"]) == 2
    assert "--drop" in capsys.readouterr().err
    assert main(["aggregate", "--protocol", "plaintext-fedsgd", "--set", "bogus=1"]) == 2
