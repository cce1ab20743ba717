"""A deviating server through real rounds: the malicious rows of ``secagg assess``/``evaluate``.

One run (:func:`run_malicious`): the server crafts the model it sends each client
(:mod:`leakage.malicious`: ``inconsistency``, ``imprint`` or ``trap``); every client trains
on the model *it received* (one gradient, or one local SGD step for FedAvg protocols);
an optional client-side defence runs (``vet``: :mod:`leakage.vetting`, a client that
finds leak structure refuses and sends nothing; ``bind``: each client binds its round
to the digest of the model it trained on, :mod:`secagg.binding`); the registered protocol
runs *unchanged* on the updates; and the attacker reads what the party that holds the
output sees: :meth:`Protocol.observe <secagg.protocol.Protocol.observe>` on that party's
view, kind ``aggregate``. Attacks get that observation and the models the server sent,
nothing else; the clients' images only score the result.

The row: who can read the output, how many of *all* clients' images come back at
>= 30 dB (one candidate per image, :func:`recovered_count`), the target's update cosine
(inconsistency), the best PSNR and the verdict (``exposed`` when the best image reaches
the budget's threshold, as in every other row).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from leakage.app.simulation import flat
from leakage.attacks import (
    AttackResult,
    client_gradients,
    client_weight_update,
    gradient_from_vector,
    run_attack,
)
from leakage.errors import AttackConfigError
from leakage.malicious import (
    SERVER_ATTACKS,
    ImprintSpec,
    TrapSpec,
    expected_imprint_recoveries_drawn,
    imprint_edges,
    imprint_gap_probabilities,
    imprint_model,
    imprint_statistic,
    inconsistent_models,
    suppressed_coordinates,
    trap_model,
    trusted_view,
)
from leakage.metrics import hungarian
from leakage.vetting import vet

if TYPE_CHECKING:  # leakage imports the protocol layer lazily (runs with torch + numpy only)
    from secagg.protocol import Protocol

DEFENCES: tuple[str, ...] = ("bind", "vet")
RECOVERED_DB = 30.0  # the bar for "recovered" in these rows
PSNR_CAP_DB = 200.0
OBSERVER = "malicious server"
ROUND_ID = 0


@dataclass(frozen=True)
class MaliciousSettings:
    """One malicious-server run. ``attacks``/``iterations``: what the inconsistency attack
    runs on the isolated update (the read-backs of imprint and trap are closed form)."""

    attack: str
    protocol: str
    clients: int = 16
    batch: int = 8
    defense: str | None = None
    model: str = "lenet"
    width: int | None = None  # mlp hidden width / convnet channels (None: the model's default)
    resolution: int = 32
    bins: int = 256
    trap_rows: int = 512
    target: int = 0
    attacks: tuple[str, ...] = ("idlg",)
    iterations: int | None = 150
    restarts: int = 1
    quick: bool = False
    lr: float = 0.1
    seed: int = 0
    device: str = "auto"
    threshold_db: float = 20.0
    max_protocol_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.attack not in SERVER_ATTACKS:
            raise AttackConfigError(f"expected a server attack from {SERVER_ATTACKS}, got {self.attack!r}")
        if self.defense is not None and self.defense not in DEFENCES:
            raise AttackConfigError(f"expected a defence from {DEFENCES} or none, got {self.defense!r}")
        if self.clients < 1 or self.batch < 1:
            raise AttackConfigError(f"expected clients and batch >= 1, got {self.clients}, {self.batch}")
        if not 0 <= self.target < self.clients:
            raise AttackConfigError(f"target must be a client in [0, {self.clients}), got {self.target}")


@dataclass(eq=False)
class Population:
    """The clients' images (drawn without replacement from ``pool``) and the public pool."""

    pool: torch.Tensor
    images: dict[int, torch.Tensor]
    labels: dict[int, torch.Tensor]
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of every image."""
        _, channels, height, width = self.pool.shape
        return int(channels), int(height), int(width)

    def all_images(self, clients: Sequence[int] | None = None) -> torch.Tensor:
        chosen = sorted(self.images) if clients is None else list(clients)
        return torch.cat([self.images[c] for c in chosen])


def population(clients: int, batch: int, resolution: int, seed: int) -> Population:
    """The embedded images and their mirror images (240 distinct crops at 32x32), the
    server's public data; the clients' ``clients * batch`` images are a seeded draw from it."""
    from leakage.data import load_embedded

    data = load_embedded(resolution)
    pool = torch.cat([data.images, data.images.flip(-1)])
    labels = torch.cat([data.labels, data.labels])
    count = clients * batch
    if count > len(pool):
        raise AttackConfigError(
            f"expected at most {len(pool)} images in all, got {clients} x {batch} = {count}"
        )
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:count]
    return Population(
        pool,
        {c: pool[order[c * batch : (c + 1) * batch]] for c in range(clients)},
        {c: labels[order[c * batch : (c + 1) * batch]] for c in range(clients)},
        data.num_classes,
    )


def craft(settings: MaliciousSettings, base: nn.Module, data: Population) -> list[nn.Module]:
    """The model the deviating server sends each client."""
    if settings.attack == "inconsistency":
        return inconsistent_models(base, settings.clients, settings.target)
    if settings.attack == "imprint":
        model: nn.Module = imprint_model(base, data.pool, ImprintSpec(bins=settings.bins, seed=settings.seed))
    else:
        rate = 1.0 / (settings.clients * settings.batch)
        model = trap_model(
            base,
            data.image_shape,
            TrapSpec(rows=settings.trap_rows, rate=rate, seed=settings.seed),
            data.pool,
        )
    return [model] * settings.clients


def model_digest(model: nn.Module, round_id: int) -> bytes:
    """What a client binds its round to: the digest of the exact model it received and
    trained on (every parameter and buffer, the architecture's description, the round)."""
    from secagg.binding import model_digest as digest

    arrays = [t.detach().cpu().numpy() for t in (*model.parameters(), *model.buffers())]
    return digest(arrays, architecture=repr(model), round_id=round_id)


@dataclass(eq=False)
class ClientSide:
    """What the clients did: their updates (refusing clients send none), their true
    gradients (scoring only), their bindings and any refusals with reasons."""

    included: list[int]
    updates: list[np.ndarray]
    gradients: dict[int, np.ndarray]
    bindings: list[bytes] = field(default_factory=list)
    refusals: dict[int, str] = field(default_factory=dict)


def train_clients(
    settings: MaliciousSettings, models: Sequence[nn.Module], data: Population, *, weights_kind: bool
) -> ClientSide:
    side = ClientSide([], [], {})
    for c, model in enumerate(models):
        images, labels = data.images[c], data.labels[c]
        gradient = client_gradients(model, images, labels)
        if settings.defense == "vet":
            findings = vet(model, images, gradient)
            if findings:
                side.refusals[c] = "; ".join(f"{f.check} in {f.layer}" for f in findings)
                continue
        side.gradients[c] = flat(gradient)
        if weights_kind:
            update = flat(client_weight_update(model, images, labels, lr=settings.lr)[1])
        else:
            update = side.gradients[c]
        side.included.append(c)
        side.updates.append(update)
        if settings.defense == "bind":
            side.bindings.append(model_digest(model, ROUND_ID))
    return side


def recovered_count(
    candidates: torch.Tensor, originals: torch.Tensor, threshold_db: float
) -> tuple[int, list[float]]:
    """How many originals get a candidate at >= ``threshold_db``, one candidate each (an
    assignment maximising that count), and every original's best PSNR."""
    if candidates.shape[0] == 0 or originals.shape[0] == 0:
        return 0, [0.0] * int(originals.shape[0])
    c = candidates.detach().double().flatten(1).clamp(0.0, 1.0)
    o = originals.detach().double().flatten(1)
    errors = torch.cdist(o, c).pow(2) / o.shape[1]
    psnr = torch.where(
        errors > 0, 10.0 * torch.log10(1.0 / errors.clamp_min(1e-300)), torch.tensor(PSNR_CAP_DB)
    )
    psnr = psnr.clamp(max=PSNR_CAP_DB)
    best = psnr.max(dim=1).values.tolist()
    hit = (psnr >= threshold_db).double()
    if o.shape[0] <= c.shape[0]:
        columns = hungarian((1.0 - hit).numpy() + 1e-9 * errors.numpy())
        count = int(sum(hit[i, j] for i, j in enumerate(columns)))
    else:
        rows = hungarian((1.0 - hit).T.numpy() + 1e-9 * errors.T.numpy())
        count = int(sum(hit[i, j] for j, i in enumerate(rows)))
    return count, [float(b) for b in best]


def imprint_singletons(model: nn.Module, images: torch.Tensor, bins: int) -> int:
    """Images alone in a readable gap of ``model``'s bins (gaps 1..bins)."""
    edges = imprint_edges(model).numpy()
    gaps = np.searchsorted(edges, imprint_statistic(model, images).numpy())
    counts = np.bincount(gaps, minlength=edges.size + 1)
    return int(sum(1 for g in gaps if 1 <= g <= bins and counts[g] == 1))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / denominator if denominator > 0 else 0.0


def readers(protocol: Protocol[Any]) -> str:
    """Who can read the round's output: the party that holds it, or whoever the protocol
    says shares its key (:attr:`Protocol.aggregate_readers`)."""
    from secagg.party import party_name

    return protocol.aggregate_readers or party_name(protocol.aggregate_holder)


def run_malicious(
    settings: MaliciousSettings,
    *,
    log: Callable[[str], None] | None = None,
    protocol: Protocol[Any] | None = None,
) -> dict[str, Any]:
    """One malicious-server round through ``settings.protocol``; the record of its row.

    ``protocol``: an instance to use instead of building one (tests). The record holds
    ``row`` (the report row), ``reconstructions`` (candidates matched to originals, for the
    image grid) and ``originals``.
    """
    import protocols
    from leakage.app.evaluate import build_protocol
    from secagg.errors import SecAggError
    from secagg.round import run_round

    say = log or (lambda _message: None)
    cls = protocols.get(settings.protocol)
    weights_kind = cls.aggregate_kind == "weighted_mean"
    data = population(settings.clients, settings.batch, settings.resolution, settings.seed)
    from leakage.models import build_model

    base = build_model(
        settings.model,
        num_classes=data.num_classes,
        in_channels=int(data.pool.shape[1]),
        image_size=settings.resolution,
        seed=settings.seed,
        width=settings.width,
    )
    models = craft(settings, base, data)
    started = time.perf_counter()
    side = train_clients(settings, models, data, weights_kind=weights_kind)
    say(
        f"malicious:{settings.attack} through {settings.protocol}: {len(side.included)} of "
        f"{settings.clients} clients trained ({len(side.refusals)} refused), "
        f"{side.updates[0].size if side.updates else 0} parameters"
    )
    row: dict[str, Any] = {
        "protocol": settings.protocol,
        "observer": OBSERVER,
        "attack": settings.attack,
        "defense": settings.defense,
        "clients": settings.clients,
        "batch": settings.batch,
        "images": settings.clients * settings.batch,
        "readers": None,
        "recovered": 0,
        "recovered_fraction": 0.0,
        "recovered_db": RECOVERED_DB,
        "best_psnr": 0.0,
        "target_cosine": None,
        "target_cosine_trusted": None,
        "target_psnr": None,
        "plaintext_psnr": None,
        "expected": None,
        "alone": None,
        "verdict": "not exposed",
        "error": None,
        "refused": {str(c): reason for c, reason in side.refusals.items()},
        "budget": _budget(settings),
        "config_note": None,
        "seconds": 0.0,
    }
    record: dict[str, Any] = {"row": row, "reconstructions": torch.zeros(0), "originals": data.all_images()}

    def finished() -> dict[str, Any]:  # every exit, early or not, records the time taken
        row["seconds"] = time.perf_counter() - started
        return record

    if not side.updates:
        row["error"] = "every client refused the model: nothing was aggregated"
        return finished()
    if protocol is None:
        protocol, note = build_protocol(
            settings.protocol,
            side.updates,
            quick=settings.quick,
            max_seconds=settings.max_protocol_seconds,
            log=say,
        )
        row["config_note"] = note
    row["readers"] = readers(protocol)
    weights = [float(settings.batch)] * len(side.updates) if weights_kind else None
    try:
        result = run_round(
            protocol,
            side.updates,
            weights=weights,
            round_id=ROUND_ID,
            bindings=side.bindings if settings.defense == "bind" else None,
        )
    except SecAggError as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
        return finished()
    if result.error is not None:
        row["error"] = f"{type(result.error).__name__}: {result.error}"
    holder_view = result.views.get(protocol.aggregate_holder)
    observed = [
        o
        for o in (protocol.observe(holder_view, result.spec) if holder_view is not None else [])
        if o.kind == "aggregate"
    ]
    if not observed or observed[0].vector is None:
        return finished()
    observation = observed[0]
    # Observation clients index the round's inputs: map them back to the clients who sent them.
    included = [side.included[i] for i in observation.clients]
    mean_gradient = np.asarray(observation.vector, dtype=np.float64)
    if weights_kind:  # weights after one step from the model each client was sent
        sent = np.mean([flat(list(models[c].parameters())) for c in included], axis=0)
        mean_gradient = (sent - mean_gradient) / settings.lr
    originals_all = data.all_images()
    if settings.attack == "inconsistency":
        _inconsistency(settings, row, record, models, data, side, included, mean_gradient, say)
    else:
        model = models[included[0]]
        batch = sum(int(data.images[c].shape[0]) for c in included)
        result_images = _attack(settings.attack, model, mean_gradient, data, batch).images
        count, best = recovered_count(result_images, originals_all, RECOVERED_DB)
        row["recovered"] = count
        row["best_psnr"] = max(best)
        record["reconstructions"] = _matched(result_images, originals_all)
        if settings.attack == "imprint":
            edges = imprint_edges(model)
            counts = np.round(
                imprint_gap_probabilities(edges, imprint_statistic(model, data.pool)) * len(data.pool)
            ).astype(int)
            # Scoring only (the attacker cannot know it): how many images the draw left alone
            # in a readable gap, the quantity the expectation is about.
            row["alone"] = imprint_singletons(model, data.all_images(included), settings.bins)
            row["expected"] = expected_imprint_recoveries_drawn(
                len(included) * settings.batch, counts.tolist(), settings.bins
            )
    row["recovered_fraction"] = row["recovered"] / row["images"]
    row["verdict"] = "exposed" if row["best_psnr"] >= settings.threshold_db else "not exposed"
    return finished()


def _budget(settings: MaliciousSettings) -> str:
    if settings.attack == "inconsistency":
        steps = "default" if settings.iterations is None else str(settings.iterations)
        return (
            f"{'+'.join(settings.attacks)} at {steps} steps x {settings.restarts} restart(s) "
            "on the isolated update"
        )
    if settings.attack == "imprint":
        return f"closed-form read-back of {settings.bins} bins"
    return f"closed-form read-back of {settings.trap_rows} trap rows"


def _attack(
    name: str, model: nn.Module, vector: np.ndarray, data: Population, batch_size: int, **budget: Any
) -> AttackResult:
    """Attack ``name`` on ``model`` given ``vector`` (what the attacker read) as its gradient."""
    return run_attack(
        name,
        model,
        gradient_from_vector(model, vector),
        input_shape=data.image_shape,
        num_classes=data.num_classes,
        batch_size=batch_size,
        **budget,
    )


def _matched(candidates: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
    """For each original, its closest candidate (the image grid's row)."""
    c = candidates.detach().double().flatten(1)
    o = originals.detach().double().flatten(1)
    nearest = torch.cdist(o, c).argmin(dim=1)
    return candidates[nearest].detach().float().cpu()


def _inconsistency(
    settings: MaliciousSettings,
    row: dict[str, Any],
    record: dict[str, Any],
    models: Sequence[nn.Module],
    data: Population,
    side: ClientSide,
    included: list[int],
    mean_gradient: np.ndarray,
    say: Callable[[str], None],
) -> None:
    target = settings.target
    if target not in included:
        row["error"] = row["error"] or f"the target client {target} is not in the aggregate"
        return
    model = models[target]
    # The others' models give (near) zero: the sum is the target's update.
    isolated = mean_gradient * len(included)
    truth = side.gradients[target]
    trusted = ~suppressed_coordinates(model)
    row["target_cosine"] = cosine(isolated, truth)
    row["target_cosine_trusted"] = cosine(isolated[trusted], truth[trusted])
    originals = data.images[target]
    best_psnr, best_plain, images = 0.0, 0.0, None
    view, trusted_update = trusted_view(model, isolated)
    for name in settings.attacks:
        for label, attacked, vector in (("isolated", view, trusted_update), ("plaintext", model, truth)):
            say(f"  {name} on the target's {label} update")
            result = _attack(
                name,
                attacked,
                vector,
                data,
                int(originals.shape[0]),
                iterations=settings.iterations,
                device=settings.device,
                seed=settings.seed,
                restarts=settings.restarts,
            )
            count, best = recovered_count(result.images, originals, RECOVERED_DB)
            if label == "isolated" and max(best) >= best_psnr:
                best_psnr, images = max(best), result.images
                row["recovered"] = max(row["recovered"], count)
            if label == "plaintext":
                best_plain = max(best_plain, max(best))
    row["best_psnr"] = best_psnr
    row["target_psnr"] = best_psnr
    row["plaintext_psnr"] = best_plain
    if images is not None:
        record["reconstructions"] = _matched(images, originals)
        record["originals"] = originals


def as_json(record: dict[str, Any]) -> dict[str, Any]:
    """The record without tensors."""
    row = dict(record["row"])
    for key in ("best_psnr", "target_psnr", "plaintext_psnr"):
        if isinstance(row.get(key), float) and not math.isfinite(row[key]):
            row[key] = PSNR_CAP_DB
    return row


# --- the command line (`secagg assess --server malicious:NAME`) -----------------------------


def parse_server(text: str) -> str:
    """``malicious:imprint`` -> ``imprint``; anything else is refused with the choices."""
    kind, _, attack = text.partition(":")
    if kind != "malicious" or attack not in SERVER_ATTACKS:
        choices = ", ".join(f"malicious:{a}" for a in SERVER_ATTACKS)
        raise AttackConfigError(f"expected --server {choices}; got {text!r}")
    return attack


def run_assess_malicious(args: Any, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``secagg assess --server malicious:NAME``: one row, a PNG of originals over their
    closest reconstructions, and a JSON file."""
    from pathlib import Path

    from leakage.png import encode_png, image_grid

    attack = parse_server(args.server)
    defense = args.defense
    if defense is not None and defense not in DEFENCES:
        raise AttackConfigError(f"with --server, --defense is one of {DEFENCES}; got {defense!r}")
    settings = MaliciousSettings(
        attack=attack,
        protocol=args.protocol,
        clients=args.clients,
        batch=args.batch,
        defense=defense,
        model=args.model,
        resolution=args.resolution or (16 if args.quick else 32),
        attacks=args.attacks,
        iterations=args.iterations if args.iterations is not None else (40 if args.quick else 150),
        quick=args.quick,
        seed=args.seed,
        device=args.device,
    )
    record = run_malicious(settings, log=log)
    row = as_json(record)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"assess_{args.protocol}_malicious_{attack}" + (f"_{defense}" if defense else "")
    originals = record["originals"]
    grid = [originals.numpy()]
    if record["reconstructions"].numel():
        grid.append(record["reconstructions"].numpy())
    png = out / f"{stem}.png"
    png.write_bytes(encode_png(image_grid(grid, scale=3)))
    result: dict[str, Any] = {
        "protocol": args.protocol,
        "server": args.server,
        "defense": defense,
        "rows": [row],
        "notes": [f"client {c} refused: {reason}" for c, reason in row["refused"].items()]
        + ([f"the round revealed no aggregate: {row['error']}"] if row["error"] else []),
        "png": str(png),
    }
    json_path = out / f"{stem}.json"
    result["json"] = str(json_path)
    json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def malicious_table(rows: Sequence[dict[str, Any]]) -> str:
    """Protocol, attack, defence, who reads the output, images back at >= 30 dB, target
    cosine, best PSNR, verdict."""
    header = (
        f"{'protocol':<18} {'attack':<13} {'defence':<7} {'readers':<26} {'>=30 dB':>12} "
        f"{'cosine':>8} {'best dB':>8}  verdict"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        cos = "-" if r["target_cosine"] is None else f"{r['target_cosine']:.4f}"
        got = f"{r['recovered']}/{r['images']}"
        verdict = r["verdict"] + (f" ({r['error'].split(':')[0]})" if r["error"] else "")
        lines.append(
            f"{r['protocol']:<18} {r['attack']:<13} {r['defense'] or '-':<7} "
            f"{str(r['readers'] or '-')[:26]:<26} {got:>12} {cos:>8} {r['best_psnr']:>8.1f}  {verdict}"
        )
    return "\n".join(lines)


# --- the `secagg evaluate` section ------------------------------------------------------------

EVALUATE_PROTOCOLS: tuple[str, ...] = ("plaintext-fedsgd", "paillier", "ckks", "two-server", "secagg")
EVALUATE_DEFENCES: tuple[str | None, ...] = (None, "bind", "vet")


def evaluate_malicious(
    attacks: Sequence[str],
    names: Sequence[str],
    *,
    clients: int,
    batch: int,
    model: str,
    resolution: int,
    iterations: int | None,
    inversion: tuple[str, ...],
    quick: bool,
    seed: int,
    device: str,
    max_protocol_seconds: float,
    log: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Every (protocol, server attack, defence: none / bind / vet) row, and the images of
    the undefended runs (originals, closest reconstructions) keyed ``protocol/attack``.

    Imprint and trap get 16 rows per image in the aggregate (at least 16, at most 256), so
    the model stays small enough for every protocol's round."""
    say = log or (lambda _message: None)
    rows: list[dict[str, Any]] = []
    images: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    rows_per_block = int(min(256, max(16, 16 * clients * batch)))
    for name in names:
        for attack in attacks:
            for defense in EVALUATE_DEFENCES:
                say(f"malicious server: {attack} through {name}, defence {defense or 'none'}")
                settings = MaliciousSettings(
                    attack=attack, protocol=name, clients=clients, batch=batch, defense=defense, model=model,
                    resolution=resolution, bins=rows_per_block, trap_rows=rows_per_block,
                    attacks=inversion, iterations=iterations, quick=quick, seed=seed, device=device,
                    max_protocol_seconds=max_protocol_seconds,
                )  # fmt: skip
                record = run_malicious(settings)
                rows.append(as_json(record))
                if defense is None and record["reconstructions"].numel():
                    images[f"{name}/{attack}"] = (record["originals"], record["reconstructions"])
    return rows, images
