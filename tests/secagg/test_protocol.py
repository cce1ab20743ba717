"""The protocol registry and the Protocol defaults every consumer relies on."""

from __future__ import annotations

import pytest

import protocols
from protocols.plaintext import PlaintextFedSGD
from secagg.errors import ConfigError, UnknownProtocolError
from secagg.protocol import Protocol, Registry


def test_builtin_names_and_wire_ids_are_unique() -> None:
    classes = [protocols.get(name) for name in protocols.available()]
    assert len({c.name for c in classes}) == len(classes) >= 7
    assert len({c.wire_id for c in classes}) == len(classes)
    assert [c.name for c in classes if c.is_baseline] == ["plaintext-fedsgd", "plaintext-fedavg"]


def test_a_reused_name_or_wire_id_is_refused() -> None:
    registry = Registry()
    registry.register(PlaintextFedSGD)
    with pytest.raises(ConfigError, match="already registered"):
        registry.register(PlaintextFedSGD)

    class SameWire(PlaintextFedSGD):
        name = "same-wire"

    with pytest.raises(ConfigError, match=f"wire id {PlaintextFedSGD.wire_id} is already used"):
        registry.register(SameWire)

    class NewWire(PlaintextFedSGD):
        name = "new-wire"
        wire_id = 999

    registry.register(NewWire)
    assert registry.available() == ["plaintext-fedsgd", "new-wire"]
    registry.unregister("new-wire")
    assert registry.available() == ["plaintext-fedsgd"]


def test_incomplete_protocols_and_bad_provisioning_are_refused() -> None:
    class Incomplete(Protocol[object]):
        name = "incomplete"

    with pytest.raises(ConfigError, match="must declare"):
        Registry().register(Incomplete)

    class Unprovisionable(PlaintextFedSGD):
        name = "unprovisionable"
        wire_id = 998
        provisioning = "carrier-pigeon"  # type: ignore[assignment]

    with pytest.raises(ConfigError, match="provisioning must be one of"):
        Registry().register(Unprovisionable)


def test_unknown_name_lists_the_registered_ones() -> None:
    with pytest.raises(UnknownProtocolError) as info:
        protocols.get("no-such-protocol")
    assert all(name in str(info.value) for name in protocols.available())


def test_input_bound_is_the_declared_field() -> None:
    for name in protocols.available():
        protocol = protocols.create(name, **protocols.get(name).fast_config)
        if protocol.input_bound_field is None:
            assert protocol.input_bound is None and protocol.with_input_bound(3.0) is protocol
        else:
            assert protocol.with_input_bound(0.25).input_bound == 0.25


def test_observe_round_pools_the_colluding_parties_views() -> None:
    import numpy as np

    from secagg.observe import Observation
    from secagg.party import SERVER
    from secagg.protocol import observe_round
    from secagg.round import run_round

    pooled: list[list[int]] = []

    class Committee(PlaintextFedSGD):
        name = "committee-test"
        wire_id = 998

        def colluding_parties(self) -> tuple[int, ...]:
            return (SERVER, 0)

        def collude(self, views, spec):  # type: ignore[no-untyped-def]
            pooled.append(sorted(views))
            return [
                Observation("colluding: server + client-0", "x", (0,), "colluding", np.zeros(spec.n_params))
            ]

    updates = [np.zeros(4), np.ones(4)]
    plain = run_round(PlaintextFedSGD(), updates)
    # The default (the servers only) pools nothing for a one-server protocol.
    assert all(o.observer != "colluding" for o in plain.observations())
    result = run_round(Committee(), updates)
    found = observe_round(result.instance, result.views, result.spec)
    assert pooled == [[0, SERVER]]
    assert [o.observer for o in found if o.kind == "colluding"] == ["colluding: server + client-0"]


def test_a_cost_probe_is_the_protocol_itself_unless_it_names_cheaper_setup() -> None:
    plain = protocols.create("plaintext-fedsgd")
    assert plain.cost_probe() is plain
    threshold = protocols.create("paillier-threshold")
    assert threshold.cost_probe() is not threshold
    assert type(threshold.cost_probe()) is type(threshold)
