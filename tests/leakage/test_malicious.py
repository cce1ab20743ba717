"""The deviating server's models, their read-backs, vetting, and runs through real rounds.

Small and seeded (16x16 images, few clients, few bins); the issue's full-size figures
(16 clients x batch 8 at 32x32, 256 bins) are the slow tests and ``benchmarks.malicious``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from leakage.app.malicious import MaliciousSettings, population, recovered_count, run_malicious
from leakage.attacks import ATTACKS, Applicability, client_gradients, client_weight_update, run_attack
from leakage.data import load_embedded
from leakage.errors import AttackConfigError
from leakage.malicious import (
    ImprintSpec,
    TrapSpec,
    expected_imprint_recoveries,
    expected_imprint_recoveries_drawn,
    imprint_edges,
    imprint_gap_probabilities,
    imprint_model,
    imprint_statistic,
    inconsistent_models,
    suppressed_coordinates,
    suppressed_model,
    trap_model,
    trusted_view,
)
from leakage.models import MODEL_NAMES, build_model
from leakage.vetting import SuspiciousModelError, check_model, vet, vet_structure

SIDE = 16
SHAPE = (3, SIDE, SIDE)


@pytest.fixture(scope="module")
def pool() -> torch.Tensor:
    data = load_embedded(SIDE)
    return torch.cat([data.images, data.images.flip(-1)])


def _mean_gradient(model: torch.nn.Module, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    total = None
    for images in batches:
        labels = torch.zeros(images.shape[0], dtype=torch.long)
        gradient = client_gradients(model, images, labels)
        total = gradient if total is None else [a + b for a, b in zip(total, gradient)]
    assert total is not None
    return [t / len(batches) for t in total]


def _singletons(model: torch.nn.Module, images: torch.Tensor, bins: int) -> int:
    """Images alone in a readable gap of the model's bins (the analysis the count follows)."""
    edges = imprint_edges(model).numpy()
    gaps = np.searchsorted(edges, imprint_statistic(model, images).numpy())
    counts = np.bincount(gaps, minlength=edges.size + 1)
    return int(sum(1 for g in gaps if 1 <= g <= bins and counts[g] == 1))


@pytest.mark.parametrize("structure", ["sparse", "cumulative"])
def test_imprint_reads_back_every_image_alone_in_its_gap_from_a_mean_of_clients(
    pool: torch.Tensor, structure: str
) -> None:
    base = build_model("lenet", image_size=SIDE, seed=0)
    model = imprint_model(base, pool, ImprintSpec(bins=64, structure=structure))
    images = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(1))[:32]]
    gradient = _mean_gradient(model, list(images.split(4)))  # 8 clients x batch 4
    result = run_attack("imprint", model, gradient, input_shape=SHAPE, num_classes=10, batch_size=32)
    count, best = recovered_count(result.images, images, 30.0)
    alone = _singletons(model, images, 64)
    assert alone >= 10
    # every singleton comes back; a collision with one dominant image can add a few
    assert alone <= count <= alone + 3
    assert max(best) > 60.0


def test_expected_recoveries_formula_matches_a_simulated_draw(pool: torch.Tensor) -> None:
    model = imprint_model(build_model("lenet", image_size=SIDE), pool, ImprintSpec(bins=64))
    values = imprint_statistic(model, pool)
    counts = np.round(imprint_gap_probabilities(imprint_edges(model), values) * len(pool)).astype(int)
    expected = expected_imprint_recoveries_drawn(32, counts.tolist(), 64)
    edges = imprint_edges(model).numpy()
    gaps = np.searchsorted(edges, values.numpy())
    seen = []
    for seed in range(300):
        drawn = gaps[np.random.default_rng(seed).permutation(len(pool))[:32]]
        counts_drawn = np.bincount(drawn, minlength=edges.size + 1)
        seen.append(sum(1 for g in drawn if 1 <= g <= 64 and counts_drawn[g] == 1))
    assert abs(np.mean(seen) - expected) < 0.05 * expected
    assert expected_imprint_recoveries(128, [1 / 257] * 257, 256) == pytest.approx(77.71, abs=0.01)


def test_trap_rows_trap_single_images(pool: torch.Tensor) -> None:
    base = build_model("lenet", image_size=SIDE, seed=0)
    model = trap_model(base, SHAPE, TrapSpec(rows=256, rate=1 / 32), pool)
    images = pool[:32]
    gradient = _mean_gradient(model, list(images.split(4)))
    result = run_attack("trap", model, gradient, input_shape=SHAPE, num_classes=10, batch_size=32)
    count, best = recovered_count(result.images, images, 30.0)
    assert count >= 3
    assert max(best) > 60.0


def test_read_backs_apply_only_to_their_block(pool: torch.Tensor) -> None:
    base = build_model("lenet", image_size=SIDE)
    imprint = imprint_model(base, pool, ImprintSpec(bins=8))
    trap = trap_model(base, SHAPE, TrapSpec(rows=8))
    assert ATTACKS["imprint"].applies(Applicability(imprint, 32))
    assert not ATTACKS["imprint"].applies(Applicability(trap, 32))
    assert not ATTACKS["imprint"].applies(Applicability(base, 1))
    assert ATTACKS["trap"].applies(Applicability(trap, 32))
    assert not ATTACKS["trap"].applies(Applicability(base, 1))
    with pytest.raises(AttackConfigError, match="malicious block"):
        run_attack(
            "imprint",
            base,
            [torch.zeros_like(p) for p in base.parameters()],
            input_shape=SHAPE,
            num_classes=10,
            batch_size=1,
        )


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_suppressed_models_move_only_the_classifier_bias(pool: torch.Tensor, name: str) -> None:
    model = build_model(name, image_size=SIDE, seed=0)
    silent = suppressed_model(model)
    gradient = torch.cat([g.flatten() for g in client_gradients(silent, pool[:4], torch.arange(4))]).numpy()
    mask = suppressed_coordinates(silent)
    assert mask.sum() == 10
    assert np.abs(gradient[~mask]).max() < 1e-12
    assert np.abs(gradient[mask]).max() > 0.05  # "the last bias still moves"
    models = inconsistent_models(model, 3, target=1)
    assert models[1] is model and models[0] is models[2] is not model


def test_trusted_view_is_the_same_function_without_the_bias_parameter() -> None:
    model = build_model("lenet", image_size=SIDE, seed=0)
    view, vector = trusted_view(
        model, np.arange(sum(p.numel() for p in model.parameters()), dtype=np.float64)
    )
    x = torch.rand(2, *SHAPE)
    assert torch.equal(view(x), model(x))
    assert vector.size == sum(p.numel() for p in view.parameters())
    # gradient matching runs on the view (the fixed bias is no parameter to match)
    result = run_attack("idlg", view, [torch.zeros_like(p) for p in view.parameters()], input_shape=SHAPE,
                        num_classes=10, batch_size=1, iterations=2, device="cpu")  # fmt: skip
    assert result.images.shape == (1, *SHAPE)


def test_inconsistency_isolates_the_target_through_two_server() -> None:
    settings = MaliciousSettings(
        attack="inconsistency",
        protocol="two-server",
        clients=3,
        batch=1,
        model="mlp",
        resolution=8,
        target=2,
        attacks=("analytic",),
        quick=True,
    )
    row = run_malicious(settings)["row"]
    assert row["error"] is None and row["readers"] == "server"
    assert row["target_cosine_trusted"] > 0.9999
    # the suppressed clients' classifier-bias gradients are still in the sum
    assert 0.9 < row["target_cosine"] < row["target_cosine_trusted"]
    assert row["target_psnr"] > 40.0 and row["plaintext_psnr"] > 40.0
    assert row["recovered"] == 1 and row["verdict"] == "exposed"


def test_imprint_through_secagg_recovers_what_the_plaintext_sum_gives() -> None:
    rows = {
        name: run_malicious(
            MaliciousSettings(
                attack="imprint", protocol=name, clients=4, batch=4, resolution=SIDE, bins=64, quick=True
            )
        )["row"]
        for name in ("plaintext-fedsgd", "secagg")
    }
    assert rows["secagg"]["error"] is None
    assert (
        rows["secagg"]["recovered"] == rows["plaintext-fedsgd"]["recovered"] >= rows["secagg"]["alone"] >= 4
    )
    assert rows["secagg"]["expected"] == pytest.approx(rows["plaintext-fedsgd"]["expected"])


def test_vetting_flags_every_attack_model(pool: torch.Tensor) -> None:
    base = build_model("lenet", image_size=SIDE, seed=0)
    images = pool[:8]
    imprint = imprint_model(base, pool, ImprintSpec(bins=64))
    assert {f.check for f in vet_structure(imprint)} >= {"aligned-rows", "sorted-thresholds"}
    trap = trap_model(base, SHAPE, TrapSpec(rows=64))
    assert "paired-magnitudes" in {f.check for f in vet_structure(trap)}
    calibrated = trap_model(base, SHAPE, TrapSpec(rows=64, rate=1 / 240), pool)
    assert "paired-magnitudes" in {f.check for f in vet(calibrated, images)}
    silent = suppressed_model(base)
    gradient = client_gradients(silent, images, torch.arange(8) % 10)
    assert {"zeroed-layer", "saturating-bias", "vanishing-update"} <= {
        f.check for f in vet(silent, images, gradient)
    }
    with pytest.raises(SuspiciousModelError, match="refused to train"):
        check_model(silent, images, gradient)


def test_silent_rows_flag_a_trap_calibrated_on_public_data() -> None:
    data = load_embedded(32)
    pool32 = torch.cat([data.images, data.images.flip(-1)])
    trap = trap_model(build_model("lenet", seed=0), (3, 32, 32), TrapSpec(rows=256, rate=1 / 128), pool32)
    assert "silent-rows" in {f.check for f in vet(trap, pool32[100:108])}


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("side", [16, 32])
def test_vetting_passes_honest_models_at_init_and_after_training(name: str, side: int) -> None:
    data = load_embedded(side)
    pool = torch.cat([data.images, data.images.flip(-1)])
    model = build_model(name, image_size=side, seed=3)
    images, labels = pool[:8], torch.arange(8) % 10
    assert vet(model, images, client_gradients(model, images, labels)) == []
    for step in range(10):  # ten FedAvg rounds of two clients, one local step each
        afters = [
            client_weight_update(model, pool[8 * c + 16 * step : 8 * c + 16 * step + 8], labels, lr=0.1)[1]
            for c in range(2)
        ]
        with torch.no_grad():
            for param, *new in zip(model.parameters(), *afters):
                param.copy_(torch.stack(new).mean(0))
    assert vet(model, images, client_gradients(model, images, labels)) == []


def test_vetting_clients_refuse_and_the_round_reveals_nothing_from_them() -> None:
    row = run_malicious(
        MaliciousSettings(
            attack="imprint",
            protocol="secagg",
            clients=4,
            batch=2,
            resolution=SIDE,
            bins=32,
            defense="vet",
            quick=True,
        )
    )["row"]
    assert len(row["refused"]) == 4 and row["recovered"] == 0
    assert "aligned-rows" in row["refused"]["0"]
    assert row["verdict"] == "not exposed"


def test_readers_name_who_shares_the_output_key() -> None:
    from leakage.app.malicious import readers
    from protocols.plaintext import PlaintextFedSGD

    assert readers(PlaintextFedSGD()) == "server"

    class SharedKey(PlaintextFedSGD):
        aggregate_readers = "the server and every client"

    assert readers(SharedKey()) == "the server and every client"


def test_population_is_a_seeded_draw_without_replacement() -> None:
    first = population(4, 3, SIDE, seed=5)
    again = population(4, 3, SIDE, seed=5)
    assert all(torch.equal(first.images[c], again.images[c]) for c in range(4))
    flat = first.all_images().flatten(1)
    assert torch.unique(flat, dim=0).shape[0] == 12
    with pytest.raises(AttackConfigError, match="at most 240"):
        population(31, 8, SIDE, seed=0)


def test_cli_assess_with_a_malicious_server_prints_its_row(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from secagg.cli import main

    code = main(
        [
            "assess",
            "--server",
            "malicious:imprint",
            "--protocol",
            "secagg",
            "--clients",
            "4",
            "--batch",
            "2",
            "--quick",
            "--no-progress",
            "--out",
            str(tmp_path),
            "--json",
        ]
    )
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    (row,) = record["rows"]
    assert row["observer"] == "malicious server" and row["attack"] == "imprint"
    assert row["readers"] == "server" and row["images"] == 8
    assert 1 <= row["recovered"] <= 8 and row["verdict"] == "exposed"
    assert Path(record["png"]).is_file() and Path(record["json"]).is_file()
    assert main(["assess", "--server", "honest", "--protocol", "secagg", "--quick", "--no-progress"]) == 2
    assert "malicious:imprint" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["secagg", "two-server", "ckks", "plaintext-fedavg"])
def test_binding_stops_inconsistency_but_not_imprint(name: str) -> None:
    common = dict(
        protocol=name, clients=3, batch=1, model="mlp", resolution=8, attacks=("analytic",), quick=True
    )
    bound = run_malicious(MaliciousSettings(attack="inconsistency", defense="bind", **common))["row"]  # type: ignore[arg-type]
    assert bound["error"].startswith("ModelBindingError")
    assert bound["recovered"] == 0 and bound["verdict"] == "not exposed" and bound["target_cosine"] is None
    imprint = run_malicious(MaliciousSettings(attack="imprint", defense="bind", bins=16, **common))["row"]  # type: ignore[arg-type]
    assert imprint["error"] is None and imprint["recovered"] >= 1 and imprint["verdict"] == "exposed"


def test_evaluate_section_runs_each_defence_and_renders() -> None:
    from leakage.app.malicious import evaluate_malicious
    from leakage.app.report import _malicious

    rows, images = evaluate_malicious(
        ["inconsistency"], ["two-server"], clients=3, batch=1, model="mlp", resolution=8, iterations=None,
        inversion=("analytic",), quick=True, seed=0, device="cpu", max_protocol_seconds=60.0,
    )  # fmt: skip
    assert [r["defense"] for r in rows] == [None, "bind", "vet"]
    assert rows[0]["verdict"] == "exposed" and rows[1]["recovered"] == rows[2]["recovered"] == 0
    assert rows[1]["error"].startswith("ModelBindingError")
    assert set(rows[2]["refused"]) == {"1", "2"}  # the suppressed clients refuse; the target alone is too few
    assert list(images) == ["two-server/inconsistency"]
    html = _malicious(rows, images)
    assert "A server that deviates" in html and html.count("<tr>") == 4 and "data:image/png" in html
