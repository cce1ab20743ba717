"""Costs of ``secagg`` pairwise masking (Bonawitz et al. 2017; SecAgg+ neighbours, Bell et
al. 2020), beside Flower's SecAgg+ mask PRG and its int64 wire.

    python -m benchmarks.pairwise [--quick] [--out bench-out]

Writes ``pairwise.json`` with three tables, every figure measured in this run:

* ``rounds``: whole rounds through :func:`secagg.round.run_round` at a small model
  (``KEY_PARAMS`` parameters) for every client count, graph (full; SecAgg+ with
  k = 2 * ceil(log2 n) neighbours) and dropout setting (none; 10 % of the clients drop
  after sharing keys, before their masked input, so their pair masks are rebuilt from
  key shares). These give the parameter-independent costs exactly: key advertisement,
  share encryption and routing, Shamir reconstruction, and the bytes of key material
  each client sends and receives.
* ``components``: per model size n, best-of timings of the per-parameter pieces: the
  client's encode + mask (:func:`protocols.pairwise.apply_masks` with d peers, the code
  the client runs, plus the d X25519 + HKDF pair-seed derivations), one PRF expansion
  subtracted from the sum (an unmasking step), one masked message decoded (header, CRC32)
  and added into the sum (an aggregation step), the client's message framing, and
  Flower's PRG alone
  (``np.random.RandomState(seed32).randint(0, 2**32 - 1, n, dtype=np.int64)``).
* ``grid``: for every (n, clients, graph, dropout) cell, n from 10^4 to 10^7 and 2 to 200
  clients, the costs assembled from the two tables above (a 200-client, 10^7-parameter
  round does not fit the in-process router's memory): client encode + mask seconds, server
  aggregation seconds (survivors x one add), unmasking seconds (Shamir and key checks
  from ``rounds`` + one PRF expansion per self mask and per rebuilt pair mask), bytes
  up/down per client per parameter (the round's key material + the 4n-byte masked
  vector), and the ratios to Flower's PRG-only client time ((d + 1) PRG calls; both our
  whole client step and our encode + masks alone) and to Flower's 8 bytes per parameter.
  A cell whose ``rounds`` run failed (SecAgg+ groups that lost more than g - t members
  to the random dropouts) carries that error. ``validation`` compares the assembled figures with
  whole rounds at 10^5 parameters, where those fit.

``--scale`` adds the issue's targets instead of (``--scale-only``) or beside the grid, in
``scale``: SecAgg+ at 1,000 clients with k and t sized by ``neighbours='auto'``
(:mod:`protocols.pairwise_sizing`, 10 % dropouts, 5 % corrupt, 2^-20):

* ``sizing``: the k, t and failure bounds chosen;
* ``rounds``: ``SCALE_ROUNDS`` whole rounds (``SCALE_ROUND_PARAMS`` parameters: success
  does not depend on the model size), each with a fresh random corrupt set (5 %: they
  send their masked input, then refuse to help unmask) and every other client dropping
  with probability 0.1 at a stage drawn uniformly from its stages; a round succeeds when
  it reveals the sum of exactly the clients that sent a masked input, within the declared
  precision;
* ``client_step``: at 10^6 parameters and the sized k, our client step (encode, k X25519 +
  HKDF pair seeds, self mask + k pair masks, framing) beside Flower 1.42's own SecAgg+
  client step with the same k, timed side by side (its ``_collect_masked_vectors``
  arithmetic after share decryption: weight factor, stochastic quantisation, k ECDH
  SECP384R1 key agreements and ``pseudo_rand_gen`` masks, mod, ``ndarray_to_bytes``);
  share decryption is left out of both;
* ``upload``: bytes per parameter per client at 10^5 and 10^6 parameters (the rounds' key
  material + the 4n-byte masked vector);
* ``memory``: ``secagg aggregate --protocol secagg --clients 1000 --params 100000 --drop
  100 --set neighbours=auto`` in a child process: its peak resident memory and seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import best_of, environment, write_json
from protocols.pairwise import WIRE_ID, MaskedInput, PairwiseMasking, apply_masks, pair_seed
from secagg.encoding import FixedPoint
from secagg.party import SERVER
from secagg.prf import domain, expand, random_seed
from secagg.round import RoundResult, reference_aggregate, run_round
from secagg.router import Dropout
from secagg.sealing import generate_keypair
from secagg.wire import HEADER_BYTES, TRAILER_BYTES, Payload, decode_message, encode_message

FLOWER_BYTES_PER_PARAM = 8  # Flower's masked vectors travel as int64
DROP_FRACTION = 0.1
KEY_PARAMS = 1000  # model size of the key-material rounds: PRG work there is negligible
ARRAY_HEADER_BYTES = 9  # wire.Writer.array: u8 dtype code + u64 count
DROP_STAGE = "masked_input"
AGGREGATE_BYTES = 2**26  # enough distinct masked messages to leave the caches, as a round does


SCALE_CLIENTS = 1000
SCALE_DROPOUT = 0.1
SCALE_CORRUPT = 0.05
SCALE_ROUNDS = 20
SCALE_ROUND_PARAMS = 1000
STEP_PARAMS = 1_000_000
MEMORY_PARAMS = 100_000
MEMORY_LIMIT_BYTES = 24 * 2**30
# Flower 1.42's SecAggPlusWorkflow defaults.
FLOWER_CLIPPING_RANGE = 8.0
FLOWER_QUANTIZATION_RANGE = 2**22
FLOWER_MODULUS_RANGE = 2**32
FLOWER_MAX_WEIGHT = 1000.0


def _aggregate_messages(n_params: int) -> int:
    return min(
        64, max(4, -(-AGGREGATE_BYTES // (4 * n_params)))
    )  # dropped after sharing keys: the costly case to recover


def flower_prg(seed32: int, n: int) -> np.ndarray:
    """Flower 1.42's ``pseudo_rand_gen`` per parameter: the comparison point."""
    return np.random.RandomState(seed32).randint(0, 2**32 - 1, n, dtype=np.int64)  # noqa: NPY002


def _grid(quick: bool) -> tuple[list[int], list[int]]:
    if quick:
        return [10_000, 100_000, 1_000_000], [2, 10, 50]
    return [10_000, 100_000, 1_000_000, 10_000_000], [2, 10, 50, 200]


def neighbours_for(n_clients: int) -> int | None:
    """SecAgg+'s k = O(log n): 2 * ceil(log2 n), None where that is the full graph."""
    k = 2 * math.ceil(math.log2(max(2, n_clients)))
    return k if k < n_clients - 1 else None


def _graphs(n_clients: int) -> list[tuple[str, int | None]]:
    k = neighbours_for(n_clients)
    return [("full", None)] + ([(f"secagg+ k={k}", k)] if k is not None else [])


def _n_dropped(n_clients: int) -> int:
    return int(DROP_FRACTION * n_clients) if n_clients >= 10 else 0


def _masked_message_bytes(n_params: int, ring_bits: int = 32) -> int:
    return HEADER_BYTES + TRAILER_BYTES + ARRAY_HEADER_BYTES + (ring_bits // 8) * n_params


def _round(protocol: PairwiseMasking, n_clients: int, n_params: int, dropped: int) -> RoundResult:
    updates = [np.random.default_rng(c).uniform(-1, 1, n_params) for c in range(n_clients)]
    faults = [Dropout(c, DROP_STAGE) for c in range(n_clients - dropped, n_clients)]
    return run_round(protocol, updates, faults=faults, round_id=1)


def _party_seconds(result: RoundResult, parties: list[int], stages: set[str]) -> float:
    return sum(
        seconds
        for party in parties
        for stage, seconds in result.costs.seconds.get(party, {}).items()
        if stage in stages
    )


def round_rows(quick: bool) -> list[dict[str, Any]]:
    """Whole rounds at KEY_PARAMS parameters: the parameter-independent costs."""
    _, client_counts = _grid(quick)
    rows = []
    for n_clients in client_counts:
        for graph, k in _graphs(n_clients):
            protocol = PairwiseMasking(neighbours=k)
            for dropped in sorted({0, _n_dropped(n_clients)}):
                # Best of three rounds (one at 200 clients, whose round takes seconds).
                results = [
                    _round(protocol, n_clients, KEY_PARAMS, dropped)
                    for _ in range(3 if n_clients <= 50 else 1)
                ]
                result = results[-1]
                costs = result.costs
                clients = list(range(n_clients))
                senders = [c for c in clients if costs.bytes_sent.get(c, 0) > 0]
                survivors = [c for c in clients if c < n_clients - dropped]
                masked = _masked_message_bytes(KEY_PARAMS)
                key_up = sum(costs.bytes_sent[c] for c in survivors) / len(survivors) - masked
                key_down = sum(costs.bytes_received.get(c, 0) for c in senders) / len(senders)
                rows.append(
                    {
                        "clients": n_clients,
                        "graph": graph,
                        "neighbours": k,
                        "threshold": protocol.config.threshold_for(n_clients),
                        "dropped": dropped,
                        "error": None if result.error is None else repr(result.error),
                        "included": len(result.included),
                        "key_bytes_up_per_client": key_up,
                        "key_bytes_down_per_client": key_down,
                        "client_offline_s": min(r.costs.client_seconds(offline=True) for r in results),
                        # Share decryption, pair-seed agreement and masking of KEY_PARAMS values.
                        "client_masked_input_s": min(
                            _party_seconds(r, survivors, {"masked_input"}) for r in results
                        )
                        / len(survivors),
                        "client_unmasking_s": min(_party_seconds(r, clients, {"unmasking"}) for r in results)
                        / n_clients,
                        "server_routing_s": min(
                            _party_seconds(r, [SERVER], set(protocol.offline_stages)) for r in results
                        ),
                        # At KEY_PARAMS the PRG part is negligible: this is Shamir + key checks.
                        "server_reconstruct_s": min(
                            _party_seconds(r, [SERVER], {"reconstruct"}) for r in results
                        ),
                        "whole_round_s": min(
                            sum(sum(per.values()) for per in r.costs.seconds.values()) for r in results
                        ),
                    }
                )
    return rows


def component_rows(quick: bool, degrees: set[int]) -> list[dict[str, Any]]:
    """Per-parameter pieces for each model size; client masking for each peer count d."""
    sizes, _ = _grid(quick)
    rows = []
    seed = random_seed()
    own_private, _ = generate_keypair()
    _, peer_public = generate_keypair()
    ka_s = best_of(lambda: pair_seed(own_private, peer_public, round_id=1, a=0, b=1), repeat=50)
    pair_seeds_all = {j + 1: random_seed() for j in range(max(degrees))}
    label = domain("bench", round_id=1)
    protocol = PairwiseMasking()
    for n in sizes:
        repeat = 5 if n <= 10**6 else 2
        codec = protocol.config.codec(10)
        update = np.random.default_rng(n).uniform(-1, 1, n)
        total = np.zeros(n, dtype=np.uint32)
        vector = codec.encode(update)
        # Distinct messages, decoded and added in turn: the server meets each vector once,
        # cold in cache, as in a round (one hot vector would flatter it).
        messages = [
            encode_message(
                protocol_id=WIRE_ID,
                round_id=1,
                sender=c,
                recipient=SERVER,
                payload=MaskedInput(codec.encode(np.roll(update, c))),
            )
            for c in range(_aggregate_messages(n))
        ]
        table = protocol.payload_table()

        def frame(vector: np.ndarray = vector) -> bytes:
            payload = MaskedInput(vector)
            return encode_message(
                protocol_id=WIRE_ID, round_id=1, sender=0, recipient=SERVER, payload=payload
            )

        def collect(
            messages: list[bytes] = messages,
            table: dict[int, type[Payload]] = table,
            total: np.ndarray = total,
        ) -> None:
            for message in messages:
                _, payload = decode_message(message, table, protocol_id=WIRE_ID)
                np.add(total, payload.masked, out=total)  # type: ignore[attr-defined]

        def unmask_step(total: np.ndarray = total, n: int = n) -> None:
            np.subtract(total, expand(seed, label, n), out=total)

        row: dict[str, Any] = {
            "n": n,
            "encode_s": best_of(partial(codec.encode, update), repeat=repeat),
            "flower_prg_s": best_of(partial(flower_prg, 12345, n), repeat=repeat),
            "prf_expand_subtract_s": best_of(unmask_step, repeat=repeat),
            "client_frame_s": best_of(frame, repeat=repeat),
            # One masked vector off the wire (header, CRC32, decode) and into the sum.
            "server_collect_one_s": best_of(collect, repeat=repeat) / len(messages),
            "pair_seed_s": ka_s,  # one X25519 + HKDF, for reference (inside the rounds' figures)
            "client_mask_s": {},
        }
        for d in sorted(degrees):
            # Degrees above 50 cost d expansions each: time them once at the largest n.
            reps = 1 if d * n > 5 * 10**7 else repeat
            pair_seeds = {j: pair_seeds_all[j] for j in range(1, d + 1)}

            def client_step(
                pair_seeds: dict[int, bytes] = pair_seeds,
                codec: FixedPoint = codec,
                update: np.ndarray = update,
            ) -> np.ndarray:
                encoded = codec.encode(update)
                return apply_masks(encoded, client=0, self_mask_seed=seed, pair_seeds=pair_seeds, round_id=1)

            row["client_mask_s"][d] = best_of(client_step, repeat=reps)
        rows.append(row)
    return rows


def _degree(n_clients: int, k: int | None) -> int:
    """Peers a surviving client masks with (clients that drop after sharing keys count)."""
    return (n_clients - 1) if k is None else k


def grid_rows(rounds: list[dict[str, Any]], components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for comp in components:
        n = comp["n"]
        for key in rounds:
            n_clients, k, dropped = key["clients"], key["neighbours"], key["dropped"]
            d = _degree(n_clients, k)
            survivors = n_clients - dropped
            # Every dropped client's pair masks with its live neighbours are rebuilt.
            group = n_clients if k is None else k + 1
            rebuilt_pairs = dropped * min(group - 1, survivors)
            # The masked-input stage at KEY_PARAMS (share decryption, pair seeds) + the
            # per-parameter work at n: encode + d + 1 masks, and the message framing.
            client_s = key["client_masked_input_s"] + comp["client_mask_s"][d] + comp["client_frame_s"]
            flower_s = (d + 1) * comp["flower_prg_s"]  # self mask + one PRG per neighbour
            unmask_s = (
                key["server_reconstruct_s"] + (survivors + rebuilt_pairs) * comp["prf_expand_subtract_s"]
            )
            aggregate_s = survivors * comp["server_collect_one_s"]
            up = key["key_bytes_up_per_client"] + _masked_message_bytes(n)
            row = {
                "n": n,
                "clients": n_clients,
                "graph": key["graph"],
                "neighbours": k,
                "dropped": dropped,
                "error": key["error"],
                "client_encode_mask_s": client_s,
                "client_offline_s": key["client_offline_s"],
                "server_routing_s": key["server_routing_s"],
                "server_aggregate_s": aggregate_s,
                "unmask_s": unmask_s,
                "client_ns_per_param": client_s / n * 1e9,
                "server_aggregate_ns_per_param": aggregate_s / n * 1e9,
                "unmask_ns_per_param": unmask_s / n * 1e9,
                "bytes_up_per_param": up / n,
                "bytes_down_per_param": key["key_bytes_down_per_client"] / n,
                "flower_prg_only_s": flower_s,
                "client_vs_flower_prg": client_s / flower_s,
                # Encode + masks alone (no key agreement, no framing) against Flower's PRG alone.
                "mask_only_vs_flower_prg": comp["client_mask_s"][d] / flower_s,
                "bytes_up_vs_flower_int64": (up / n) / FLOWER_BYTES_PER_PARAM,
            }
            rows.append(row)
    return rows


def validation_rows(quick: bool, grid: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Whole rounds at 10^5 parameters beside the assembled figures for the same cell."""
    n = 100_000
    out = []
    for n_clients in [2, 10] if quick else [2, 10, 50]:
        for graph, k in _graphs(n_clients):
            dropped = _n_dropped(n_clients)
            # Best of three whole rounds per figure, as best_of does for the components.
            results = [_round(PairwiseMasking(neighbours=k), n_clients, n, dropped) for _ in range(3)]
            result = results[-1]
            cell = next(
                (
                    r
                    for r in grid
                    if r["n"] == n
                    and r["clients"] == n_clients
                    and r["graph"] == graph
                    and r["dropped"] == dropped
                ),
                None,
            )
            costs = result.costs
            measured_up = sum(costs.bytes_sent[c] for c in range(n_clients - dropped)) / (n_clients - dropped)
            survivors = list(range(n_clients - dropped))
            out.append(
                {
                    "n": n,
                    "clients": n_clients,
                    "graph": graph,
                    "dropped": dropped,
                    "error": None if result.error is None else repr(result.error),
                    "measured_client_masked_input_s": min(
                        _party_seconds(r, survivors, {"masked_input"}) for r in results
                    )
                    / len(survivors),
                    "assembled_client_encode_mask_s": cell["client_encode_mask_s"] if cell else None,
                    "measured_server_aggregate_s": min(
                        _party_seconds(r, [SERVER], {"collect_masked"}) for r in results
                    ),
                    "assembled_server_aggregate_s": cell["server_aggregate_s"] if cell else None,
                    "measured_finalize_s": min(_party_seconds(r, [SERVER], {"reconstruct"}) for r in results),
                    "assembled_unmask_s": cell["unmask_s"] if cell else None,
                    "measured_bytes_up_per_param": measured_up / n,
                    "assembled_bytes_up_per_param": cell["bytes_up_per_param"] if cell else None,
                }
            )
    return out


def _scale_protocol(n_clients: int) -> PairwiseMasking:
    return PairwiseMasking(
        neighbours="auto", dropout_rate=SCALE_DROPOUT, corrupt_fraction=SCALE_CORRUPT, session="bench-scale"
    )


def scale_rounds(n_clients: int, rounds: int, n_params: int, seed: int = 18) -> dict[str, Any]:
    """``rounds`` whole SecAgg+ rounds with random dropouts and corrupt clients (see the module)."""
    protocol = _scale_protocol(n_clients)
    client_stages = ["advertise", "share_keys", "masked_input", "unmasking"]
    rng = np.random.default_rng(seed)  # simulation data and fault draws only
    rows = []
    for round_id in range(1, rounds + 1):
        corrupt = set(rng.choice(n_clients, math.ceil(SCALE_CORRUPT * n_clients), replace=False).tolist())
        faults = [Dropout(c, "unmasking") for c in sorted(corrupt)]
        stage_of: dict[int, str] = {}
        for c in range(n_clients):
            if c not in corrupt and rng.random() < SCALE_DROPOUT:
                stage_of[c] = client_stages[int(rng.integers(len(client_stages)))]
                faults.append(Dropout(c, stage_of[c]))
        # Clients that sent their masked input (dropped later or corrupt) must be in the sum.
        expected = tuple(c for c in range(n_clients) if stage_of.get(c, "unmasking") == "unmasking")
        updates = [rng.uniform(-1, 1, n_params) for _ in range(n_clients)]
        began = time.perf_counter()
        result = run_round(protocol, updates, faults=faults, round_id=round_id)
        seconds = time.perf_counter() - began
        error: str | None = None if result.error is None else repr(result.error)
        max_abs: float | None = None
        if result.error is None:
            reference = reference_aggregate(updates, result.included, kind="sum")
            max_abs = float(np.max(np.abs(result.unwrap() - reference)))
            bound = protocol.precision(n_clients=n_clients, value_range=1.0)
            if result.included != expected:
                error = f"included {len(result.included)} clients, expected {len(expected)}"
            elif max_abs > bound:
                error = f"max error {max_abs:.3e} above the declared precision {bound:.3e}"
        survivors = [c for c in expected if c not in corrupt]
        key_up = sum(result.costs.bytes_sent[c] for c in survivors) / len(survivors) - _masked_message_bytes(
            n_params
        )
        rows.append(
            {
                "round": round_id,
                "dropped": len(stage_of),
                "dropped_by_stage": {s: sum(v == s for v in stage_of.values()) for s in client_stages},
                "corrupt_silent_at_unmasking": len(corrupt),
                "included": len(result.included),
                "succeeded": error is None,
                "error": error,
                "max_abs_error": max_abs,
                "seconds": seconds,
                "key_bytes_up_per_client": key_up,
            }
        )
        del result, updates
    return {
        "clients": n_clients,
        "params": n_params,
        "rounds": rows,
        "succeeded": sum(r["succeeded"] for r in rows),
        "of": rounds,
    }


def _flower_client_step(update: np.ndarray, k: int) -> Any:
    """Flower 1.42's SecAgg+ client masking (``secaggplus_mod._collect_masked_vectors``
    after share decryption), built from its own functions, for ``k`` neighbours."""
    from flwr.common import ndarray_to_bytes
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
    from flwr.common.secure_aggregation.ndarrays_arithmetic import (
        factor_combine,
        parameters_addition,
        parameters_mod,
        parameters_multiply,
        parameters_subtraction,
    )
    from flwr.common.secure_aggregation.quantization import quantize
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
    from flwr.supercore.primitives.asymmetric import (
        bytes_to_private_key,
        bytes_to_public_key,
        generate_key_pairs,
        private_key_to_bytes,
        public_key_to_bytes,
    )

    own_private, _ = generate_key_pairs()
    sk1 = private_key_to_bytes(own_private)
    peers = [public_key_to_bytes(generate_key_pairs()[1]) for _ in range(k)]
    rd_seed = random_seed()
    nid = k // 2  # half the neighbours above, half below

    def step() -> list[bytes]:
        ratio = 1.0 / FLOWER_MAX_WEIGHT
        q_ratio = round(ratio * FLOWER_QUANTIZATION_RANGE)
        parameters = parameters_multiply([update], q_ratio / FLOWER_QUANTIZATION_RANGE)
        quantized = quantize(parameters, FLOWER_CLIPPING_RANGE, FLOWER_QUANTIZATION_RANGE)
        quantized = factor_combine(q_ratio, quantized)
        dimensions = [a.shape for a in quantized]
        quantized = parameters_addition(quantized, pseudo_rand_gen(rd_seed, FLOWER_MODULUS_RANGE, dimensions))
        for node_id, peer in enumerate(peers):
            shared = generate_shared_key(bytes_to_private_key(sk1), bytes_to_public_key(peer))
            mask = pseudo_rand_gen(shared, FLOWER_MODULUS_RANGE, dimensions)
            if nid > node_id:
                quantized = parameters_addition(quantized, mask)
            else:
                quantized = parameters_subtraction(quantized, mask)
        quantized = parameters_mod(quantized, FLOWER_MODULUS_RANGE)
        return [ndarray_to_bytes(a) for a in quantized]

    return step


def scale_client_step(n_params: int, k: int, repeat: int = 3) -> dict[str, Any]:
    """Our client step and Flower's at ``n_params`` and ``k`` neighbours, side by side."""
    update = np.random.default_rng(1).uniform(-1, 1, n_params)
    codec = PairwiseMasking().config.codec(SCALE_CLIENTS)
    own_private, _ = generate_keypair()
    peers = [generate_keypair()[1] for _ in range(k)]
    seed = random_seed()
    client = k // 2
    peer_ids = [p for p in range(k + 1) if p != client]

    def ours() -> bytes:
        encoded = codec.encode(update)
        pair_seeds = {
            peer: pair_seed(own_private, public, round_id=1, a=min(client, peer), b=max(client, peer))
            for peer, public in zip(peer_ids, peers, strict=True)
        }
        masked = apply_masks(encoded, client=client, self_mask_seed=seed, pair_seeds=pair_seeds, round_id=1)
        return encode_message(
            protocol_id=WIRE_ID, round_id=1, sender=client, recipient=SERVER, payload=MaskedInput(masked)
        )

    row: dict[str, Any] = {"params": n_params, "neighbours": k}
    try:
        flower = _flower_client_step(update, k)
    except ImportError as exc:  # Flower is an optional extra
        flower = None
        row["flower_error"] = f"flwr not installed: {exc}"
    # Interleaved, so both meet the same machine load.
    ours_s, flower_s = [], []
    for _ in range(repeat):
        ours_s.append(best_of(ours, repeat=1))
        if flower is not None:
            flower_s.append(best_of(flower, repeat=1))
    row["ours_s"] = min(ours_s)
    row["ours_bytes"] = len(ours())
    if flower is not None:
        row["flower_s"] = min(flower_s)
        row["flower_bytes"] = sum(len(b) for b in flower())
        row["speedup"] = row["flower_s"] / row["ours_s"]
    return row


def scale_memory(n_clients: int, n_params: int, drop: int) -> dict[str, Any]:
    """``secagg aggregate`` at scale in a child process: peak resident memory, seconds."""
    argv = [
        sys.executable, "-m", "secagg", "aggregate", "--protocol", "secagg",
        "--clients", str(n_clients), "--params", str(n_params), "--drop", str(drop),
        "--set", "neighbours=auto", "--json",
    ]  # fmt: skip
    began = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, check=False)  # noqa: S603 - our own CLI
    seconds = time.perf_counter() - began
    # ru_maxrss of the largest child waited for (kB on Linux): this child, the only big one.
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    row: dict[str, Any] = {
        "command": " ".join(["python", *argv[1:]]),
        "returncode": done.returncode,
        "seconds": seconds,
        "peak_rss_bytes": peak,
        "peak_rss_gib": peak / 2**30,
        "limit_gib": MEMORY_LIMIT_BYTES / 2**30,
        "within_limit": done.returncode == 0 and peak <= MEMORY_LIMIT_BYTES,
    }
    if done.returncode == 0:
        report = json.loads(done.stdout)
        row.update(
            {
                k: report[k]
                for k in ("bytes_per_param", "max_abs_error", "declared_precision", "client_encode_s")
            }
        )
        row["included"] = len(report["included"])
    else:
        row["stderr"] = done.stderr.decode(errors="replace")[-800:]
    return row


def run_scale(
    *, clients: int = SCALE_CLIENTS, rounds: int = SCALE_ROUNDS, memory: bool = True
) -> dict[str, Any]:
    sizing = _scale_protocol(clients).config.sizing(clients)
    k = sizing.neighbours if sizing.neighbours is not None else clients - 1
    rounds_record = scale_rounds(clients, rounds, SCALE_ROUND_PARAMS)
    key_up = float(np.mean([r["key_bytes_up_per_client"] for r in rounds_record["rounds"]]))
    upload = {str(n): (key_up + _masked_message_bytes(n)) / n for n in (MEMORY_PARAMS, STEP_PARAMS)}
    return {
        "sizing": {
            "clients": clients,
            "dropout": SCALE_DROPOUT,
            "corrupt": SCALE_CORRUPT,
            "neighbours": sizing.neighbours,
            "threshold": sizing.threshold,
            "privacy_failure_log2": sizing.privacy_log2,
            "correctness_failure_log2": sizing.correctness_log2,
        },
        "rounds": rounds_record,
        "client_step": scale_client_step(STEP_PARAMS, k),
        "upload_bytes_per_param": upload,
        "memory": scale_memory(clients, MEMORY_PARAMS, int(SCALE_DROPOUT * clients)) if memory else None,
        "targets": {
            "rounds_succeed": f"{rounds} of {rounds}",
            "client_step_speedup_vs_flower_at_1e6": 5.0,
            "upload_bytes_per_param": 4.1,
            "memory_gib": MEMORY_LIMIT_BYTES / 2**30,
        },
    }


def run(
    quick: bool = False, *, scale: bool = False, grid: bool = True, memory: bool = True
) -> dict[str, Any]:
    record: dict[str, Any] = {"benchmark": "pairwise", "environment": environment(), "quick": quick}
    if scale:
        record["scale"] = run_scale(memory=memory)
    if grid:
        record.update(run_grid(quick))
    return record


def run_grid(quick: bool) -> dict[str, Any]:
    rounds = round_rows(quick)
    degrees = {_degree(r["clients"], r["neighbours"]) for r in rounds}
    components = component_rows(quick, degrees)
    grid = grid_rows(rounds, components)
    return {
        "key_params": KEY_PARAMS,
        "drop_fraction": DROP_FRACTION,
        "drop_stage": DROP_STAGE,
        "flower_bytes_per_param": FLOWER_BYTES_PER_PARAM,
        "rounds": rounds,
        "components": components,
        "grid": grid,
        "validation": validation_rows(quick, grid),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid (CI)")
    parser.add_argument("--scale", action="store_true", help="add the 1,000-client SecAgg+ targets (long)")
    parser.add_argument("--scale-only", action="store_true", help="the 1,000-client targets alone")
    parser.add_argument(
        "--no-memory", action="store_true", help="with --scale: skip the 1,000-client 10^5-parameter round"
    )
    parser.add_argument(
        "--step-only",
        action="store_true",
        help="the client step beside Flower's at 10^6 and the sized k alone",
    )
    parser.add_argument("--out", default="bench-out")
    args = parser.parse_args(argv)
    if args.step_only:
        sizing = _scale_protocol(SCALE_CLIENTS).config.sizing(SCALE_CLIENTS)
        k = sizing.neighbours if sizing.neighbours is not None else SCALE_CLIENTS - 1
        step = {
            "benchmark": "pairwise-step",
            "environment": environment(),
            **scale_client_step(STEP_PARAMS, k),
        }
        print(f"client step {step}")
        print(f"wrote {write_json(Path(args.out) / 'pairwise-step.json', step)}")
        return 0
    record = run(
        args.quick, scale=args.scale or args.scale_only, grid=not args.scale_only, memory=not args.no_memory
    )
    path = write_json(Path(args.out) / "pairwise.json", record)
    if "scale" in record:
        scale = record["scale"]
        print(f"sizing {scale['sizing']}")
        print(f"rounds {scale['rounds']['succeeded']} of {scale['rounds']['of']} succeeded")
        print(f"client step {scale['client_step']}")
        print(f"upload B/param {scale['upload_bytes_per_param']}")
        print(f"memory {scale['memory']}")
    for row in record.get("grid", []):
        print(
            f"n={row['n']:>9} clients={row['clients']:>3} {row['graph']:<14} drop={row['dropped']:>2}  "
            f"client {row['client_ns_per_param']:7.2f} ns/p ({row['client_vs_flower_prg']:.2f}x flower PRG, "
            f"masks alone {row['mask_only_vs_flower_prg']:.2f}x)  "
            f"aggregate {row['server_aggregate_ns_per_param']:8.2f} ns/p  "
            f"unmask {row['unmask_ns_per_param']:9.2f} ns/p  up {row['bytes_up_per_param']:.4f} B/p "
            f"({row['bytes_up_vs_flower_int64']:.3f}x flower)  down {row['bytes_down_per_param']:.4f} B/p"
            + (f"  ERROR {row['error']}" if row["error"] else "")
        )
    for row in record.get("validation", []):
        print(f"validation {row}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
