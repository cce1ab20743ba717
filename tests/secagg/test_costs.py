"""One cost record and one configuration policy (secagg.costs)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import pytest

import protocols
from protocols.plaintext import PlaintextFedSGD
from secagg.costs import FIELDS, Projection, RoundCosts, choose_config, covering, round_costs
from secagg.errors import EncodingOverflowError, SecAggError
from secagg.round import run_round


def _costs(**values: float) -> RoundCosts:
    base = {name: 0.0 for name in FIELDS}
    base.update(values)
    return RoundCosts(**base)  # type: ignore[arg-type]


def test_round_costs_of_a_plaintext_round() -> None:
    rng = np.random.default_rng(0)
    updates = [rng.uniform(-1, 1, 1000) for _ in range(3)]
    result = run_round(protocols.create("plaintext-fedsgd", dtype="float64"), updates)
    costs = round_costs(result, updates)
    assert set(costs.as_dict()) == set(FIELDS)
    assert costs.max_abs_error is not None and costs.max_abs_error < 1e-12
    assert 8.0 <= costs.bytes_per_param < 8.2  # float64 on the wire, plus header and CRC
    assert costs.expansion_over_float32 == pytest.approx(costs.bytes_per_param / 4)
    assert costs.total_bytes >= 3 * 8000
    assert costs.client_s >= costs.client_offline_s >= 0


def test_round_costs_without_an_aggregate_has_no_error_figure() -> None:
    updates = [np.ones(10), np.ones(10)]
    result = run_round(protocols.create("plaintext-fedsgd"), updates)
    failed = dataclasses.replace(result, aggregate=None, error=SecAggError("refused"))
    assert round_costs(failed, updates).max_abs_error is None


def test_projection_is_linear_in_clients_times_params_and_keeps_the_worst_rate() -> None:
    projection = Projection()
    assert projection.seconds(2, 100) is None
    projection.record(_costs(client_s=1.0, server_s=2.0, setup_s=0.5), n_clients=2, n_params=100)
    # (2 clients x 1 s + 2 s) / 200 = 0.02 s per client-parameter, plus 0.5 s setup
    assert projection.seconds(4, 1000) == pytest.approx(0.02 * 4000 + 0.5)
    projection.record(_costs(client_s=0.1), n_clients=2, n_params=100)  # faster: ignored
    assert projection.seconds(4, 1000) == pytest.approx(0.02 * 4000 + 0.5)


class _Slow(PlaintextFedSGD):
    """The baseline with a fast_config, to see the fallback without a slow protocol."""

    fast_config: ClassVar[dict[str, Any]] = {"dtype": "float64"}


def test_choose_config_falls_back_to_fast_config_only_past_the_budget() -> None:
    generous = choose_config(_Slow, fast=False, n_clients=2, n_params=1000, max_seconds=1e6)
    assert generous.note == "default config" and generous.protocol.config.dtype == "float32"
    tight = choose_config(_Slow, fast=False, n_clients=2, n_params=1000, max_seconds=0.0)
    assert tight.note.startswith("fast_config (secure default projected")
    assert tight.protocol.config.dtype == "float64"
    asked = choose_config(_Slow, fast=True, n_clients=2, n_params=1000, max_seconds=1e6)
    assert asked.note == "fast_config" and asked.protocol.config.dtype == "float64"
    # No fast_config: the default runs whatever the projection says.
    plain = choose_config(PlaintextFedSGD, fast=False, n_clients=2, n_params=1000, max_seconds=0.0)
    assert plain.note == "default config"


def test_covering_widens_a_public_bound_to_a_power_of_two() -> None:
    protocol = protocols.create("two-server")
    bound = protocol.input_bound
    assert bound is not None
    assert covering(protocol, bound / 2) is protocol
    assert covering(protocol, bound * 3).input_bound == 2.0 ** np.ceil(np.log2(bound * 3))


def test_the_baseline_is_found_by_declaration_not_by_name() -> None:
    assert protocols.baseline() == "plaintext-fedsgd"
    assert protocols.baseline("weighted_mean") == "plaintext-fedavg"
    assert all(protocols.get(protocols.baseline(kind)).is_baseline for kind in ("sum", "weighted_mean"))


def test_integer_inputs_set_the_bound_and_zero_fraction_bits_together() -> None:
    # 2^20 with the default 16 fractional bits would need 37 bits of a 32-bit ring.
    with pytest.raises(EncodingOverflowError):
        protocols.create("two-server").with_input_bound(2.0**20)
    two_server = protocols.create("two-server").with_integer_inputs(2.0**20)
    assert two_server.input_bound == 2.0**20 and two_server.config.frac_bits == 0
    plaintext = protocols.create("plaintext-fedsgd")
    assert plaintext.with_integer_inputs(2.0**40) is plaintext


@pytest.mark.parametrize("name", protocols.available())
def test_declared_config_fields_exist(name: str) -> None:
    cls = protocols.get(name)
    names = {f.name for f in dataclasses.fields(cls.Config)}
    for declared in (cls.input_bound_field, cls.frac_bits_field):
        assert declared is None or declared in names, (name, declared)
    # A codec whose fractional bits the configuration sets is declared, so no caller guesses.
    assert ("frac_bits" in names) == (cls.frac_bits_field == "frac_bits"), name
