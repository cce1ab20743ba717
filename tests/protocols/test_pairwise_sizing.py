"""SecAgg+ k and t sized from failure bounds (Bell et al. 2020): the bounds hold on the
graph the protocol draws, impossible settings are refused with what would work, and
``neighbours='auto'`` rounds survive the dropouts they were sized for."""

from __future__ import annotations

import math

import numpy as np
import pytest

from protocols.pairwise import PairwiseConfig, PairwiseMasking, neighbour_graph
from protocols.pairwise_sizing import size_secaggplus
from secagg.cli import main as cli_main
from secagg.cli import parse_overrides
from secagg.errors import ConfigError, NotEnoughClientsError
from secagg.round import reference_aggregate, run_round
from secagg.router import Dropout
from tests.conftest import make_updates


def test_a_thousand_clients_get_a_sparse_graph_meeting_both_targets() -> None:
    sizing = size_secaggplus(n_clients=1000, dropout=0.1, corrupt=0.05)
    assert sizing.neighbours is not None and sizing.neighbours % 2 == 0
    assert sizing.neighbours < 200  # O(log n), far below the 999 of the full graph
    assert sizing.group / 2 < sizing.threshold <= sizing.neighbours
    assert sizing.privacy_log2 <= -20 and sizing.correctness_log2 <= -20
    # Harder settings never need fewer neighbours.
    harder = size_secaggplus(n_clients=1000, dropout=0.2, corrupt=0.05)
    stricter = size_secaggplus(
        n_clients=1000, dropout=0.1, corrupt=0.05, privacy_bits=40, correctness_bits=40
    )
    assert harder.neighbours is not None and harder.neighbours > sizing.neighbours
    assert stricter.neighbours is not None and stricter.neighbours > sizing.neighbours


def test_impossible_settings_are_refused_saying_what_would_work() -> None:
    with pytest.raises(ConfigError) as caught:
        size_secaggplus(n_clients=10, dropout=0.1, corrupt=0.05)
    message = str(caught.value)
    assert "10 clients" in message and "dropout 0.1" in message
    # Each suggestion it names does work.
    suggested = float(message.split("dropout <= ")[1].split(";")[0])
    assert 0 < suggested < 0.1
    size_secaggplus(n_clients=10, dropout=suggested, corrupt=0.05)
    bits = int(message.split("failure targets 2^-")[1].split(" ")[0])
    size_secaggplus(n_clients=10, dropout=0.1, corrupt=0.05, privacy_bits=bits, correctness_bits=bits)
    clients = int(message.split("; ")[-1].split(" clients")[0])
    size_secaggplus(n_clients=clients, dropout=0.1, corrupt=0.05)
    with pytest.raises(ConfigError, match="dropout"):
        size_secaggplus(n_clients=100, dropout=1.5)


def _simulated_failures(
    n: int, k: int, t: int, dropout: float, corrupt: float, trials: int
) -> tuple[float, float]:
    """Fractions of trials (fresh graph, corrupt set and dropouts each) in which some
    client keeps fewer than t honest live neighbours, and in which some honest client
    has at least 2t - g corrupt neighbours."""
    rng = np.random.default_rng(7)
    corrupt_count = math.ceil(corrupt * n)
    short = exposed = 0
    for trial in range(trials):
        groups = np.array(neighbour_graph(n, k, rng.bytes(32), trial))
        bad = np.zeros(n, dtype=bool)
        bad[rng.choice(n, corrupt_count, replace=False)] = True
        removed = bad | (rng.random(n) < dropout)
        removed_neighbours = removed[groups].sum(axis=1) - removed
        corrupt_neighbours = bad[groups].sum(axis=1) - bad
        short += bool(np.any(k - removed_neighbours < t))
        exposed += bool(np.any(corrupt_neighbours[~bad] >= 2 * t - (k + 1)))
    return short / trials, exposed / trials


def test_the_bounds_hold_on_the_graph_the_protocol_draws() -> None:
    # Loose targets (1/8) so that failures are frequent enough to count.
    n, dropout, corrupt = 120, 0.15, 0.1
    sizing = size_secaggplus(
        n_clients=n, dropout=dropout, corrupt=corrupt, privacy_bits=3, correctness_bits=3
    )
    assert sizing.neighbours is not None
    short, exposed = _simulated_failures(n, sizing.neighbours, sizing.threshold, dropout, corrupt, 300)
    slack = 3 * math.sqrt(0.125 / 300)
    assert short <= 2.0**sizing.correctness_log2 + slack
    assert exposed <= 2.0**sizing.privacy_log2 + slack
    # Off the sized t the events are real: a higher t loses rounds more often than the
    # target, a lower t lets colluders gather both share kinds.
    short_higher, _ = _simulated_failures(n, sizing.neighbours, sizing.threshold + 4, dropout, corrupt, 300)
    assert short_higher > 0.125
    _, exposed_lower = _simulated_failures(n, sizing.neighbours, sizing.threshold - 2, dropout, corrupt, 300)
    assert exposed_lower > 0.125


def test_auto_sizes_at_the_round_s_client_count() -> None:
    config = PairwiseConfig(neighbours="auto")
    sizing = size_secaggplus(n_clients=1000)
    assert config.neighbours_for(1000) == sizing.neighbours
    assert config.threshold_for(1000) == sizing.threshold
    assert config.group_size(1000) == sizing.neighbours + 1  # type: ignore[operator]
    with pytest.raises(ConfigError, match="threshold None"):
        PairwiseConfig(neighbours="auto", threshold=5)
    with pytest.raises(ConfigError, match="what would"):
        config.threshold_for(10)
    with pytest.raises(ConfigError, match="dropout_rate"):
        PairwiseConfig(neighbours="auto", dropout_rate=1.0)
    assert parse_overrides(["neighbours=auto", "dropout_rate=0.2"], PairwiseConfig) == {
        "neighbours": "auto",
        "dropout_rate": 0.2,
    }


def test_an_auto_sized_round_survives_its_dropouts() -> None:
    n = 64
    protocol = PairwiseMasking(neighbours="auto")
    assert protocol.config.uses_graph(n)
    updates = make_updates(n, 16)
    rng = np.random.default_rng(3)
    dropped = sorted(int(c) for c in rng.choice(n, 6, replace=False))
    faults = [Dropout(c, "masked_input") for c in dropped]
    result = run_round(protocol, updates, faults=faults, round_id=2)
    included = tuple(c for c in range(n) if c not in dropped)
    assert result.included == included
    expected = reference_aggregate(updates, included, kind="sum")
    assert np.max(np.abs(result.unwrap() - expected)) <= protocol.precision(n_clients=n, value_range=1.0)


def test_a_fixed_small_k_fails_where_auto_does_not() -> None:
    # The fixed t = floor(2g/3) + 1 with k = 4: a client that loses 2 of its 4
    # neighbours stops the round; auto sizing at the same n refuses instead of failing.
    n = 40
    updates = make_updates(n, 8)
    faults = [Dropout(c, "masked_input") for c in range(0, n, 3)]
    result = run_round(PairwiseMasking(neighbours=4), updates, faults=faults, round_id=1)
    assert isinstance(result.error, NotEnoughClientsError)
    with pytest.raises(ConfigError, match="what would"):
        PairwiseMasking(neighbours="auto", dropout_rate=0.33).config.threshold_for(n)


def test_cli_aggregate_with_auto_neighbours(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["aggregate", "--protocol", "secagg", "--clients", "60", "--params", "50", "--drop", "6"]
    assert cli_main([*argv, "--set", "neighbours=auto", "--json"]) == 0
    assert '"neighbours": "auto"' in capsys.readouterr().out
