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
"""

from __future__ import annotations

import argparse
import math
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import best_of, environment, write_json
from protocols.pairwise import WIRE_ID, MaskedInput, PairwiseMasking, apply_masks, pair_seed
from secagg.encoding import FixedPoint
from secagg.party import SERVER
from secagg.prf import domain, expand, random_seed
from secagg.round import RoundResult, run_round
from secagg.router import Dropout
from secagg.sealing import generate_keypair
from secagg.wire import HEADER_BYTES, TRAILER_BYTES, Payload, decode_message, encode_message

FLOWER_BYTES_PER_PARAM = 8  # Flower's masked vectors travel as int64
DROP_FRACTION = 0.1
KEY_PARAMS = 1000  # model size of the key-material rounds: PRG work there is negligible
ARRAY_HEADER_BYTES = 9  # wire.Writer.array: u8 dtype code + u64 count
DROP_STAGE = "masked_input"
AGGREGATE_BYTES = 2**26  # enough distinct masked messages to leave the caches, as a round does


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


def run(quick: bool = False) -> dict[str, Any]:
    rounds = round_rows(quick)
    degrees = {_degree(r["clients"], r["neighbours"]) for r in rounds}
    components = component_rows(quick, degrees)
    grid = grid_rows(rounds, components)
    return {
        "benchmark": "pairwise",
        "environment": environment(),
        "quick": quick,
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
    parser.add_argument("--out", default="bench-out")
    args = parser.parse_args(argv)
    record = run(args.quick)
    path = write_json(Path(args.out) / "pairwise.json", record)
    for row in record["grid"]:
        print(
            f"n={row['n']:>9} clients={row['clients']:>3} {row['graph']:<14} drop={row['dropped']:>2}  "
            f"client {row['client_ns_per_param']:7.2f} ns/p ({row['client_vs_flower_prg']:.2f}x flower PRG, "
            f"masks alone {row['mask_only_vs_flower_prg']:.2f}x)  "
            f"aggregate {row['server_aggregate_ns_per_param']:8.2f} ns/p  "
            f"unmask {row['unmask_ns_per_param']:9.2f} ns/p  up {row['bytes_up_per_param']:.4f} B/p "
            f"({row['bytes_up_vs_flower_int64']:.3f}x flower)  down {row['bytes_down_per_param']:.4f} B/p"
            + (f"  ERROR {row['error']}" if row["error"] else "")
        )
    for row in record["validation"]:
        print(f"validation {row}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
