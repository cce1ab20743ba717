"""Model binding: every protocol refuses an aggregate over clients whose model digests differ."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import protocols
from protocols.pairwise import PairwiseMasking
from protocols.plaintext import PlaintextFedSGD
from secagg.binding import (
    DIGEST_BYTES,
    BindingLedger,
    ModelBinding,
    bound_label,
    model_digest,
)
from secagg.errors import ConfigError, ModelBindingError, WireFormatError
from secagg.party import Inbound
from secagg.round import reference_aggregate, run_round
from secagg.router import Dropout
from secagg.wire import Header

ONE = b"\x11" * DIGEST_BYTES
OTHER = b"\x22" * DIGEST_BYTES


def test_digest_covers_every_parameter_the_architecture_and_the_round() -> None:
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(2, dtype=np.float32)]
    base = model_digest(arrays, architecture="lenet", round_id=3)
    assert len(base) == DIGEST_BYTES
    assert model_digest([a.copy() for a in arrays], architecture="lenet", round_id=3) == base
    changed = [arrays[0].copy(), arrays[1].copy()]
    changed[1][0] = np.nextafter(np.float32(1), np.float32(2))
    assert model_digest(changed, architecture="lenet", round_id=3) != base
    assert model_digest(arrays, architecture="lenet2", round_id=3) != base
    assert model_digest(arrays, architecture="lenet", round_id=4) != base
    assert model_digest([arrays[0].reshape(3, 2), arrays[1]], architecture="lenet", round_id=3) != base
    assert model_digest([a.astype(np.float64) for a in arrays], architecture="lenet", round_id=3) != base


def test_binding_message_round_trips_and_refuses_other_lengths() -> None:
    assert ModelBinding.from_bytes(ModelBinding(ONE).to_bytes()) == ModelBinding(ONE)
    for size in (0, 31, 33):
        with pytest.raises(WireFormatError, match="32-byte"):
            ModelBinding.from_bytes(b"\x00" * size)
    with pytest.raises(ConfigError, match="32-byte"):
        ModelBinding(b"short").to_bytes()
    assert bound_label(b"label", b"") == b"label"
    assert bound_label(b"label", ONE) != bound_label(b"label", OTHER)


def _inbound(sender: int, digest: bytes) -> Inbound:
    header = Header(protocol_id=1, msg_type=ModelBinding.msg_type, round_id=0, sender=sender, recipient=0,
                    payload_len=DIGEST_BYTES)  # fmt: skip
    return Inbound(header, ModelBinding(digest))


def test_ledger_requires_one_digest_from_every_included_client() -> None:
    ledger = BindingLedger("checker")
    rest = ledger.take([_inbound(0, ONE), _inbound(1, ONE), _inbound(2, OTHER)])
    assert rest == []
    assert ledger.require([0, 1, 2]) is None  # not bound: nothing required
    ledger.required = True
    assert ledger.require([0, 1]) == ONE
    with pytest.raises(ModelBindingError, match="2 different model digests"):
        ledger.require([0, 1, 2])
    with pytest.raises(ModelBindingError, match="none from"):
        ledger.require([0, 3])
    with pytest.raises(ModelBindingError, match="two different"):
        ledger.take([_inbound(0, OTHER)])


BOUND = [name for name in protocols.available() if protocols.get(name).supports_binding]


def _round(name: str, bindings: list[bytes] | None, **kwargs: Any) -> Any:
    cls = protocols.get(name)
    protocol = cls(**cls.fast_config)
    updates = [np.random.default_rng(i).uniform(-1, 1, 300) for i in range(4)]
    weights = [1.0, 2.0, 1.0, 3.0] if cls.aggregate_kind == "weighted_mean" else None
    return (
        protocol,
        updates,
        weights,
        run_round(protocol, updates, weights=weights, bindings=bindings, **kwargs),
    )


def test_every_registered_protocol_binds() -> None:
    assert BOUND == protocols.available()


@pytest.mark.parametrize("name", BOUND)
def test_one_model_reveals_the_same_aggregate(name: str) -> None:
    protocol, updates, weights, result = _round(name, [ONE] * 4)
    assert result.error is None
    reference = reference_aggregate(updates, result.included, kind=protocol.aggregate_kind, weights=weights)
    assert np.abs(result.aggregate - reference).max() <= protocol.precision(n_clients=4, value_range=1.0)


@pytest.mark.parametrize("name", BOUND)
def test_two_models_end_in_a_typed_error_with_nothing_revealed(name: str) -> None:
    _, _, _, result = _round(name, [ONE, ONE, OTHER, ONE])
    assert isinstance(result.error, ModelBindingError)
    assert "different model digests" in str(result.error)
    assert result.aggregate is None
    assert all(view.revealed is None for view in result.views.values())


def test_bindings_are_one_digest_per_client() -> None:
    with pytest.raises(ConfigError, match="one model digest per client"):
        _round("two-server", [ONE] * 3)
    with pytest.raises(ConfigError, match="32-byte"):
        _round("two-server", [ONE, ONE, ONE, b"x"])


def test_a_protocol_that_does_not_bind_refuses_bindings() -> None:
    class Unbound(PlaintextFedSGD):
        supports_binding = False

    with pytest.raises(ConfigError, match="does not bind"):
        run_round(Unbound(), [np.zeros(3), np.zeros(3)], bindings=[ONE, ONE])


class _SkippingServer(PairwiseMasking):
    """A secagg server that skips its explicit binding check."""

    def bind(self, parties: Any, bindings: Any) -> None:
        super().bind(parties, bindings)
        for party in parties:
            if party.role == "server":
                party.binding_ledger.required = False  # type: ignore[attr-defined]


def test_secagg_masks_of_different_models_do_not_cancel_even_without_the_check() -> None:
    protocol = _SkippingServer(**PairwiseMasking.fast_config)
    updates = [np.random.default_rng(i).uniform(-1, 1, 300) for i in range(4)]
    reference = reference_aggregate(updates, range(4), kind="sum")
    same = run_round(protocol, updates, bindings=[ONE] * 4)
    assert np.abs(same.unwrap() - reference).max() < 1e-3
    mixed = run_round(protocol, updates, bindings=[ONE, ONE, OTHER, ONE])
    assert mixed.error is None  # the server skipped its check and unmasked
    # ... and got ring noise: no coordinate is near the true sum's
    assert np.median(np.abs(mixed.unwrap() - reference)) > 1.0


def test_secagg_dropouts_unmask_with_the_survivors_bindings() -> None:
    protocol = PairwiseMasking(**PairwiseMasking.fast_config)
    updates = [np.random.default_rng(i).uniform(-1, 1, 300) for i in range(5)]
    result = run_round(protocol, updates, bindings=[ONE] * 5, faults=[Dropout(2, "masked_input")])
    assert result.error is None and 2 not in result.included
    reference = reference_aggregate(updates, result.included, kind="sum")
    assert np.abs(result.unwrap() - reference).max() < 1e-3


def test_unbound_rounds_send_no_binding_messages() -> None:
    _, _, _, result = _round("secagg", None)
    assert all(entry.msg_type != ModelBinding.msg_type for entry in result.transcript)
    _, _, _, bound = _round("secagg", [ONE] * 4)
    assert sum(entry.msg_type == ModelBinding.msg_type for entry in bound.transcript) == 4
