"""The ``evaluate`` and ``assess`` commands (registered into ``secagg`` by :func:`register`).

``secagg evaluate`` is the main job (:mod:`leakage.app.evaluate`): every protocol, attacked,
reported in ``report.html`` + ``results.json``. ``secagg assess`` is one protocol (plus
an optional client-side defense) with the verdict table on the terminal, a PNG of the
reconstructions and a JSON file; ``--json`` prints one JSON object whose ``rows`` list
has per row ``protocol``, ``observer``, ``observable``, ``attack``, ``psnr``, ``ssim``,
``label_accuracy`` and ``verdict`` (plus the other :class:`leakage.assess.AssessmentRow`
fields).

This module imports neither torch nor numpy at module level, so registering the
commands costs nothing; the handlers import them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from leakage.attacks.registry import ATTACK_NAMES

MODEL_CHOICES = ("lenet", "mlp", "convnet")


def _csv(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _attack_list(text: str) -> tuple[str, ...]:
    names = _csv(text)
    unknown = [n for n in names if n not in ATTACK_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected attacks from {', '.join(ATTACK_NAMES)}, got {text!r}")
    return names


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(float(item)) for item in _csv(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated sizes like 1e3,1e4, got {text!r}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected sizes >= 1, got {text!r}")
    return sizes


def _common(parser: argparse.ArgumentParser, *, clients: int) -> None:
    parser.add_argument("--clients", type=int, default=clients, help=f"simulated clients (default {clients})")
    parser.add_argument("--batch", type=int, default=1, help="images per client (default 1)")
    parser.add_argument(
        "--attacks",
        type=_attack_list,
        default=("idlg", "ig"),
        help="comma-separated attacks run on gradient-like observables (default idlg,ig; "
        f"choices {', '.join(ATTACK_NAMES)})",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="attack steps on gradient-like observables (default 150, --quick 40)",
    )
    parser.add_argument("--model", choices=MODEL_CHOICES, default="lenet", help="default lenet (DLG's)")
    parser.add_argument(
        "--resolution", type=int, default=None, help="image side in pixels (default 32, --quick 16)"
    )
    parser.add_argument("--width", type=int, default=None, help="mlp hidden width / convnet channels")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds the model, the data choice and the attacks"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small keys (each protocol's fast_config) and few attack steps"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: the models are tiny; more threads mostly contend)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="processes that share the attacks (default 2; 1: everything in this process)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")


def register(subparsers: Any) -> None:
    """Add ``evaluate`` and ``assess`` to argparse subparsers."""
    evaluate = subparsers.add_parser(
        "evaluate",
        help="the main job: every protocol on real images, attacked; writes report.html + results.json",
        description="Run one round of every protocol on embedded real images, point gradient-inversion "
        "attacks at every server view, run the client-side defenses, measure costs, and write a "
        "self-contained report.html and results.json.",
    )
    _common(evaluate, clients=4)
    evaluate.add_argument(
        "--protocols",
        type=_csv,
        default=None,
        help="comma-separated protocol names (default: every registered protocol)",
    )
    evaluate.add_argument(
        "--defenses",
        default=None,
        help="defense specs separated by ';' (e.g. 'gaussian:var=1e-2;prune:ratio=0.3'), "
        "'none' for none (default: one representative setting each)",
    )
    evaluate.add_argument("--out", default="secagg-report", help="output directory (default secagg-report/)")
    evaluate.add_argument(
        "--max-protocol-seconds",
        type=float,
        default=60.0,
        help="a protocol projected slower than this at its secure default runs its fast_config (default 60)",
    )
    evaluate.add_argument(
        "--cost-sizes",
        type=_sizes,
        default=None,
        help="comma-separated model sizes of the cost plot (default 1e3,1e4,1e5; --quick 1e3,4e3)",
    )
    evaluate.add_argument(
        "--malicious",
        type=_csv,
        default=(),
        help="server attacks for the 'server that deviates' section: inconsistency,imprint,trap "
        "(default none); each runs with no defence, with model binding and with vetting",
    )
    evaluate.add_argument(
        "--malicious-protocols",
        type=_csv,
        default=None,
        help="protocols of that section (default plaintext-fedsgd,paillier,ckks,two-server,secagg)",
    )
    evaluate.add_argument("--json", action="store_true", help="print results.json's content on stdout")
    evaluate.set_defaults(handler=handle_evaluate)

    assess = subparsers.add_parser(
        "assess",
        help="attack one protocol's server views; print the verdict table, write PNG + JSON",
        description="One round of one protocol (after an optional client-side defense) on embedded "
        "real images; every observable of every server view is attacked and given a verdict.",
    )
    assess.add_argument("--protocol", required=True, help="a name from `secagg protocols`")
    assess.add_argument(
        "--defense",
        default=None,
        help="client-side transform spec, e.g. gaussian:var=1e-2; with --server: vet",
    )
    assess.add_argument(
        "--server",
        default=None,
        help="a deviating server: malicious:inconsistency|imprint|trap (default: honest-but-curious)",
    )
    _common(assess, clients=2)
    assess.add_argument("--out", default="out/assess", help="directory for the PNG and JSON")
    assess.add_argument("--json", action="store_true", help="print one JSON object with `rows` on stdout")
    assess.set_defaults(handler=handle_assess)


def _settings(args: argparse.Namespace, **extra: Any) -> Any:
    from leakage.app.settings import Settings

    return Settings(
        clients=args.clients,
        batch=args.batch,
        attacks=args.attacks,
        iterations=args.iterations,
        model=args.model,
        resolution=args.resolution,
        width=args.width,
        device=args.device,
        seed=args.seed,
        quick=args.quick,
        progress=not args.no_progress,
        threads=args.threads,
        workers=args.workers,
        **extra,
    )


def _fail(error: Exception) -> int:
    print(f"secagg: error: {type(error).__name__}: {error}", file=sys.stderr)
    return 2


def handle_evaluate(args: argparse.Namespace) -> int:
    from leakage.app.evaluate import evaluate, summary_table
    from leakage.errors import LeakageError
    from secagg.errors import SecAggError

    defenses: tuple[str, ...] | None = None
    if args.defenses is not None:
        defenses = (
            ()
            if args.defenses.strip().lower() == "none"
            else tuple(d.strip() for d in args.defenses.split(";") if d.strip())
        )
    try:
        settings = _settings(
            args,
            protocols=args.protocols,
            defenses=defenses,
            out=Path(args.out),
            max_protocol_seconds=args.max_protocol_seconds,
            cost_sizes=args.cost_sizes,
            malicious=args.malicious,
            malicious_protocols=args.malicious_protocols,
        )
        record = evaluate(settings)
    except (LeakageError, SecAggError) as error:
        return _fail(error)
    if args.json:
        print(json.dumps(record.as_dict(), default=str))
    else:
        print(summary_table(record))
        if record.malicious:
            from leakage.app.malicious import malicious_table

            print("\nA server that deviates:")
            print(malicious_table([dict(row) for row in record.malicious]))
        print(f"\nreport: {Path(args.out) / 'report.html'}   data: {Path(args.out) / 'results.json'}")
    return 0


def handle_assess(args: argparse.Namespace) -> int:
    from leakage.errors import LeakageError
    from secagg.errors import SecAggError

    if getattr(args, "server", None):
        return _handle_assess_malicious(args)
    try:
        record = run_assess(args)
    except (LeakageError, SecAggError) as error:
        return _fail(error)
    if args.json:
        print(json.dumps(record, default=str))
    else:
        print(verdict_table(record["rows"]))
        for note in record["notes"]:
            print(f"note: {note}")
        print(f"PNG {record['png']}  JSON {record['json']}")
    return 0


def _handle_assess_malicious(args: argparse.Namespace) -> int:
    from leakage.app.evaluate import Log
    from leakage.app.malicious import malicious_table, run_assess_malicious
    from leakage.errors import LeakageError
    from secagg.errors import SecAggError

    try:
        record = run_assess_malicious(args, log=Log(not args.no_progress))
    except (LeakageError, SecAggError) as error:
        return _fail(error)
    if args.json:
        print(json.dumps(record, default=str))
    else:
        print(malicious_table(record["rows"]))
        for note in record["notes"]:
            print(f"note: {note}")
        print(f"PNG {record['png']}  JSON {record['json']}")
    return 0


def run_assess(args: argparse.Namespace) -> dict[str, Any]:
    """One protocol, one round, every server view attacked; writes PNG + JSON."""
    import numpy as np
    import torch

    import protocols
    from leakage.app.evaluate import build_protocol, round_notes
    from leakage.app.settings import Log
    from leakage.app.simulation import configure_device, simulate
    from leakage.assess import assess
    from leakage.png import encode_png, image_grid
    from secagg.costs import round_costs
    from secagg.round import run_round

    settings = _settings(args)
    log = Log(settings.progress)
    configure_device(settings)
    cls = protocols.get(args.protocol)
    sim = simulate(settings)
    updates, update_kind = sim.updates_for(cls.aggregate_kind)
    ddp_round = None
    if args.defense:
        from secagg.defences.ddp import DDPRound
        from secagg.defences.transforms import parse_transforms

        transform = parse_transforms(args.defense)
        # Distributed DP: clients send ring integers, the revealed sum is decoded, then attacked.
        ddp_round = DDPRound.bind(
            transform, n_clients=settings.clients, n_params=sim.n_params, aggregate_kind=cls.aggregate_kind
        )
        if ddp_round is not None:
            updates = ddp_round.encode(updates)
        else:
            updates = [np.asarray(transform.apply(u), dtype=np.float64) for u in updates]
    if ddp_round is not None:
        protocol, note = ddp_round.protocol(cls, fast=settings.quick)
    else:
        protocol, note = build_protocol(
            args.protocol, updates, quick=settings.quick, max_seconds=60.0, log=log
        )
    weights = [float(settings.batch)] * settings.clients if cls.aggregate_kind == "weighted_mean" else None
    log(f"{args.protocol}: one round, {settings.clients} clients, {sim.n_params} parameters ({note})")
    result = run_round(protocol, updates, weights=weights)
    name = args.protocol + (f" + {args.defense}" if args.defense else "")
    observations = result.observations()
    if ddp_round is not None:
        observations = ddp_round.observations(observations)
    assessment = assess(
        observations,
        sim.model,
        sim.truth,
        settings.budget(),
        label=name,
        update=update_kind,
        w_before=sim.w_before,
        progress=log,
        workers=settings.workers,
    )
    rows = [row.as_dict() for row in assessment.rows]
    assessment.notes[:0] = round_notes(result)
    if ddp_round is not None:  # epsilon next to the verdict of every row of the revealed sum
        epsilon = ddp_round.epsilon(len(result.included)) if result.included else float("inf")
        for row in rows:
            if row["kind"] == "aggregate":
                row["epsilon"] = epsilon
        assessment.notes.insert(0, ddp_round.note(len(result.included)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"assess_{args.protocol}" + ("_defended" if args.defense else "")
    # Originals on top, then one row per attacked observable (matched reconstructions).
    grid_rows = [sim.originals.numpy()]
    for index in sorted(assessment.reconstructions):
        grid_rows.append(assessment.reconstructions[index].numpy())
    width = max(r.shape[0] for r in grid_rows)
    padded = [
        np.concatenate([r, np.ones((width - r.shape[0], *r.shape[1:]))]) if r.shape[0] < width else r
        for r in grid_rows
    ]
    png = out / f"{stem}.png"
    png.write_bytes(encode_png(image_grid(padded, scale=3)))
    record: dict[str, Any] = {
        "protocol": name,
        "defense": args.defense,
        "clients": settings.clients,
        "batch": settings.batch,
        "n_params": sim.n_params,
        "config_note": note,
        "update": update_kind.kind,
        "error": None if result.error is None else f"{type(result.error).__name__}: {result.error}",
        "costs": round_costs(result, updates, weights=weights).as_dict(),
        "defense_info": None if ddp_round is None else ddp_round.info(len(result.included)),
        "rows": rows,
        "uniformity": [u.as_dict() for u in assessment.uniformity],
        "notes": assessment.notes,
        "png": str(png),
        "png_rows": ["originals"] + [f"{r['observer']}: {r['observable']} ({r['attack']})" for r in rows],
        "torch_threads": torch.get_num_threads(),
    }
    json_path = out / f"{stem}.json"
    record["json"] = str(json_path)
    json_path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record


def verdict_table(rows: list[dict[str, Any]]) -> str:
    """The verdict table: observer, observable, attack, PSNR, SSIM, label accuracy, the
    attack's budget (steps x restarts) and the verdict."""
    header = (
        f"{'observer':<10} {'observable':<34} {'attack':<10} {'PSNR dB':>8} {'SSIM':>6} "
        f"{'labels':>6} {'random':>7} {'budget':>9}  verdict"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        baseline = "-" if r["baseline_psnr"] is None else f"{r['baseline_psnr']:.1f}"
        verdict = r["verdict"] + (f" ({r['reason']})" if r["reason"] else "")
        if r.get("epsilon") is not None:
            verdict += f"  epsilon={r['epsilon']:.3g}"
        budget = f"{r['budget']}x{r['restarts']}" if "budget" in r else "-"
        lines.append(
            f"{r['observer']:<10} {r['observable'][:34]:<34} {r['attack']:<10} {r['psnr']:>8.1f} "
            f"{r['ssim']:>6.3f} {r['label_accuracy']:>6.2f} {baseline:>7} {budget:>9}  {verdict}"
        )
    return "\n".join(lines)
