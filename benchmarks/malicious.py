"""A server that deviates, through every protocol, and the defences that stop it.

    python -m benchmarks.malicious [--quick] [--out bench-out] [--seeds 5] [--iterations 100]

Every run is :func:`leakage.app.malicious.run_malicious`: the server sends the models of
:mod:`leakage.malicious`, clients train on what they received, the registered protocol
runs unchanged, and the attacker reads what the party holding the output sees.

- ``imprint``: Robbing the Fed (Fowl et al. 2022) through ``secagg`` and ``two-server``:
  16 clients x batch 8 at 32x32 (128 images in one aggregate), 256 bins, over ``--seeds``
  draws of the clients' images; the count of images back at >= 30 dB next to the count
  the bin analysis expects (:func:`leakage.malicious.expected_imprint_recoveries_drawn`:
  ``n sum_g p_g (1 - p_g)^(n-1)`` with the draw made without replacement from the 240
  public images), mean over seeds, and their ratio.
- ``inconsistency``: Pasquini et al. 2022 through every protocol (4 clients, batch 1,
  32x32, iDLG): the target's update cosine (all coordinates, and without the classifier
  bias the suppressed clients still move) and the target image's PSNR next to the same
  attack on the target's plaintext gradient.
- ``trap``: Boenisch et al. 2023 through ``secagg`` (16 x 8, 512 rows).
- ``bind``: the inconsistency round with model binding on, per protocol: the typed error
  and zero images; the imprint round with binding on (one model for all: not stopped).
- ``vet``: every attack model and the honest models (lenet, mlp, convnet at init and after
  10 FedAvg rounds) through :func:`leakage.vetting.vet`: flagged or not, with the checks.
- ``binding_cost``: honest rounds of every protocol at LeNet's 15,826 parameters with and
  without binding, interleaved in one run: bytes/param ratio and client-time ratio (best
  of 3 each).

Writes ``malicious.json`` and ``malicious_imprint.png`` (originals over the imprint
reconstruction through ``secagg``, first 32 images).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import environment, write_json

FULL: dict[str, Any] = {
    "clients": 16, "batch": 8, "resolution": 32, "bins": 256, "trap_rows": 512, "seeds": 5,
    "inconsistency_clients": 4, "iterations": 100, "cost_params": 15_826,
}  # fmt: skip
QUICK: dict[str, Any] = {
    "clients": 4, "batch": 4, "resolution": 16, "bins": 64, "trap_rows": 128, "seeds": 1,
    "inconsistency_clients": 3, "iterations": 20, "cost_params": 2_000,
}  # fmt: skip


def _say(message: str) -> None:
    print(f"[malicious {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _row(settings: Any) -> dict[str, Any]:
    from leakage.app.malicious import as_json, run_malicious

    _say(f"{settings.attack} via {settings.protocol} (defence {settings.defense or 'none'})")
    return as_json(run_malicious(settings))


def imprint_rows(grid: dict[str, Any], quick: bool) -> tuple[list[dict[str, Any]], dict[str, Any], Any]:
    from leakage.app.malicious import MaliciousSettings, run_malicious

    rows: list[dict[str, Any]] = []
    picture = None
    for name in ("secagg", "two-server"):
        for seed in range(grid["seeds"]):
            settings = MaliciousSettings(
                attack="imprint", protocol=name, clients=grid["clients"], batch=grid["batch"],
                resolution=grid["resolution"], bins=grid["bins"], seed=seed, quick=quick,
            )  # fmt: skip
            _say(f"imprint via {name}, seed {seed}")
            record = run_malicious(settings)
            from leakage.app.malicious import as_json

            rows.append(as_json(record))
            if picture is None and name == "secagg":
                picture = (record["originals"][:32], record["reconstructions"][:32])
    summary: dict[str, Any] = {}
    for name in ("secagg", "two-server"):
        mine = [r for r in rows if r["protocol"] == name]
        measured = float(np.mean([r["recovered"] for r in mine]))
        expected = float(np.mean([r["expected"] for r in mine]))
        alone = float(np.mean([r["alone"] for r in mine]))
        summary[name] = {
            "measured_mean": measured,
            "expected_mean": expected,
            "ratio": measured / expected if expected else None,
            "alone_mean": alone,
            "within_10pct_runs": sum(abs(r["recovered"] / r["expected"] - 1) <= 0.1 for r in mine),
            "runs": len(mine),
            "min_recovered": min(r["recovered"] for r in mine),
            "images": mine[0]["images"],
            "half_reached_every_run": all(r["recovered"] >= r["images"] / 2 for r in mine),
        }
    return rows, summary, picture


def inconsistency_rows(grid: dict[str, Any], quick: bool) -> list[dict[str, Any]]:
    import protocols
    from leakage.app.malicious import MaliciousSettings

    rows = []
    for name in protocols.available():
        settings = MaliciousSettings(
            attack="inconsistency", protocol=name, clients=grid["inconsistency_clients"], batch=1,
            resolution=grid["resolution"], iterations=grid["iterations"], quick=quick, attacks=("idlg",),
        )  # fmt: skip
        rows.append(_row(settings))
    return rows


def bind_rows(quick: bool) -> list[dict[str, Any]]:
    """Binding on, per protocol: the inconsistency round (MLP, analytic read-back: cheap
    and exact, so a recovery would show) and an imprint round."""
    import protocols
    from leakage.app.malicious import MaliciousSettings

    rows = []
    common: dict[str, Any] = {
        "clients": 3, "batch": 1, "model": "mlp", "width": 16, "resolution": 8, "quick": True,
    }  # fmt: skip
    for name in protocols.available():
        for attack in ("inconsistency", "imprint"):
            for defense in (None, "bind"):
                settings = MaliciousSettings(
                    attack=attack, protocol=name, defense=defense, attacks=("analytic",), bins=16, **common
                )
                rows.append(_row(settings))
    return rows


def vet_rows() -> list[dict[str, Any]]:
    import torch

    from leakage.attacks import client_gradients, client_weight_update
    from leakage.data import load_embedded
    from leakage.malicious import ImprintSpec, TrapSpec, imprint_model, suppressed_model, trap_model
    from leakage.models import MODEL_NAMES, build_model
    from leakage.vetting import vet

    data = load_embedded(32)
    pool = torch.cat([data.images, data.images.flip(-1)])
    images, labels = pool[:8], data.labels[:8]
    shape = (3, 32, 32)
    rows = []

    def check(kind: str, name: str, model: torch.nn.Module, malicious: bool) -> None:
        findings = vet(model, images, client_gradients(model, images, labels))
        rows.append({
            "kind": kind, "model": name, "malicious": malicious, "flagged": bool(findings),
            "checks": sorted({f.check for f in findings}),
        })  # fmt: skip

    base = build_model("lenet", seed=0)
    check("imprint (sparse, 256 bins)", "lenet", imprint_model(base, pool, ImprintSpec(bins=256)), True)
    check(
        "imprint (cumulative, 256 bins)", "lenet",
        imprint_model(base, pool, ImprintSpec(bins=256, structure="cumulative")), True,
    )  # fmt: skip
    check("trap (paper: scale 0.95, bias 0)", "lenet", trap_model(base, shape, TrapSpec(rows=512)), True)
    check(
        "trap (bias calibrated, rate 1/128)", "lenet",
        trap_model(base, shape, TrapSpec(rows=512, rate=1 / 128), pool), True,
    )  # fmt: skip
    for name in MODEL_NAMES:
        model = build_model(name, seed=1)
        check("inconsistency (suppressed)", name, suppressed_model(model), True)
        check("honest at init", name, model, False)
        for step in range(10):  # ten FedAvg rounds, two clients of 8 images, one local step
            afters = [
                client_weight_update(model, pool[16 * step + 8 * c : 16 * step + 8 * c + 8], labels, lr=0.1)[
                    1
                ]
                for c in range(2)
            ]
            with torch.no_grad():
                for param, *new in zip(model.parameters(), *afters, strict=True):
                    param.copy_(torch.stack(new).mean(0))
        check("honest after 10 rounds", name, model, False)
    return rows


def binding_cost(n_params: int, quick: bool) -> list[dict[str, Any]]:
    """Honest rounds with and without binding, interleaved; best of 3 each."""
    import protocols
    from secagg.round import run_round

    rows = []
    digest = b"\x5a" * 32
    for name in protocols.available():
        cls = protocols.get(name)
        _say(f"binding cost via {name}")
        protocol = cls(**cls.fast_config)
        updates = [np.random.default_rng(i).uniform(-0.5, 0.5, n_params) for i in range(4)]
        weights = [1.0] * 4 if cls.aggregate_kind == "weighted_mean" else None
        best: dict[bool, tuple[float, float]] = {}
        for _ in range(1 if quick else 3):
            for bound in (False, True):
                result = run_round(
                    protocol, updates, weights=weights, bindings=[digest] * 4 if bound else None
                )
                client = result.costs.client_seconds()
                bytes_per_param = result.costs.bytes_per_param()
                if bound not in best or client < best[bound][0]:
                    best[bound] = (client, bytes_per_param)
        rows.append({
            "protocol": name, "params": n_params, "config": "fast_config",
            "client_s": best[False][0], "client_s_bound": best[True][0],
            "client_time_ratio": best[True][0] / best[False][0],
            "bytes_per_param": best[False][1], "bytes_per_param_bound": best[True][1],
            "bytes_ratio": best[True][1] / best[False][1],
        })  # fmt: skip
    return rows


def run(quick: bool = False, out: Path | str = "bench-out", seeds: int | None = None,
        iterations: int | None = None) -> dict[str, Any]:  # fmt: skip
    import torch

    torch.set_num_threads(1)
    grid = dict(QUICK if quick else FULL)
    if seeds is not None:
        grid["seeds"] = seeds
    if iterations is not None:
        grid["iterations"] = iterations
    started = time.perf_counter()
    record: dict[str, Any] = {
        "benchmark": "malicious",
        "environment": environment(),
        "quick": quick,
        "grid": grid,
    }
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    rows, summary, picture = imprint_rows(grid, quick)
    record["imprint"] = {"rows": rows, "summary": summary}
    from leakage.app.malicious import MaliciousSettings

    trap = MaliciousSettings(
        attack="trap", protocol="secagg", clients=grid["clients"], batch=grid["batch"],
        resolution=grid["resolution"], trap_rows=grid["trap_rows"], quick=quick,
    )  # fmt: skip
    record["trap"] = _row(trap)
    sections: tuple[tuple[str, Any], ...] = (
        ("vet", vet_rows),
        ("bind", lambda: bind_rows(quick)),
        ("binding_cost", lambda: binding_cost(grid["cost_params"], quick)),
        ("inconsistency", lambda: inconsistency_rows(grid, quick)),
    )
    for key, section in sections:
        write_json(target / "malicious.json", record)  # what is done so far survives a crash
        record[key] = section()
    record["seconds"] = time.perf_counter() - started
    if picture is not None:
        from leakage.png import encode_png, image_grid

        originals, recovered = picture
        png = target / "malicious_imprint.png"
        png.write_bytes(encode_png(image_grid([originals.numpy(), recovered.numpy()], scale=2)))
        record["png"] = str(png)
    write_json(target / "malicious.json", record)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.malicious", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="bench-out")
    parser.add_argument("--seeds", type=int, default=None, help="imprint draws (default 5, quick 1)")
    parser.add_argument("--iterations", type=int, default=None, help="iDLG steps on the isolated update")
    args = parser.parse_args(argv)
    record = run(args.quick, args.out, args.seeds, args.iterations)
    for name, item in record["imprint"]["summary"].items():
        print(
            f"imprint via {name}: {item['measured_mean']:.1f} of {item['images']} images >= 30 dB "
            f"(expected {item['expected_mean']:.1f}, ratio {item['ratio']:.3f}, min {item['min_recovered']})"
        )
    trap = record["trap"]
    print(f"trap via secagg: {trap['recovered']} of {trap['images']} images >= 30 dB")
    for row in record["inconsistency"]:
        print(
            f"inconsistency via {row['protocol']}: cosine {row['target_cosine']} "
            f"(without the classifier bias {row['target_cosine_trusted']}), "
            f"target {row['target_psnr']} dB vs plaintext {row['plaintext_psnr']} dB, {row['error'] or 'ok'}"
        )
    for row in record["bind"]:
        print(f"bind {row['defense'] or 'off'}: {row['attack']} via {row['protocol']}: "
              f"{row['recovered']} images, {row['error'] or 'revealed'}")  # fmt: skip
    for row in record["vet"]:
        print(f"vet: {row['kind']} ({row['model']}): flagged={row['flagged']} {row['checks']}")
    for row in record["binding_cost"]:
        print(
            f"binding cost {row['protocol']}: bytes x{row['bytes_ratio']:.4f}, "
            f"client time x{row['client_time_ratio']:.3f}"
        )
    print(f"JSON {Path(args.out) / 'malicious.json'}  ({record['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
