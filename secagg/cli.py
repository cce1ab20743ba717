"""The ``secagg`` command line.

``secagg protocols`` lists the registered protocols and their threat models;
``secagg aggregate`` runs one round on seeded random updates and reports error, time
and bytes. The leakage lab and the benchmarks add their own subcommands (``attack``,
``assess``, ``evaluate``, ``bench``) through a ``register(subparsers)`` function in
their ``cli`` modules; this module is the composition root, the one place in
``secagg`` that reaches up to ``protocols`` (lazily, inside the commands).

``secagg aggregate --json`` prints one object (schema ``secagg-aggregate/2``):
``schema``, ``protocol``, ``clients``, ``params``, ``dropped``, ``included``,
``aggregate_kind``, every measure of :class:`secagg.costs.RoundCosts` under its one
name (``client_s``, ``client_offline_s``, ``server_s``, ``finalize_s``, ``setup_s``,
``bytes_up_per_client``, ``bytes_down_per_client``, ``bytes_per_param``,
``expansion_over_float32``, ``total_bytes``, ``max_abs_error``,
``declared_precision``), ``seconds_by_party`` (seconds per party per stage) and
``config``. Version 2 (from the unversioned 1): ``client_encode_s`` is ``client_s`` and
``server_aggregate_s`` is ``server_s``, as in ``results.json`` and ``bench.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from secagg.errors import ConfigError, SecAggError

AGGREGATE_SCHEMA = "secagg-aggregate/2"  # of `secagg aggregate --json` (see the module docstring)
# Packages that contribute subcommands; they ship with secagg, so a missing one is an
# ImportError, not a silently shorter command list. Each imports no torch at module level.
_PLUGINS = ("leakage.cli", "leakage.app.cli", "benchmarks.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secagg",
        description="Secure aggregation for federated learning, measured: what each "
        "protocol costs and what its server can learn.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    listing = sub.add_parser("protocols", help="list the protocols and their threat models")
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    listing.set_defaults(handler=_cmd_protocols)

    agg = sub.add_parser("aggregate", help="run one round on random updates; report error, time, bytes")
    agg.add_argument("--protocol", required=True, help="a name from `secagg protocols`")
    agg.add_argument("--clients", type=int, default=4, help="number of clients (default 4)")
    agg.add_argument("--params", type=int, default=10_000, help="parameters per update (default 10000)")
    agg.add_argument("--drop", type=int, default=0, help="clients that drop out after sending their input")
    agg.add_argument(
        "--range",
        type=float,
        default=1.0,
        dest="value_range",
        help="updates are uniform in [-R, R] (default 1)",
    )
    agg.add_argument("--seed", type=int, default=0, help="seed of the simulated updates (not of any key)")
    agg.add_argument("--round", type=int, default=0, dest="round_id", help="round number")
    agg.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a protocol config field (repeatable), e.g. --set key_bits=3072",
    )
    agg.add_argument("--json", action="store_true", help="print one JSON object")
    agg.set_defaults(handler=_cmd_aggregate)

    user_errors: list[type[Exception]] = [SecAggError]
    for module in _PLUGINS:
        plugin = importlib.import_module(module)
        plugin.register(sub)
        # A plugin's own typed errors (e.g. leakage's) are reported like ours, not as tracebacks.
        user_errors.extend(getattr(plugin, "USER_ERRORS", ()))
    parser.set_defaults(user_errors=tuple(user_errors))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except args.user_errors as exc:
        print(f"secagg: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


def _cmd_protocols(args: argparse.Namespace) -> int:
    import protocols

    rows = []
    for name in protocols.available():
        cls = protocols.get(name)
        tm = cls.threat_model
        rows.append(
            {
                "name": name,
                "aggregate": cls.aggregate_kind,
                "summary": cls.summary,
                "server_sees": tm.server_sees,
                "keys": tm.keys,
                "collusion": tm.collusion,
                "dropouts": tm.dropouts,
                "min_clients": tm.min_clients,
            }
        )
    if args.json:
        print(json.dumps({"protocols": rows}, indent=2))
        return 0
    print(_table(rows, ["name", "server_sees", "keys", "dropouts", "min_clients"]))
    return 0


def parse_overrides(pairs: Sequence[str], config_type: type[Any]) -> dict[str, Any]:
    """``KEY=VALUE`` strings to typed config overrides (types from the dataclass defaults)."""
    fields = {f.name: f for f in dataclasses.fields(config_type)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or key not in fields:
            raise ConfigError(f"expected KEY=VALUE with KEY in {sorted(fields)}, got {pair!r}")
        default = fields[key].default
        value: Any = raw
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ConfigError(f"{key}: expected true or false, got {raw!r}")
            value = raw.lower() in ("true", "1")
        elif isinstance(default, int):
            value = int(raw)
        elif isinstance(default, float):
            value = float(raw)
        elif default is None:
            # Optional fields (e.g. neighbours: int | None): 'none', then int, then float.
            value = _parse_optional(raw)
        out[key] = value
    return out


def _parse_optional(raw: str) -> Any:
    if raw.lower() == "none":
        return None
    for convert in (int, float):
        try:
            return convert(raw)
        except ValueError:
            continue
    return raw


def _cmd_aggregate(args: argparse.Namespace) -> int:
    import protocols
    from secagg.costs import round_costs
    from secagg.round import run_round
    from secagg.router import Dropout

    if args.clients < 1:
        raise ConfigError(f"--clients: expected >= 1, got {args.clients}")
    if args.params < 1:
        raise ConfigError(f"--params: expected >= 1, got {args.params}")
    if not 0 <= args.drop < args.clients:
        raise ConfigError(f"--drop: expected 0 <= K < clients ({args.clients}), got {args.drop}")
    if not (np.isfinite(args.value_range) and args.value_range > 0):
        raise ConfigError(f"--range: expected a finite R > 0, got {args.value_range}")
    cls = protocols.get(args.protocol)
    config = parse_overrides(args.set, cls.Config)
    protocol = cls(**config)
    if cls.input_bound_field not in config:
        # Inputs are uniform in [-R, R]: the protocol's public bound is R unless --set says otherwise.
        protocol = protocol.with_input_bound(args.value_range)

    rng = np.random.default_rng(args.seed)  # simulation data only, never key material
    updates = [rng.uniform(-args.value_range, args.value_range, args.params) for _ in range(args.clients)]
    weights = [float(w) for w in rng.integers(1, 101, args.clients)]
    dropped = list(range(args.clients - args.drop, args.clients))
    faults = [Dropout(c, protocol.late_dropout_stage) for c in dropped]
    use_weights = weights if protocol.aggregate_kind == "weighted_mean" else None
    result = run_round(protocol, updates, weights=use_weights, faults=faults, round_id=args.round_id)
    result.unwrap()
    costs = round_costs(result, updates, weights=use_weights, value_range=args.value_range)
    report = {
        "schema": AGGREGATE_SCHEMA,
        "protocol": args.protocol,
        "clients": args.clients,
        "params": args.params,
        "dropped": dropped,
        "included": list(result.included),
        "aggregate_kind": protocol.aggregate_kind,
        **costs.as_dict(),
        "seconds_by_party": {
            _party(pid): {stage: round(s, 6) for stage, s in per.items()}
            for pid, per in result.costs.seconds.items()
        },
        "config": dataclasses.asdict(protocol.config),
    }
    if args.json:
        print(json.dumps(report, default=str))
        return 0
    print(
        f"protocol        {args.protocol} ({protocol.aggregate_kind} of {len(result.included)} "
        f"of {args.clients} clients, {args.params} parameters)"
    )
    print(
        f"max abs error   {report['max_abs_error']:.3e}  (declared precision "
        f"{report['declared_precision']:.3e})"
    )
    print(
        f"upload          {report['bytes_up_per_client']:.0f} bytes/client, "
        f"{report['bytes_per_param']:.3f} bytes/param ({report['expansion_over_float32']:.2f}x float32)"
    )
    print(
        f"client          {report['client_s']:.4f} s/client "
        f"(offline {report['client_offline_s']:.4f} s)"
    )
    print(
        f"server          {report['server_s']:.4f} s aggregate, "
        f"{report['finalize_s']:.4f} s finalize"
    )
    if dropped:
        print(f"dropped         {dropped}")
    return 0


def _party(pid: int) -> str:
    from secagg.party import party_name

    return party_name(pid)


def _table(rows: list[dict[str, Any]], columns: list[str], width: int = 60) -> str:
    def cell(value: Any) -> str:
        text = str(value)
        return text if len(text) <= width else text[: width - 1] + "…"

    widths = {c: max(len(c), *(len(cell(r[c])) for r in rows)) if rows else len(c) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines.append("  ".join("-" * widths[c] for c in columns))
    for row in rows:
        lines.append("  ".join(cell(row[c]).ljust(widths[c]) for c in columns))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
