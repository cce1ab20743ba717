"""Batched attacks as evaluate runs them: the plateau stop and IG over many observations."""

import pytest
import torch

from leakage.attacks import client_gradients
from leakage.attacks.deep_leakage import MatchingProblem, solve_matching
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
