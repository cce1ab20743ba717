"""The main job, ``secagg evaluate``: every protocol's round on real images, attacked.

What it does (issue 7): simulated clients compute LeNet gradients (Zhu, Liu, Han 2019's
model) on the embedded real 32x32 images; every registered protocol runs one round over
them through the router (real keys, real bytes); :func:`leakage.assess.assess` points
the attacks at every server view (and the colluding pair's, for two servers); the
client-side defenses of :mod:`secagg.defences.transforms` run at one representative setting each
over the plaintext baseline; a small cost sweep over model sizes runs on random
updates. It writes ``report.html`` (self-contained, :mod:`leakage.app.report`) and
``results.json``, prints a summary table and reports progress on stderr.

What clients send: protocols whose aggregate is a ``sum`` get gradients (FedSGD);
``weighted_mean`` protocols get weights after one local SGD step at ``lr`` (FedAvg with
sample counts = local batch), which the attacker turns back into a gradient with the
``w_before`` it sent. A config with a ``clip`` field gets the smallest power of two
that covers the updates when its default does not (the range is public).

Keys: every protocol runs its default (secure) configuration, except that with
``quick`` it runs its ``fast_config`` (e.g. 512-bit Paillier), and a protocol whose
round is projected (from a 256-parameter probe round, linearly) to take longer than
``max_protocol_seconds`` also falls back to its ``fast_config``; the report says which.

``results.json`` schema (``"schema": "secagg-evaluate/1"``)::

    {
      "schema": "secagg-evaluate/1",
      "created": ISO-8601 UTC time, "wall_seconds": float,
      "environment": {"python", "torch", "numpy", "platform", "cpu_count", "device"},
      "settings": {"model", "resolution", "n_params", "clients", "batch", "attacks",
                   "iterations", "aggregate_iterations", "restarts",
                   "baseline_seeds", "threshold_db", "lr", "seed", "quick", "device",
                   "protocols", "defenses"},
      "originals": [{"client": int, "labels": [int], "classes": [str]}],
      "runs": [{                                # one per protocol, then one per defense
          "name": str,                          # protocol name, or "plaintext-fedsgd + SPEC"
          "protocol": str, "defense": str | null, "kind": "protocol" | "defense",
          "update": "gradient" | "weights", "aggregate_kind": "sum" | "weighted_mean",
          "config": {...}, "config_note": str,
          "threat_model": {"keys", "server_sees", "collusion", "dropouts", "min_clients"},
          "error": str | null,
          "costs": {"client_s", "server_s", "finalize_s", "setup_s",
                    "bytes_up_per_client", "bytes_per_param", "expansion_over_float32",
                    "precision_error", "declared_precision"} | null,
          "defense_info": {...} | null,          # the transform's describe() + relative error
          "rows": [ROW], "uniformity": [UNIFORMITY], "notes": [str],
          "verdicts": {"client_messages": "exposed" | "not exposed" | null,
                       "aggregate": "exposed" | "not exposed" | null}
      }],
      "rows": [ROW],                            # every run's rows, flat (issue 6's table)
      "cost_curve": [{"protocol", "n_params", "n_clients", "client_s", "server_s",
                      "finalize_s", "bytes_per_param", "config_note"}],
      "cost_curve_notes": [str]
    }

    ROW = {"protocol", "observer", "observable", "kind", "attack", "psnr", "psnr_mean",
           "ssim", "label_accuracy", "structure", "baseline_psnr", "beats_random",
           "verdict", "reason", "iterations", "seconds", "full_attack", "budget",
           "restarts", "note"}
          (as :class:`leakage.assess.AssessmentRow`; ``protocol`` is the run's name)
    UNIFORMITY = {"protocol", "observer", "observable", "kind", "n_bytes", "chi2",
                  "p_value", "uniform"}

``psnr`` is the best-matched image's PSNR in dB, capped at 200 (identical images).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leakage.assess import AGGREGATE, Assessment, Budget, ClientData, UpdateKind, assess, is_colluding
from leakage.attacks import FedAvgSpec, client_gradients, client_weight_update
from leakage.attacks.common import resolve_device
from leakage.errors import AttackConfigError
from leakage.progress import ProgressBar

SCHEMA = "secagg-evaluate/1"
# One representative setting per defense (the DLG paper's "defends" side where it has one).
DEFAULT_DEFENSES: tuple[str, ...] = (
    "gaussian:var=1e-2",
    "laplace:var=1e-2",
    "dp:clip=1.0,noise_multiplier=1.0",
    "fp16",
    "int8",
    "prune:ratio=0.3",
)
PROBE_PARAMS = 256


@dataclass(frozen=True)
class Settings:
    """What ``secagg evaluate`` runs; the defaults are the newcomer's command."""

    protocols: tuple[str, ...] | None = None  # None: every registered protocol
    defenses: tuple[str, ...] | None = None  # None: DEFAULT_DEFENSES if secagg.defences.transforms exists
    clients: int = 4
    batch: int = 1
    attacks: tuple[str, ...] = ("idlg", "ig")
    model: str = "lenet"
    resolution: int | None = None  # image side; None: 32 (the embedded images), quick 16
    width: int | None = None  # mlp hidden width / convnet channels (None: the model's default)
    quick: bool = False
    device: str = "auto"
    out: Path = Path("secagg-report")
    iterations: int | None = None  # None: 150, quick 40
    lr: float = 0.1
    seed: int = 0
    max_protocol_seconds: float = 60.0
    cost_sizes: tuple[int, ...] | None = None  # None: (1e3, 1e4, 1e5), quick (1e3, 4e3)
    cost_clients: int = 4
    progress: bool = True
    # Torch threads on the CPU. One by default: the attacked models are tiny (LeNet,
    # batch 1), so a second thread gains little, and on a shared machine it lost 30x
    # (3 s -> 100 s for 40 iDLG steps) to contention.
    threads: int = 1

    def __post_init__(self) -> None:
        if self.clients < 1 or self.batch < 1:
            raise AttackConfigError(f"expected clients and batch >= 1, got {self.clients}, {self.batch}")
        if not self.lr > 0:
            raise AttackConfigError(f"expected lr > 0, got {self.lr}")
        if self.resolution is not None and self.resolution < 4:
            raise AttackConfigError(f"expected resolution >= 4, got {self.resolution}")

    @property
    def image_size(self) -> int:
        if self.resolution is not None:
            return self.resolution
        # 16x16 keeps --quick under a minute and still shows pixel-exact recoveries.
        return 16 if self.quick else 32

    def budget(self) -> Budget:
        iterations = self.iterations if self.iterations is not None else (40 if self.quick else 150)
        return Budget(
            attacks=self.attacks,
            iterations=iterations,
            # None: a multi-image observable gets ``iterations`` per image it hides.
            aggregate_iterations=None,
            baseline_seeds=2,
            # Restarts run side by side (one batched L-BFGS solve); a problem whose best
            # draw settles stops the others, so 4 draws cost far less than 4 runs.
            restarts=1 if self.quick else 4,
            device=self.device,
            seed=self.seed,
        )

    def sizes(self) -> tuple[int, ...]:
        if self.cost_sizes is not None:
            return self.cost_sizes
        return (1_000, 4_000) if self.quick else (1_000, 10_000, 100_000)


class _StepBar(ProgressBar):
    """A progress bar that ends its line once per attack (attacks report completion twice)."""

    _finished = False

    def __call__(self, done: int, total: int) -> None:
        if done >= total:
            if self._finished:
                return
            self._finished = True
        super().__call__(done, total)

    def restart(self, label: str) -> None:
        super().restart(label)
        self._finished = False


class Log:
    """Progress lines on stderr, each stamped with the seconds since the start."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.started = time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(f"[{time.perf_counter() - self.started:6.1f}s] {message}", file=sys.stderr, flush=True)


# --- protocols ----------------------------------------------------------------------------


def covering(protocol: Any, max_abs: float) -> Any:
    """``protocol`` with an input bound covering ``max_abs`` (the smallest power of two
    above it) when its own bound does not; the bound is public configuration."""
    bound = protocol.input_bound
    if bound is not None and max_abs > bound:
        return protocol.with_input_bound(float(2.0 ** math.ceil(math.log2(max_abs))))
    return protocol


def protocol_config(cls: Any, *, fast: bool, max_abs: float) -> Any:
    """An instance of ``cls``: its ``fast_config`` when asked, with a bound covering the updates."""
    return covering(cls(**(dict(cls.fast_config) if fast else {})), max_abs)


def build_protocol(
    name: str,
    updates: Sequence[np.ndarray],
    *,
    quick: bool,
    max_seconds: float,
    log: Callable[[str], None],
) -> tuple[Any, str]:
    """The protocol instance for ``name`` and a note saying which configuration it got."""
    import protocols
    from secagg.errors import SecAggError
    from secagg.round import run_round

    cls = protocols.get(name)
    max_abs = float(max(np.abs(u).max() for u in updates))
    if quick:
        return protocol_config(cls, fast=True, max_abs=max_abs), "fast_config (--quick)"
    protocol = protocol_config(cls, fast=False, max_abs=max_abs)
    # Probe: a small round with this config; client and server time scale linearly in n_params.
    n_params = updates[0].size
    probe = [u[:PROBE_PARAMS] for u in updates[: max(2, min(len(updates), 2))]]
    if len(probe) < 2:
        probe = [probe[0], probe[0]]
    try:
        started = time.perf_counter()
        result = run_round(
            protocol,
            probe,
            weights=[1.0] * len(probe) if protocol.aggregate_kind == "weighted_mean" else None,
        )
        fixed = time.perf_counter() - started
    except SecAggError as exc:
        return protocol, f"default config (probe failed: {type(exc).__name__})"
    per_param = (
        result.costs.client_seconds() * len(updates)
        + result.costs.server_seconds()
        + result.costs.finalize_seconds()
    ) / min(PROBE_PARAMS, n_params)
    projected = per_param * n_params + fixed
    if projected > max_seconds and cls.fast_config:
        log(
            f"{name}: secure default projected at {projected:.0f} s for {n_params} parameters "
            f"(> {max_seconds:g} s); running its fast_config instead"
        )
        fast = protocol_config(cls, fast=True, max_abs=max_abs)
        return fast, f"fast_config (secure default projected at {projected:.0f} s)"
    return protocol, "default config"


def _config_dict(protocol: Any) -> dict[str, Any]:
    try:
        return {k: v for k, v in dataclasses.asdict(protocol.config).items()}
    except TypeError:
        return {}


def _threat(cls: Any) -> dict[str, Any]:
    tm = cls.threat_model
    return {
        "keys": tm.keys,
        "server_sees": tm.server_sees,
        "collusion": tm.collusion,
        "dropouts": tm.dropouts,
        "min_clients": tm.min_clients,
    }


def round_costs(
    result: Any,
    protocol: Any,
    updates: Sequence[np.ndarray],
    weights: Sequence[float] | None,
    value_range: float,
) -> dict[str, Any]:
    from secagg.round import reference_aggregate

    costs = result.costs
    record: dict[str, Any] = {
        "client_s": costs.client_seconds(),
        "server_s": costs.server_seconds(),
        "finalize_s": costs.finalize_seconds(),
        "setup_s": costs.setup_seconds,
        "bytes_up_per_client": costs.bytes_up_per_client(),
        "bytes_per_param": costs.bytes_per_param(),
        "expansion_over_float32": costs.bytes_per_param() / 4.0,
        "precision_error": None,
        "declared_precision": protocol.precision(n_clients=len(updates), value_range=value_range),
    }
    if result.error is None and result.aggregate is not None:
        reference = reference_aggregate(
            updates, result.included, kind=protocol.aggregate_kind, weights=weights
        )
        record["precision_error"] = float(np.max(np.abs(result.aggregate - reference)))
    return record


# --- the cost sweep -----------------------------------------------------------------------


def cost_point(protocol: Any, n_params: int, n_clients: int, *, seed: int = 0) -> dict[str, Any]:
    """One round of ``protocol`` on random updates of ``n_params``: time and bytes."""
    from secagg.round import run_round

    rng = np.random.default_rng(seed)  # simulation data, never key material
    clip = protocol.input_bound if protocol.input_bound is not None else 1.0
    updates = [rng.uniform(-clip / 2, clip / 2, n_params) for _ in range(n_clients)]
    weights = [1.0] * n_clients if protocol.aggregate_kind == "weighted_mean" else None
    result = run_round(protocol, updates, weights=weights)
    result.unwrap()
    costs = result.costs
    return {
        "protocol": protocol.name,
        "n_params": n_params,
        "n_clients": n_clients,
        "client_s": costs.client_seconds(),
        "server_s": costs.server_seconds(),
        "finalize_s": costs.finalize_seconds(),
        "setup_s": costs.setup_seconds,
        "bytes_per_param": costs.bytes_per_param(),
    }


def cost_curve(
    names: Sequence[str],
    sizes: Sequence[int],
    n_clients: int,
    *,
    quick: bool,
    max_seconds: float,
    log: Callable[[str], None],
) -> tuple[list[dict[str, Any]], list[str]]:
    """Each protocol over ``sizes``; a size projected past ``max_seconds`` is skipped."""
    import protocols
    from secagg.errors import SecAggError

    points: list[dict[str, Any]] = []
    notes: list[str] = []
    for name in names:
        cls = protocols.get(name)
        protocol = protocol_config(cls, fast=True, max_abs=0.0) if quick else cls()
        note = "fast_config" if quick else "default config"
        per_param: float | None = None
        if not quick:
            # A small probe round seeds the projection, so a slow secure default (e.g. one
            # 2048-bit Paillier ciphertext per parameter) is not run at the first size.
            try:
                probe = cost_point(protocol, max(16, min(sizes) // 10), n_clients)
                per_param = (probe["client_s"] * n_clients + probe["server_s"] + probe["finalize_s"]) / probe[
                    "n_params"
                ]
            except SecAggError:
                per_param = None
        for n_params in sorted(sizes):
            if per_param is not None and per_param * n_params > max_seconds:
                if cls.fast_config and note == "default config":
                    protocol, note = cls(**protocol_config(cls, fast=True, max_abs=0.0)), "fast_config"
                    notes.append(
                        f"{name}: fast_config from {n_params} parameters on (default projected "
                        f"at {per_param * n_params:.0f} s)"
                    )
                else:
                    notes.append(
                        f"{name}: skipped {n_params} parameters (projected {per_param * n_params:.0f} s)"
                    )
                    break
            log(f"cost curve: {name} at {n_params} parameters ({note})")
            try:
                point = cost_point(protocol, n_params, n_clients)
            except SecAggError as exc:
                notes.append(f"{name}: {n_params} parameters failed: {type(exc).__name__}: {exc}")
                break
            point["config_note"] = note
            points.append(point)
            total = point["client_s"] * n_clients + point["server_s"] + point["finalize_s"]
            per_param = total / n_params
    return points, notes


# --- the evaluation -----------------------------------------------------------------------


@dataclass(eq=False)
class Simulation:
    """The clients' private data and what each would send: gradients, or weights after
    one local SGD step; ``w_before`` is the global model the server sent."""

    model: torch.nn.Module
    truth: ClientData
    originals: torch.Tensor
    class_names: tuple[str, ...]
    gradients: list[np.ndarray]
    weights_after: list[np.ndarray]
    w_before: np.ndarray
    fedavg: FedAvgSpec

    @property
    def n_params(self) -> int:
        return int(self.w_before.size)

    def updates_for(self, aggregate_kind: str) -> tuple[list[np.ndarray], UpdateKind]:
        if aggregate_kind == "weighted_mean":
            return self.weights_after, UpdateKind("weights", self.fedavg)
        return self.gradients, UpdateKind()

    def originals_record(self) -> list[dict[str, Any]]:
        return [
            {
                "client": c,
                "labels": [int(v) for v in self.truth.labels[c]],
                "classes": [self.class_names[int(v)] for v in self.truth.labels[c]],
            }
            for c in sorted(self.truth.labels)
        ]


def configure_device(settings: Settings) -> torch.device:
    """Resolve ``settings.device`` and set the CPU thread count."""
    device = resolve_device(settings.device)
    if settings.threads >= 1:
        torch.set_num_threads(settings.threads)
    return device


def simulate(settings: Settings) -> Simulation:
    """Seeded model and clients on the embedded images (distinct classes first)."""
    from leakage.data import load_embedded, spread_indices
    from leakage.models import build_model

    data = load_embedded(settings.image_size)
    count = settings.clients * settings.batch
    if count > len(data):
        raise AttackConfigError(f"expected at most {len(data)} images in all, got {count}")
    chosen = data.select(spread_indices(data.labels, count))
    b = settings.batch
    images = {c: chosen.images[c * b : (c + 1) * b] for c in range(settings.clients)}
    labels = {c: chosen.labels[c * b : (c + 1) * b] for c in range(settings.clients)}
    model = build_model(
        settings.model,
        num_classes=data.num_classes,
        in_channels=int(chosen.images.shape[1]),
        image_size=settings.image_size,
        seed=settings.seed,
        width=settings.width,
    )
    gradients = [_flat(client_gradients(model, images[c], labels[c])) for c in range(settings.clients)]
    weights_after = [
        _flat(client_weight_update(model, images[c], labels[c], lr=settings.lr)[1])
        for c in range(settings.clients)
    ]
    return Simulation(
        model,
        ClientData(images, labels),
        chosen.images,
        data.class_names,
        gradients,
        weights_after,
        _flat(list(model.parameters())),
        FedAvgSpec(lr=settings.lr, local_steps=1),
    )


def _environment(device: torch.device) -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }


def _summary_verdict(rows: Sequence[dict[str, Any]], *, aggregate: bool) -> str | None:
    chosen = [
        r for r in rows if (r["observable"] == AGGREGATE) == aggregate and not is_colluding(r["observer"])
    ]
    if not chosen:
        return None
    return "exposed" if any(r["verdict"] == "exposed" for r in chosen) else "not exposed"


def _flat(vectors: Sequence[torch.Tensor]) -> np.ndarray:
    return torch.cat([v.detach().flatten().double() for v in vectors]).numpy()


def evaluate(settings: Settings) -> dict[str, Any]:
    """Run everything ``settings`` asks for, write report.html + results.json, return the record."""
    import protocols
    from leakage.app.report import write_report

    started = time.perf_counter()
    log = Log(settings.progress)
    device = configure_device(settings)
    names = list(settings.protocols) if settings.protocols is not None else protocols.available()
    for name in names:
        protocols.get(name)  # an unknown name fails now, listing the valid ones
    defenses = list(settings.defenses) if settings.defenses is not None else list(DEFAULT_DEFENSES)

    sim = simulate(settings)
    model, truth, w_before, n_params = sim.model, sim.truth, sim.w_before, sim.n_params
    gradients = sim.gradients
    sample_counts = [float(settings.batch)] * settings.clients
    budget = settings.budget()
    log(
        f"{settings.model} ({n_params} parameters), {settings.clients} clients x batch {settings.batch}, "
        f"{len(names)} protocols, {len(defenses)} defenses, attacks {', '.join(settings.attacks)} on {device}"
    )

    runs: list[dict[str, Any]] = []
    reconstructions: dict[str, dict[int, torch.Tensor]] = {}
    baselines: dict[tuple[Any, ...], list[Any]] = {}
    bar = _StepBar("", enabled=settings.progress) if settings.progress else None
    for name in names:
        cls = protocols.get(name)
        weighted = cls.aggregate_kind == "weighted_mean"
        updates, update_kind = sim.updates_for(cls.aggregate_kind)
        log(f"{name}: one round ({'weights' if weighted else 'gradients'})")
        protocol, note = build_protocol(
            name, updates, quick=settings.quick, max_seconds=settings.max_protocol_seconds, log=log
        )
        run = _run_one(
            name,
            protocol,
            cls,
            updates,
            sample_counts if weighted else None,
            update_kind,
            model,
            truth,
            w_before,
            budget,
            log,
            defense=None,
            config_note=note,
            baseline_cache=baselines,
            steps=bar,
        )
        reconstructions[name] = run.pop("_reconstructions")
        runs.append(run)
    if defenses:
        from secagg.defences.transforms import parse_transforms, relative_error

        base = "plaintext-fedsgd"
        cls = protocols.get(base)
        protocol = cls()
        for spec in defenses:
            transform = parse_transforms(spec)
            defended = [np.asarray(transform.apply(g), dtype=np.float64) for g in gradients]
            info = dict(transform.describe())
            info["relative_error"] = relative_error(np.sum(defended, axis=0), np.sum(gradients, axis=0))
            label = f"{base} + {spec}"
            log(
                f"{label}: one round (client 0's message"
                f"{'' if settings.quick else ' and the aggregate'} attacked)"
            )
            run = _run_one(
                label,
                protocol,
                cls,
                defended,
                None,
                UpdateKind(),
                model,
                truth,
                w_before,
                budget,
                log,
                defense=spec,
                config_note="default config",
                attack_clients=(0,),
                include_aggregate=not settings.quick,
                baseline_cache=baselines,
                steps=bar,
            )
            run["defense_info"] = info
            reconstructions[label] = run.pop("_reconstructions")
            runs.append(run)

    points, curve_notes = cost_curve(
        names,
        settings.sizes(),
        settings.cost_clients,
        quick=settings.quick,
        max_seconds=settings.max_protocol_seconds / 4,
        log=log,
    )
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": _environment(device),
        "settings": {
            "model": settings.model,
            "resolution": settings.image_size,
            "n_params": n_params,
            "clients": settings.clients,
            "batch": settings.batch,
            "attacks": list(settings.attacks),
            "iterations": budget.iterations,
            "aggregate_iterations": budget.aggregate_iterations,
            "restarts": budget.restarts,
            "baseline_seeds": budget.baseline_seeds,
            "threshold_db": budget.threshold_db,
            "lr": settings.lr,
            "seed": settings.seed,
            "quick": settings.quick,
            "device": str(device),
            "protocols": names,
            "defenses": defenses,
        },
        "originals": sim.originals_record(),
        "runs": runs,
        "rows": [row for run in runs for row in run["rows"]],
        "cost_curve": points,
        "cost_curve_notes": curve_notes,
    }
    record["wall_seconds"] = time.perf_counter() - started
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(record, indent=2, default=_json_default) + "\n")
    write_report(out / "report.html", record, originals=sim.originals, reconstructions=reconstructions)
    log(f"wrote {out / 'report.html'} and {out / 'results.json'} in {record['wall_seconds']:.0f} s")
    return record


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    return str(value)


def _run_one(
    label: str,
    protocol: Any,
    cls: Any,
    updates: Sequence[np.ndarray],
    weights: Sequence[float] | None,
    update_kind: UpdateKind,
    model: torch.nn.Module,
    truth: ClientData,
    w_before: np.ndarray,
    budget: Budget,
    log: Callable[[str], None],
    *,
    defense: str | None,
    config_note: str,
    attack_clients: Sequence[int] | None = None,
    include_aggregate: bool = True,
    baseline_cache: dict[tuple[Any, ...], list[Any]] | None = None,
    steps: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    from secagg.errors import SecAggError
    from secagg.round import run_round

    # The fields every run record starts with, whether or not the round started.
    header = {
        "name": label,
        "protocol": protocol.name,
        "defense": defense,
        "kind": "defense" if defense else "protocol",
        "update": update_kind.kind,
        "aggregate_kind": protocol.aggregate_kind,
        "config": _config_dict(protocol),
        "config_note": config_note,
        "threat_model": _threat(cls),
    }
    try:
        result = run_round(protocol, updates, weights=weights)
    except SecAggError as exc:  # refused before any message (e.g. a bit budget): a result too
        log(f"{label}: the round did not start: {type(exc).__name__}: {exc}")
        return {
            **header,
            "error": f"{type(exc).__name__}: {exc}",
            "costs": None,
            "defense_info": None,
            "rows": [],
            "uniformity": [],
            "notes": [],
            "verdicts": {"client_messages": None, "aggregate": None},
            "_reconstructions": {},
        }
    value_range = float(max(np.abs(u).max() for u in updates))
    costs = round_costs(result, protocol, updates, weights, value_range)
    log(
        f"{label}: round done ({costs['bytes_per_param']:.2f} bytes/param, "
        f"client {costs['client_s']:.2f} s); "
        "attacking the server views"
    )
    assessment: Assessment = assess(
        result.observations(),
        model,
        truth,
        budget,
        label=label,
        update=update_kind,
        w_before=w_before,
        progress=log,
        attack_clients=attack_clients,
        include_aggregate=include_aggregate,
        baseline_cache=baseline_cache,
        steps=steps,
    )
    rows = []
    for row in assessment.rows:
        item = row.as_dict()
        item["protocol"] = label
        rows.append(item)
    uniformity = []
    for check in assessment.uniformity:
        item = check.as_dict()
        item["protocol"] = label
        uniformity.append(item)
    return {
        **header,
        "error": None if result.error is None else f"{type(result.error).__name__}: {result.error}",
        "costs": costs,
        "defense_info": None,
        "rows": rows,
        "uniformity": uniformity,
        "notes": _round_notes(result, protocol) + assessment.notes,
        "verdicts": {
            "client_messages": _summary_verdict(rows, aggregate=False),
            "aggregate": _summary_verdict(rows, aggregate=True),
        },
        "_reconstructions": assessment.reconstructions,
    }


def _round_notes(result: Any, protocol: Any) -> list[str]:
    from secagg.party import party_name

    if result.error is not None:
        return [f"the round revealed no aggregate: {type(result.error).__name__}: {result.error}"]
    if protocol.aggregate_holder not in protocol.server_ids:
        return [
            f"the aggregate is revealed to the {party_name(protocol.aggregate_holder)}, not to a server, "
            "so no server view holds it; were it published, it would leak like any other protocol's sum "
            "(see the rows of the protocols whose server holds it)"
        ]
    return []


def summary_table(record: dict[str, Any]) -> str:
    """The terminal summary: one line per run."""
    header = (
        f"{'run':<44} {'client messages':<16} {'aggregate':<12} {'best PSNR':>9} "
        f"{'bytes/param':>11} {'client s':>9}"
    )
    lines = [header, "-" * len(header)]
    for run in record["runs"]:
        client_rows = [
            r for r in run["rows"] if r["observable"] != AGGREGATE and not is_colluding(r["observer"])
        ]
        best = max((r["psnr"] for r in client_rows), default=float("nan"))
        costs = run["costs"] or {}
        verdicts = run["verdicts"]
        lines.append(
            f"{run['name'][:44]:<44} {verdicts['client_messages'] or '-':<16} "
            f"{verdicts['aggregate'] or '-':<12} "
            f"{best:>9.1f} {costs.get('bytes_per_param', float('nan')):>11.2f} "
            f"{costs.get('client_s', float('nan')):>9.3f}"
        )
        colluding = [r for r in run["rows"] if is_colluding(r["observer"])]
        if colluding:
            verdict = "exposed" if any(r["verdict"] == "exposed" for r in colluding) else "not exposed"
            lines.append(f"{'  (servers colluding)':<44} {verdict:<16}")
    return "\n".join(lines)
