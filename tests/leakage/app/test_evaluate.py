"""``secagg evaluate --quick`` on a tiny model: the report and results.json as documented."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
import torch

import protocols
from secagg.cli import main

RUN_KEYS = {
    "name",
    "protocol",
    "defense",
    "kind",
    "update",
    "aggregate_kind",
    "config",
    "config_note",
    "threat_model",
    "error",
    "costs",
    "defense_info",
    "rows",
    "uniformity",
    "notes",
    "verdicts",
}
ROW_KEYS = {
    "protocol",
    "observer",
    "observable",
    "kind",
    "attack",
    "psnr",
    "psnr_mean",
    "ssim",
    "label_accuracy",
    "structure",
    "baseline_psnr",
    "beats_random",
    "verdict",
    "reason",
    "iterations",
    "seconds",
    "full_attack",
    "budget",
    "restarts",
    "note",
    "stopped",
    "clients",
    "reference_psnr",
    "reference",
    "attacked_as",
}
COST_KEYS = {
    "client_s",
    "client_offline_s",
    "server_s",
    "finalize_s",
    "setup_s",
    "bytes_up_per_client",
    "bytes_down_per_client",
    "bytes_per_param",
    "expansion_over_float32",
    "total_bytes",
    "max_abs_error",
    "declared_precision",
}


class _Figures(HTMLParser):
    """Collects, per ``figure data-protocol``, the number of <img> inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.images: dict[str, int] = {}
        self.current: str | None = None
        self.all_images = 0
        self.external: list[str | None] = []

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        if tag == "figure" and "data-protocol" in values:
            self.current = values["data-protocol"]
            self.images[self.current] = 0
        if tag == "img":
            self.all_images += 1
            if not values.get("src", "").startswith("data:image/png;base64,"):
                self.external.append(values.get("src"))
            if self.current is not None:
                self.images[self.current] += 1

    def handle_endtag(self, tag):
        if tag == "figure":
            self.current = None


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    threads = torch.get_num_threads()
    status = main(
        [
            "evaluate",
            "--quick",
            "--model",
            "mlp",
            "--width",
            "8",
            "--resolution",
            "4",
            "--clients",
            "2",
            "--cost-sizes",
            "200",
            "--defenses",
            "fp16",
            # iDLG only: at 4x4 pixels Inverting Gradients' TV prior alone lands near the
            # 20 dB threshold (a PartialMessage of random bytes reached 20.0 dB in CI at
            # 0bfd304), and rows at or above it get no random baseline (README Known limits).
            "--attacks",
            "idlg",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    torch.set_num_threads(threads)
    assert status == 0
    return out


def test_report_is_html_with_one_image_per_protocol(report):
    text = (report / "report.html").read_text(encoding="utf-8")
    parser = _Figures()
    parser.feed(text)
    parser.close()
    assert text.startswith("<!DOCTYPE html>") and "<svg" in text
    for name in protocols.available():
        assert parser.images.get(name, 0) >= 1, f"no image for {name}"
    assert parser.images.get("plaintext-fedsgd + fp16", 0) >= 1
    assert not parser.external  # self-contained: every image inlined


def test_results_json_matches_the_schema(report):
    record = json.loads((report / "results.json").read_text())
    assert record["schema"] == "secagg-evaluate/2"
    assert {
        "created",
        "environment",
        "settings",
        "originals",
        "runs",
        "rows",
        "cost_curve",
        "cost_curve_notes",
        "wall_seconds",
    } <= set(record)
    names = [run["name"] for run in record["runs"]]
    assert names == [*protocols.available(), "plaintext-fedsgd + fp16"]
    for run in record["runs"]:
        assert set(run) == RUN_KEYS
        assert set(run["costs"]) == COST_KEYS
        assert set(run["verdicts"]) == {"client_messages", "aggregate"}
        for row in run["rows"]:
            assert set(row) == ROW_KEYS
            assert row["verdict"] in ("exposed", "not exposed")
    assert record["rows"] == [row for run in record["runs"] for row in run["rows"]]
    by_name = {run["name"]: run for run in record["runs"]}
    assert by_name["plaintext-fedsgd"]["verdicts"]["client_messages"] == "exposed"
    for name in protocols.available():
        if not protocols.get(name).is_baseline:
            assert by_name[name]["verdicts"]["client_messages"] == "not exposed", name
    # Every row of a protocol that is not a baseline carries what the same attack at the
    # same budget reached on the plaintext of the same clients (the baseline run's row).
    plain = {run["aggregate_kind"]: run for run in record["runs"] if run["name"].startswith("plaintext-")
             and run["defense"] is None}
    for run in record["runs"]:
        if run["name"].startswith("plaintext-") and run["defense"] is None:
            continue
        reference = plain["sum" if run["defense"] else run["aggregate_kind"]]
        by_key = {(r["attack"], tuple(r["clients"])): r for r in reference["rows"]}
        for row in run["rows"]:
            match = by_key[(row["attack"], tuple(row["clients"]))]
            assert row["reference"] == reference["name"]
            assert row["reference_psnr"] == match["psnr"]
            assert (row["budget"], row["restarts"]) == (match["budget"], match["restarts"])
    # A coalition's decryption or a revealed sum that is the plaintext to within fixed-point
    # precision takes the row it was attacked as (same attack, same result); a defence never does.
    rows = {(r["protocol"], r["observer"], r["observable"], r["attack"]): r for r in record["rows"]}
    shared = [r for r in record["rows"] if r["attacked_as"]]
    assert shared
    for row in shared:
        assert by_name[row["protocol"]]["defense"] is None
        run, observer, rest = row["attacked_as"].split(": ", 2)
        original = rows[(run, observer, rest.split(" (relative difference")[0], row["attack"])]
        assert not original["attacked_as"]
        assert (row["psnr"], row["iterations"], row["clients"]) == (
            original["psnr"], original["iterations"], original["clients"])
    assert record["settings"]["plateau"] > 0
    assert {p["protocol"] for p in record["cost_curve"]} == set(protocols.available())
    for point in record["cost_curve"]:
        assert set(point) == {"protocol", "n_params", "n_clients", "config_note"} | COST_KEYS
    assert len(record["originals"]) == 2
