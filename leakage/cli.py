"""The ``attack`` command: point one gradient-inversion attack at simulated clients.

``secagg attack`` (registered by :func:`register`) and ``python -m leakage attack``
(standalone, for a machine with only torch and numpy) run the same handler. This module
imports neither torch nor numpy at module level, so registering the command is free.

Per batch: build the seeded model, let the simulated client compute its gradient (or,
for ``ig-fedavg``, its weight update after local SGD steps) on the true images, hand
only that to the attack, then match reconstructions to originals (Hungarian) and score.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time
from typing import Any

from leakage.attacks.registry import ATTACK_NAMES, ATTACKS, attack_named
from leakage.errors import LeakageError

# Reported by `secagg` as typed errors, not tracebacks.
USER_ERRORS = (LeakageError,)

MODEL_CHOICES = ("lenet", "mlp", "convnet")
DATASET_CHOICES = ("embedded", "cifar10", "cifar100", "mnist")
# JSON has no infinity: identical images (PSNR = inf) are reported at this cap.
PSNR_CAP_DB = 200.0


def register(subparsers: Any) -> None:
    """Add the ``attack`` subcommand (handler in ``args.handler``) to argparse subparsers."""
    parser = subparsers.add_parser(
        "attack",
        help="run a gradient-inversion attack (DLG, iDLG, IG, analytic) on embedded images",
        description="Simulate clients on real images, give the attack only their gradient, "
        "and report PSNR/SSIM/label accuracy; writes a PNG grid and a JSON file.",
    )
    parser.add_argument("--attack", choices=ATTACK_NAMES, default="dlg")
    parser.add_argument("--model", choices=MODEL_CHOICES, default=None,
                        help="default: the attack's own (mlp for analytic attacks, lenet otherwise)")
    parser.add_argument("--batch", type=int, default=1, help="images per client gradient")
    parser.add_argument("--images", type=int, default=4, help="images attacked in total")
    parser.add_argument("--iterations", type=int, default=None,
                        help="optimiser steps (default per attack: " + ", ".join(
                            f"{a.name} {a.default_iterations}" for a in ATTACKS.values() if a.iterative
                        ) + ")")
    parser.add_argument("--restarts", type=int, default=None, help="restarts (default 4)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--seed", type=int, default=0, help="seeds the model and the attack")
    parser.add_argument("--resolution", type=int, default=None,
                        help="resize images to this square size (embedded default 32)")
    parser.add_argument("--dataset", choices=DATASET_CHOICES, default="embedded")
    parser.add_argument("--data-dir", default=None, help="local CIFAR/MNIST directory")
    parser.add_argument("--local-steps", type=int, default=4,
                        help="ig-fedavg: client's local SGD steps (default 4)")
    parser.add_argument("--local-lr", type=float, default=0.1,
                        help="ig-fedavg: client's local learning rate (default 0.1)")
    parser.add_argument("--out", default="out/attack", help="directory for the PNG and JSON")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1; the attack graphs are small, so "
                        "more threads mostly add contention)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.set_defaults(handler=handle_attack)


def _finite(value: float) -> float:
    return PSNR_CAP_DB if math.isinf(value) and value > 0 else value


def handle_attack(args: argparse.Namespace) -> int:
    """Run the command; returns the exit status (2 on a leakage error)."""
    from leakage.errors import LeakageError

    try:
        record = run_attack_command(args)
    except LeakageError as error:
        print(f"leakage: error: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(record))
    return 0


def run_attack_command(args: argparse.Namespace) -> dict[str, Any]:
    """Do the work of ``attack``; returns the JSON record (also written to ``--out``)."""
    import torch

    from leakage.attacks import FedAvgSpec, client_gradients, client_weight_update, run_attack
    from leakage.attacks.common import resolve_device
    from leakage.data import load_dataset, spread_indices
    from leakage.errors import AttackConfigError
    from leakage.metrics import RECOVERED_PSNR_DB, match, score
    from leakage.models import build_model
    from leakage.png import write_grid
    from leakage.progress import ProgressBar

    if args.batch < 1 or args.images < 1:
        raise AttackConfigError(f"expected --batch and --images >= 1, got {args.batch}, "
                                f"{args.images}")
    torch.set_num_threads(max(1, args.threads))
    attack = attack_named(args.attack)
    model_name = args.model or attack.default_model
    device = resolve_device(args.device)
    data = load_dataset(args.dataset, data_dir=args.data_dir, resolution=args.resolution)
    chosen = data.select(spread_indices(data.labels, args.images))
    channels, size = int(chosen.images.shape[1]), int(chosen.images.shape[2])
    report = sys.stderr if args.json else sys.stdout
    fedavg = (FedAvgSpec(lr=args.local_lr, local_steps=args.local_steps)
              if attack.shares == "weights" else None)

    rows: list[dict[str, Any]] = []
    reconstructions = []
    seconds = 0.0
    iterations = 0
    started = time.perf_counter()
    batches = math.ceil(len(chosen) / args.batch)
    bar = ProgressBar(args.attack, enabled=not args.no_progress)
    for number, start in enumerate(range(0, len(chosen), args.batch)):
        images = chosen.images[start:start + args.batch]
        labels = chosen.labels[start:start + args.batch]
        model = build_model(model_name, num_classes=data.num_classes, in_channels=channels,
                            image_size=size, seed=args.seed)
        if fedavg is None:
            shared = client_gradients(model, images, labels)
        else:  # the attacker sees w_before and w_after; it matches their difference
            before, after = client_weight_update(model, images, labels, lr=fedavg.lr,
                                                 local_steps=fedavg.local_steps)
            shared = [b - a for b, a in zip(before, after)]
        bar.restart(f"{args.attack} {number + 1}/{batches}")
        result = run_attack(
            args.attack, model, shared, input_shape=(channels, size, size),
            num_classes=data.num_classes, batch_size=images.shape[0],
            iterations=args.iterations, device=device, seed=args.seed + number,
            restarts=args.restarts, fedavg=fedavg, progress=bar,
        )
        seconds += result.seconds
        iterations += result.iterations
        for offset, item in enumerate(score(result.images, result.labels, images, labels)):
            rows.append({
                "index": start + offset,
                "psnr": _finite(item.psnr), "ssim": item.ssim, "mse": item.mse,
                "label_true": item.label_true, "label_recovered": item.label_recovered,
                "iterations": result.iterations, "recovered": item.recovered(),
                "class_name": data.class_names[item.label_true],
            })
        reconstructions.append(result.images[match(result.images, images)])
    wall = time.perf_counter() - started

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"attack_{args.attack}_{model_name}_b{args.batch}"
    png = write_grid(out / f"{stem}.png", chosen.images.numpy(),
                     torch.cat(reconstructions).numpy())
    record: dict[str, Any] = {
        "attack": args.attack, "model": model_name, "device": str(device),
        "seconds": seconds, "wall_seconds": wall, "dataset": args.dataset,
        "batch": args.batch, "seed": args.seed,
        "iterations_per_second": iterations / seconds if seconds > 0 else None,
        "label_accuracy": sum(r["label_true"] == r["label_recovered"] for r in rows) / len(rows),
        "recovered": sum(r["recovered"] for r in rows),
        "recovered_threshold_db": RECOVERED_PSNR_DB,
        "images": rows, "png": str(png),
    }
    json_path = out / f"{stem}.json"
    record["json"] = str(json_path)
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    _print_table(record, report)
    return record


def _print_table(record: dict[str, Any], stream: Any) -> None:
    stream.write(f"{record['attack']} on {record['model']} ({record['device']}), "
                 f"batch {record['batch']}: {record['seconds']:.1f} s\n")
    stream.write(f"{'image':>5} {'class':<18} {'PSNR dB':>8} {'SSIM':>6} {'MSE':>9} "
                 f"{'label':>9}\n")
    for row in record["images"]:
        label = f"{row['label_recovered']}/{row['label_true']}"
        stream.write(f"{row['index']:>5} {row['class_name']:<18} {row['psnr']:>8.2f} "
                     f"{row['ssim']:>6.3f} {row['mse']:>9.2e} {label:>9}\n")
    stream.write(f"label accuracy {record['label_accuracy']:.0%}, recovered "
                 f"(PSNR >= {record['recovered_threshold_db']:g} dB) {record['recovered']}/"
                 f"{len(record['images'])}; PNG {record['png']}, JSON {record['json']}\n")
