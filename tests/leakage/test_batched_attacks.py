"""Batched attacks as evaluate runs them: the plateau stop and IG over many observations."""

import pytest
import torch

from leakage.attacks import client_gradients
from leakage.attacks.deep_leakage import FLOOR, MatchingProblem, solve_matching
from leakage.attacks.inverting import inverting_gradients, inverting_gradients_many
from leakage.data import load_embedded
from leakage.errors import AttackConfigError
from leakage.metrics import psnr
from leakage.models import build_model

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    return load_embedded(8)


def test_plateau_stops_a_random_target_and_keeps_the_real_one(tiny):
    """With the plateau rule, the same solve stops the random vector's lanes early (its
    loss settles at the zero-gradient level) while the real gradient still converges."""
    net = build_model("lenet", image_size=8, seed=0)
    images, labels = tiny.images[12:13], tiny.labels[12:13]
    real = client_gradients(net, images, labels)
    generator = torch.Generator().manual_seed(3)
    noise = [torch.randn(g.shape, generator=generator) * float(g.std()) for g in real]
    problems = [MatchingProblem(real, labels, 0), MatchingProblem(noise, labels, 0)]
    budget = 200
    results = solve_matching("idlg", net, problems, input_shape=(3, 8, 8), num_classes=10,
                             batch_size=1, iterations=budget, restarts=2, device="cpu", plateau=0.05)
    recovered, random = results
    assert float(psnr(recovered.images, images)[0]) > 30.0
    assert recovered.stopped == "converged"
    assert random.stopped == "plateau"
    assert random.iterations < 2 * budget / 2  # its two draws ran under half the budget
    without = solve_matching("idlg", net, problems[1:], input_shape=(3, 8, 8), num_classes=10,
                             batch_size=1, iterations=budget, restarts=2, device="cpu")
    assert without[0].stopped == "" and without[0].iterations == 2 * budget


def test_inverting_gradients_many_matches_one_by_one(tiny):
    net = build_model("lenet", image_size=8, seed=0)
    gradients = [client_gradients(net, tiny.images[i:i + 1], tiny.labels[i:i + 1]) for i in (12, 60)]
    seeds = [0, 5]
    alone = [inverting_gradients(net, g, input_shape=(3, 8, 8), num_classes=10, iterations=12,
                                 restarts=2, seed=seed, device="cpu") for g, seed in zip(gradients, seeds)]
    together = inverting_gradients_many(net, gradients, seeds, input_shape=(3, 8, 8), num_classes=10,
                                        iterations=12, restarts=2, device="cpu")
    for a, b in zip(alone, together):
        assert torch.allclose(a.images, b.images, atol=1e-5)
        assert b.labels.tolist() == a.labels.tolist()
        assert abs(a.loss - b.loss) < 1e-5
    with pytest.raises(AttackConfigError, match="one seed per observation"):
        inverting_gradients_many(net, gradients, [0], input_shape=(3, 8, 8), num_classes=10)


def test_plateau_rule_waits_for_plateau_from():
    """A group whose loss cannot fall plateaus at the first check once the rule counts,
    and not before ``plateau_from`` (a decaying prior holds the rule off)."""
    from leakage.attacks.batched_lbfgs import minimise_lanes

    def flat(x, lanes):  # a constant loss whatever the step: nothing to gain
        return torch.ones(lanes.numel(), dtype=x.dtype), torch.ones_like(x)

    start = torch.zeros(2, 3, dtype=torch.float64)
    def run(plateau, plateau_from=0):
        return minimise_lanes(flat, start, steps=300, scale=torch.ones(2), plateau=plateau,
                              plateau_checks=4, check_every=10, patience=1000, plateau_from=plateau_from)

    early, late, never = run(0.05), run(0.05, plateau_from=200), run(0.0)
    assert not bool(never.plateaued.any()) and int(never.steps.max()) == 300
    assert bool(early.plateaued.all()) and bool(late.plateaued.all())
    assert int(early.steps.max()) == 50  # the 5th check: 4 checks back from it, no fall
    assert int(late.steps.max()) == 240  # counting starts at step 200, stops 4 checks on


def test_a_lane_at_its_floor_leaves_the_batch_and_the_others_continue():
    """A settled lane whose loss stops falling (a floor of 1e-6, below ``settled``) stops
    after the floor rule's checks with its best point; a lane of another problem that is
    still falling, far from its answer, runs every step; without the rule both run every
    step."""
    from leakage.attacks.batched_lbfgs import minimise_lanes

    evaluated: list[list[int]] = []
    falling = [0]  # evaluations of lane 1

    def objective(x, lanes):
        evaluated.append(lanes.tolist())
        # Lane 0: a quadratic with a floor of 1e-6. Lane 1: a loss that falls with every
        # evaluation (0.5 + 1/n) under a constant gradient, so it never settles or stalls.
        falling[0] += int(bool((lanes == 1).any()))
        loss = torch.where(lanes == 0, (x ** 2).sum(1) + 1e-6, 0.5 + 1.0 / max(falling[0], 1))
        grad = torch.where((lanes == 0)[:, None], 2 * x, torch.ones_like(x))
        return loss, grad

    start = torch.ones(2, 3, dtype=torch.float64)

    def run(floor):
        evaluated.clear()
        falling[0] = 0
        return minimise_lanes(objective, start, steps=60, scale=torch.ones(2), converged=0.0,
                              settled=1e-4, check_every=10, patience=1000, floor=floor,
                              floor_checks=2, history=5)

    result = run(0.01)
    assert result.floored.tolist() == [True, False]
    assert int(result.steps[0]) == 30  # checks at 10, 20 (below settled, flat), 30: 2 back
    assert int(result.steps[1]) == 60
    assert float(result.best_loss[0]) == pytest.approx(1e-6) and torch.allclose(
        result.best[0], torch.zeros(3, dtype=torch.float64))
    assert all(lanes == [1] for lanes in evaluated[-5:])  # the batch shrank to lane 1
    without = run(0.0)
    assert not bool(without.floored.any()) and without.steps.tolist() == [60, 60]


def test_floor_stop_keeps_the_recovery(tiny):
    """On a real problem the floor rule ends the solve early, reported as converged, at
    the PSNR of the full run."""
    net = build_model("lenet", image_size=8, seed=0)
    images, labels = tiny.images[12:13], tiny.labels[12:13]
    real = client_gradients(net, images, labels)

    def solve(floor):
        (result,) = solve_matching("dlg", net, [MatchingProblem(real, None, 0)], input_shape=(3, 8, 8),
                                   num_classes=10, batch_size=1, iterations=300, restarts=1,
                                   device="cpu", converged=0.0, floor=floor)
        return result

    stopped, full = solve(FLOOR), solve(0.0)
    assert full.iterations == 300 and full.stopped == ""
    assert stopped.stopped == "converged" and stopped.iterations < 300
    assert float(psnr(stopped.images, images)[0]) > 30.0
    assert float(psnr(stopped.images, images)[0]) > float(psnr(full.images, images)[0]) - 1.0
