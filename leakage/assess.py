"""What each server learns: gradient-inversion attacks pointed at a round's server views.

The assessment joins the protocols and the leakage lab (issue 6). For one
:class:`secagg.round.RoundResult` it walks every server's view (and, for protocols with
two servers, the colluding pair's joint view), forms for every *observable* — each
message a client sent, and the revealed aggregate — the attacker's best candidate for
the update, and runs the attacks of :mod:`leakage.attacks` on it:

- plaintext floats are taken as they are;
- FedAvg weights become a gradient ``(w_before - w_after) / lr`` (Geiping et al. 2020:
  one local step makes the weight update a scaled gradient; the server sent
  ``w_before`` and chose ``lr``, so it knows both);
- ring elements of Z_2^k go through the public fixed-point decoding (``frac_bits``,
  ``ring_bits`` are configuration, never secret);
- ciphertexts go through the protocol's ``observable_vector(payload, n_params)`` when
  its module provides one (how an attacker without the key reads the ciphertext in the
  update's shape), otherwise the payload bytes are read as integers scaled into
  [-clip, clip) and laid out in the update's shape;
- under collusion of two servers, the protocol-specific recombination (two-server: B's
  key opens the sealed seed, the PRF stream unmasks A's share).

The threat model is the call chain, as in breaching: the attacks receive the model and
the candidate only; the clients' true images (:class:`ClientData`) are used afterwards,
to score the reconstruction.

Verdict per observable (:func:`decide`):

- ``exposed``: the best-matched reconstructed image reaches ``threshold_db`` PSNR
  (20 dB by default), or every label was found (multiset accuracy 1) on a candidate
  whose last layer has the sign structure of a real cross-entropy gradient (see
  :func:`gradient_structure`; a label guessed from a random vector is not a finding);
- ``not exposed`` otherwise. ``beats_random`` says whether the reconstruction did better
  than the same attack, at the same iteration count, run on random vectors of the same
  shape and per-tensor scale over ``baseline_seeds`` seeds (best baseline PSNR + 1 dB).
  A ``not exposed`` row with ``beats_random`` false is the issue's "no better than a
  random vector"; one with ``beats_random`` true is a partial leak worth reading.

Budget: the full attack set runs on observables that look like gradients (structure
score >= 0.9: plaintext, decoded aggregates, colluding reconstructions); observables
that do not (ciphertexts, masked shares) get a cheap check — the first attack at
``cheap_iterations`` — compared against the baseline at that same count.

Uniformity (:func:`byte_uniformity`): a chi-square test of the payload's byte
histogram against uniform (255 degrees of freedom, Wilson-Hilferty p-value, pass at
p >= 1e-3). Masked ring elements and raw ciphertext integers should pass; serialisations
with structure (length prefixes, protobuf fields, a ciphertext's top byte below the
modulus) can fail without anything leaking — the rows say which.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from leakage.attacks import ATTACK_NAMES, FedAvgSpec, gradient_from_vector, run_attack
from leakage.attacks.common import last_linear_gradients
from leakage.errors import AttackConfigError, LeakageError, ShapeMismatchError
from leakage.metrics import RECOVERED_PSNR_DB, match, mse, psnr_from_mse, ssim

if TYPE_CHECKING:  # the protocol side is imported lazily: leakage runs with torch + numpy only
    from secagg.party import View
    from secagg.protocol import Protocol
    from secagg.round import RoundResult

# JSON has no infinity: identical images (PSNR = inf) are reported at this cap.
PSNR_CAP_DB = 200.0
STRUCTURED = 0.9  # structure score above which a candidate "looks like a gradient"
BEATS_RANDOM_MARGIN_DB = 1.0
UNIFORM_P_MIN = 1e-3
MIN_UNIFORMITY_BYTES = 1280  # five expected counts per byte value, chi-square's usual rule
COLLUDING = "colluding"
AGGREGATE = "aggregate"

ProgressFn = Callable[[str], None]


@dataclass(frozen=True)
class Budget:
    """How much attacking to do.

    ``attacks``: names from :data:`leakage.attacks.ATTACK_NAMES`, run in full on
    gradient-like observables; ``iterations``: their step count (None: each attack's
    default); ``cheap_iterations``: the step count of the cheap check on ciphertext-like
    observables (first applicable attack only); ``baseline_seeds``: random vectors the
    baseline attack runs on; ``restarts``: restarts per attack run.
    """

    attacks: tuple[str, ...] = ("idlg",)
    iterations: int | None = 200
    aggregate_iterations: int | None = None  # None: ``iterations``
    cheap_iterations: int = 10
    baseline_seeds: int = 3
    restarts: int = 1
    threshold_db: float = RECOVERED_PSNR_DB
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.attacks:
            raise AttackConfigError("expected at least one attack, got none")
        unknown = [a for a in self.attacks if a not in ATTACK_NAMES]
        if unknown:
            raise AttackConfigError(f"unknown attacks {unknown}; expected names from {ATTACK_NAMES}")
        for label, value in (
            ("iterations", self.iterations),
            ("aggregate_iterations", self.aggregate_iterations),
        ):
            if value is not None and value < 1:
                raise AttackConfigError(f"{label} must be >= 1 or None, got {value}")
        if self.cheap_iterations < 1 or self.baseline_seeds < 1 or self.restarts < 1:
            raise AttackConfigError(
                f"expected cheap_iterations, baseline_seeds, restarts >= 1, got "
                f"{self.cheap_iterations}, {self.baseline_seeds}, {self.restarts}"
            )
        if not math.isfinite(self.threshold_db):
            raise AttackConfigError(f"threshold_db must be finite, got {self.threshold_db}")


@dataclass(frozen=True, eq=False)
class ClientData:
    """The simulation's ground truth, used ONLY to score reconstructions.

    ``images[c]`` [B, C, H, W] in [0, 1] and ``labels[c]`` [B] of client ``c``.
    """

    images: Mapping[int, torch.Tensor]
    labels: Mapping[int, torch.Tensor]

    def of(self, clients: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        missing = [c for c in clients if c not in self.images]
        if missing:
            raise ShapeMismatchError(f"no ground truth for clients {missing}; have {sorted(self.images)}")
        return (torch.cat([self.images[c] for c in clients]), torch.cat([self.labels[c] for c in clients]))


@dataclass(frozen=True)
class UpdateKind:
    """What clients sent: ``gradient`` or ``weights`` (after ``fedavg.local_steps`` local
    SGD steps at ``fedavg.lr`` from ``w_before``, the global model the server sent)."""

    kind: str = "gradient"
    fedavg: FedAvgSpec | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("gradient", "weights"):
            raise AttackConfigError(f"update kind must be 'gradient' or 'weights', got {self.kind!r}")
        if self.kind == "weights" and self.fedavg is None:
            raise AttackConfigError("weights need the client's local training (fedavg=FedAvgSpec(lr, steps))")


@dataclass
class Observable:
    """One thing an observer saw, and the attacker's candidate update made from it."""

    observer: str
    name: str
    clients: tuple[int, ...]  # whose data it depends on (one client, or the aggregate's)
    kind: str  # plaintext | weights | ring | ciphertext | bytes | aggregate | colluding | too-small
    candidate: np.ndarray | None  # flat gradient-space vector the attacks receive
    payload: bytes = b""
    note: str = ""


@dataclass(frozen=True)
class AssessmentRow:
    """One (observer, observable, attack) result. ``psnr`` is the best-matched image's."""

    protocol: str
    observer: str
    observable: str
    kind: str
    attack: str
    psnr: float
    psnr_mean: float
    ssim: float
    label_accuracy: float
    structure: float
    baseline_psnr: float | None  # best PSNR over the random-vector runs (None: not run)
    beats_random: bool
    verdict: str
    reason: str
    iterations: int
    seconds: float
    full_attack: bool
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class UniformityRow:
    protocol: str
    observer: str
    observable: str
    kind: str
    n_bytes: int
    chi2: float
    p_value: float
    uniform: bool | None  # None: fewer than MIN_UNIFORMITY_BYTES, too few to test

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Assessment:
    """Rows, uniformity checks, reconstructions by row index and notes for one round."""

    protocol: str
    rows: list[AssessmentRow] = field(default_factory=list)
    uniformity: list[UniformityRow] = field(default_factory=list)
    reconstructions: dict[int, torch.Tensor] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def exposed(self) -> list[AssessmentRow]:
        return [r for r in self.rows if r.verdict == "exposed"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "rows": [r.as_dict() for r in self.rows],
            "uniformity": [u.as_dict() for u in self.uniformity],
            "notes": list(self.notes),
        }


# --- the verdict ------------------------------------------------------------------------


def decide(
    *,
    psnr: float,
    label_accuracy: float,
    structure: float,
    baseline_psnrs: Sequence[float],
    threshold_db: float = RECOVERED_PSNR_DB,
) -> tuple[str, str, bool]:
    """(verdict, reason, beats_random) for one attack on one observable.

    >>> decide(psnr=35.0, label_accuracy=1.0, structure=1.0, baseline_psnrs=[8.0])
    ('exposed', 'image', True)
    >>> decide(psnr=8.2, label_accuracy=1.0, structure=0.5, baseline_psnrs=[8.0, 9.0])
    ('not exposed', '', False)
    """
    best_baseline = max(baseline_psnrs) if baseline_psnrs else -math.inf
    beats_random = psnr > best_baseline + BEATS_RANDOM_MARGIN_DB
    if psnr >= threshold_db:
        return "exposed", "image", beats_random
    if structure >= STRUCTURED and label_accuracy >= 1.0:
        return "exposed", "labels", beats_random
    return "not exposed", "", beats_random


def gradient_structure(model: nn.Module, gradient: Sequence[torch.Tensor]) -> float:
    """How much ``gradient`` looks like a cross-entropy gradient, in [0, 1].

    For a last layer ``z = W h + b`` fed non-negative features (LeNet's sigmoids),
    ``dW = (p - y) h^T`` and ``db = p - y``: every entry of row i of dW has the sign of
    db_i, and the entries of db sum to zero (softmax minus one-hot). The score is the
    fraction of dW entries that agree in sign with their row's db, times
    ``1 - |sum db| / sum |db|``; a real gradient scores ~1 (a batch sum a little less),
    a random vector ~0.5, a constant or shifted vector ~0. Models whose last layer has
    no bias: the share of dW's energy in its top singular value (rank one for one sample).
    """
    weight_grad, bias_grad = last_linear_gradients(model, gradient)
    dw = weight_grad.detach().double().cpu()
    if bias_grad is None:
        singular = torch.linalg.svdvals(dw)
        total = float(singular.pow(2).sum())
        return float(singular[0] ** 2) / total if total > 0 else 0.0
    db = bias_grad.detach().double().cpu()
    nonzero = dw != 0
    mass = float(db.abs().sum())
    if not bool(nonzero.any()) or mass == 0 or not math.isfinite(mass):
        return 0.0
    agree = (torch.sign(dw) == torch.sign(db)[:, None]) & nonzero
    balance = 1.0 - min(1.0, abs(float(db.sum())) / mass)
    return float(agree.sum()) / float(nonzero.sum()) * balance


def byte_uniformity(data: bytes) -> tuple[float, float]:
    """(chi-square, p-value) of ``data``'s byte histogram against uniform over 0..255.

    The p-value uses the Wilson-Hilferty normal approximation of the chi-square tail
    (255 degrees of freedom; accurate to a few percent in the range that matters),
    so no scipy is needed.
    """
    if not data:
        return 0.0, 1.0
    counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256).astype(np.float64)
    expected = len(data) / 256.0
    chi2 = float(((counts - expected) ** 2).sum() / expected)
    k = 255.0
    z = ((chi2 / k) ** (1.0 / 3.0) - (1.0 - 2.0 / (9.0 * k))) / math.sqrt(2.0 / (9.0 * k))
    return chi2, 0.5 * math.erfc(z / math.sqrt(2.0))


def label_multiset_accuracy(recovered: torch.Tensor, true: torch.Tensor) -> float:
    """Fraction of the true labels present in ``recovered`` counted with multiplicity
    (a batch gradient says which labels occur, not which image carries which)."""
    if true.numel() == 0:
        return 1.0
    classes = max(int(recovered.max()) if recovered.numel() else 0, int(true.max())) + 1
    found = torch.bincount(recovered.flatten().cpu().long(), minlength=classes)
    wanted = torch.bincount(true.flatten().cpu().long(), minlength=classes)
    return float(torch.minimum(found, wanted).sum()) / float(true.numel())


# --- forming candidates -----------------------------------------------------------------


def _observable_vector_fn(protocol: Protocol | None) -> Callable[[Any, int], np.ndarray] | None:
    if protocol is None:
        return None
    method = getattr(protocol, "observable_vector", None)
    if callable(method):
        return method  # type: ignore[no-any-return]
    module = sys.modules.get(type(protocol).__module__)
    function = getattr(module, "observable_vector", None) if module is not None else None
    return function if callable(function) else None


def _config_value(protocol: Protocol | None, name: str, default: Any) -> Any:
    config = getattr(protocol, "config", None)
    return getattr(config, name, default) if config is not None else default


def decode_ring(values: np.ndarray, frac_bits: int) -> np.ndarray:
    """Public fixed-point decoding: two's complement of Z_2^k, divided by 2^frac_bits."""
    itemsize = values.dtype.itemsize
    signed = np.ascontiguousarray(values).view(
        f"<i{itemsize}" if values.dtype.byteorder != ">" else f">i{itemsize}"
    )
    return signed.astype(np.float64) / float(2**frac_bits)


def bytes_as_update(data: bytes, n_params: int, scale: float) -> np.ndarray:
    """Payload bytes read as little-endian unsigned integers (up to 4 bytes each) and
    scaled into [-scale, scale), laid out in the update's shape (repeated if short)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    width = int(min(4, max(1, raw.size // max(1, n_params))))
    usable = raw[: raw.size // width * width].reshape(-1, width).astype(np.float64)
    words = (usable * (256.0 ** np.arange(width))).sum(axis=1)
    if words.size == 0:
        return np.zeros(n_params)
    if words.size < n_params:
        words = np.resize(words, n_params)
    return (words[:n_params] / 256.0**width * 2.0 - 1.0) * scale


def public_frac_bits(protocol: Protocol | None, n_clients: int) -> int:
    """The fixed-point fractional bits the round used, from the public configuration:
    ``config.codec()`` or ``config.codec(n_clients)`` (planned per round), else
    ``config.frac_bits``, else 16."""
    config = getattr(protocol, "config", None)
    codec = getattr(config, "codec", None)
    if callable(codec):
        for args in ((), (n_clients,)):
            try:
                return int(codec(*args).frac_bits)
            except TypeError:
                continue
    value = getattr(config, "frac_bits", None)
    return int(value) if isinstance(value, int) else 16


def candidate_from_payload(
    payload: Any, n_params: int, protocol: Protocol | None, n_clients: int = 1
) -> tuple[str, np.ndarray | None, str]:
    """(kind, candidate in update space or None, note) for one decoded payload."""
    arrays = payload.arrays() if hasattr(payload, "arrays") else {}
    for name, values in arrays.items():
        if values.size == n_params and values.dtype.kind == "f":
            return "plaintext", np.asarray(values, dtype=np.float64), f"float field {name}"
    for name, values in arrays.items():
        if values.size == n_params and values.dtype.kind == "u" and values.dtype.itemsize in (4, 8):
            frac_bits = public_frac_bits(protocol, n_clients)
            return "ring", decode_ring(values, frac_bits), f"{name} decoded with frac_bits={frac_bits}"
    reader = _observable_vector_fn(protocol)
    if reader is not None:
        try:
            read = np.asarray(reader(payload, n_params), dtype=np.float64)
        except Exception as exc:  # noqa: BLE001 - a payload it does not read is a small message
            note = f"observable_vector declined: {type(exc).__name__}"
        else:
            if read.size == n_params:
                return "ciphertext", read, "the protocol's observable_vector"
            note = f"observable_vector gave {read.size} values"
    else:
        note = ""
    data = payload.to_bytes()
    if len(data) * 8 < n_params:  # fewer than one bit per parameter: a key, a seed, a list
        return "too-small", None, f"{len(data)} bytes < one bit per parameter {note}".strip()
    scale = float(_config_value(protocol, "clip", 1.0))
    return "bytes", bytes_as_update(data, n_params, scale), f"payload bytes scaled to +-{scale:g}"


def _to_gradient(vector: np.ndarray, update: UpdateKind, w_before: np.ndarray) -> np.ndarray:
    if update.kind == "gradient":
        return vector
    if update.fedavg is None:  # UpdateKind validates this; kept explicit for -O
        raise AttackConfigError("weights need the client's local training (fedavg=FedAvgSpec)")
    return (w_before - vector) / update.fedavg.lr


def collusion_candidates(result: RoundResult, protocol: Protocol | None) -> dict[int, np.ndarray] | None:
    """Per-client updates the colluding servers recover from their joint view, or None
    when no recombination is known for this protocol.

    A protocol may provide ``collude(views, protocol, round_id, n_params)`` in its module;
    two-server is handled here: B's private key (its holdings) opens each sealed seed,
    the PRF stream of that seed unmasks A's share, and the public codec decodes it.
    """
    module = sys.modules.get(type(protocol).__module__) if protocol is not None else None
    hook = getattr(module, "collude", None) if module is not None else None
    if callable(hook):
        return hook(result.server_views(), protocol, result.round_id, result.n_params)  # type: ignore[no-any-return]
    if result.protocol != "two-server" or protocol is None:
        return None
    from protocols import two_server as ts
    from secagg.party import SERVER, SERVER_B
    from secagg.prf import expand
    from secagg.sealing import open_sealed

    views = result.server_views()
    key = views[SERVER_B].holdings.get("x25519_private_key")
    if not isinstance(key, bytes):
        return None
    codec = protocol.config.codec()
    recovered: dict[int, np.ndarray] = {}
    seeds = {
        r.header.sender: r.payload for r in views[SERVER_B].received if isinstance(r.payload, ts.SealedSeed)
    }
    for received in views[SERVER].received:
        client = received.header.sender
        if not isinstance(received.payload, ts.MaskedShare) or client not in seeds:
            continue
        seed = open_sealed(key, seeds[client].sealed, ts.seed_associated_data(result.round_id, client))
        mask = expand(
            seed, ts.mask_label(result.round_id, client), result.n_params, ring_bits=codec.ring_bits
        )
        recovered[client] = codec.decode(received.payload.values + mask)
    return recovered


def observables(
    result: RoundResult,
    *,
    protocol: Protocol | None = None,
    update: UpdateKind | None = None,
    w_before: np.ndarray | None = None,
) -> list[Observable]:
    """Every observable of every server view (and the colluding pair's), with candidates."""
    from secagg.party import is_client, party_name

    update = update or UpdateKind()
    if update.kind == "weights" and w_before is None:
        raise AttackConfigError("weights need w_before, the global model the server sent")
    before = w_before if w_before is not None else np.zeros(result.n_params)
    found: list[Observable] = []
    views: dict[int, View] = result.server_views()
    for server_id, view in views.items():
        observer = party_name(server_id)
        for received in view.received:
            sender = received.header.sender
            if not is_client(sender):
                continue
            payload_name = type(received.payload).__name__
            kind, vector, note = candidate_from_payload(
                received.payload, result.n_params, protocol, result.n_clients
            )
            if vector is not None:
                vector = _to_gradient(np.nan_to_num(vector, posinf=0.0, neginf=0.0), update, before)
                if update.kind == "weights" and kind == "plaintext":
                    kind = "weights"
            found.append(
                Observable(
                    observer,
                    f"{party_name(sender)} {payload_name}",
                    (sender,),
                    kind,
                    vector,
                    received.payload.to_bytes(),
                    note,
                )
            )
        if view.revealed is not None:
            included = tuple(view.revealed.included)
            aggregate = np.asarray(view.revealed.aggregate, dtype=np.float64)
            # A sum of n per-client mean gradients is n times the gradient of all n*B images.
            mean = aggregate / len(included) if _aggregate_kind(result, protocol) == "sum" else aggregate
            found.append(
                Observable(
                    observer,
                    AGGREGATE,
                    included,
                    AGGREGATE,
                    _to_gradient(mean, update, before),
                    note=f"revealed {_aggregate_kind(result, protocol)} of {len(included)} clients",
                )
            )
    if len(views) >= 2:
        recovered = collusion_candidates(result, protocol)
        if recovered is not None:
            for client, vector in sorted(recovered.items()):
                found.append(
                    Observable(
                        COLLUDING,
                        f"{party_name(client)} (joint view)",
                        (client,),
                        COLLUDING,
                        _to_gradient(vector, update, before),
                        note="servers pool their views",
                    )
                )
    return found


def _aggregate_kind(result: RoundResult, protocol: Protocol | None) -> str:
    if protocol is not None:
        return str(protocol.aggregate_kind)
    import protocols as registry

    return str(registry.get(result.protocol).aggregate_kind)


# --- attacking --------------------------------------------------------------------------


def _applicable(name: str, model: nn.Module, batch: int, update: UpdateKind) -> bool:
    if name.startswith("analytic"):
        from leakage.models import first_linear

        try:
            first_linear(model)
        except AttackConfigError:
            return False
        return batch == 1
    if name == "ig-fedavg":
        return update.kind == "weights"
    return True


def random_like(gradient: Sequence[torch.Tensor], seed: int) -> list[torch.Tensor]:
    """A random vector of the candidate's shape and per-tensor scale (simulation noise)."""
    rng = np.random.default_rng(seed)
    out = []
    for tensor in gradient:
        std = float(tensor.double().std()) if tensor.numel() > 1 else float(tensor.abs().max())
        std = std if math.isfinite(std) and std > 0 else 1.0
        out.append(torch.from_numpy(rng.normal(0.0, std, tuple(tensor.shape))).float())
    return out


@dataclass(frozen=True)
class _Scored:
    images: torch.Tensor  # matched to the originals' order
    psnr_best: float
    psnr_mean: float
    ssim: float
    label_accuracy: float
    iterations: int
    seconds: float


def _score(result: Any, originals: torch.Tensor, labels: torch.Tensor) -> _Scored:
    order = match(result.images, originals)
    images = result.images.detach().cpu()[order]
    errors = mse(images, originals)
    psnrs = [min(PSNR_CAP_DB, psnr_from_mse(float(e))) for e in errors]
    similarity = ssim(images, originals)
    return _Scored(
        images,
        max(psnrs),
        float(np.mean(psnrs)),
        float(similarity.mean()),
        label_multiset_accuracy(result.labels, labels),
        int(result.iterations),
        float(result.seconds),
    )


class _Attacker:
    def __init__(
        self,
        model: nn.Module,
        budget: Budget,
        update: UpdateKind,
        input_shape: tuple[int, int, int],
        num_classes: int,
        progress: ProgressFn | None,
        baseline_cache: dict[tuple[Any, ...], list[float]] | None = None,
        steps: Callable[[int, int], None] | None = None,
    ) -> None:
        self.model = model
        self.steps = steps
        self.budget = budget
        self.update = update
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.progress = progress
        # Shared across assessments of one model: the same truth, attack, step count and
        # scale give the same random-vector baseline, whichever protocol carried the data.
        self._baselines = baseline_cache if baseline_cache is not None else {}

    def attack(
        self,
        name: str,
        gradient: Sequence[torch.Tensor],
        batch: int,
        iterations: int | None,
        seed: int,
        label: str = "",
    ) -> Any:
        observed = list(gradient)
        fedavg = None
        if name == "ig-fedavg":
            # IG's FedAvg variant matches the weight update itself, not the gradient.
            if self.update.fedavg is None:  # _applicable checked it; kept explicit for -O
                raise AttackConfigError("weights need the client's local training (fedavg=FedAvgSpec)")
            fedavg = self.update.fedavg
            observed = [g * fedavg.lr for g in observed]
        return run_attack(
            name,
            self.model,
            observed,
            input_shape=self.input_shape,
            num_classes=self.num_classes,
            batch_size=batch,
            iterations=iterations,
            device=self.budget.device,
            seed=seed,
            restarts=self.budget.restarts,
            fedavg=fedavg,
            progress=self._bar(label or name),
        )

    def _bar(self, label: str) -> Any:
        if self.steps is None:
            return None
        restart = getattr(self.steps, "restart", None)
        if callable(restart):
            restart(f"  {label}")
        return self.steps

    def baseline(
        self,
        name: str,
        gradient: Sequence[torch.Tensor],
        originals: torch.Tensor,
        labels: torch.Tensor,
        iterations: int | None,
        truth_key: tuple[int, ...],
    ) -> list[float]:
        norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in gradient)) or 1.0
        # Per norm octave: the baseline's scale is the candidate's, to within a factor of 2.
        key = (
            id(self.model),
            name,
            iterations,
            truth_key,
            round(math.log2(norm)),
            self.budget.seed,
            self.budget.baseline_seeds,
            self.budget.restarts,
            self.budget.device,
        )
        if key not in self._baselines:
            scores = []
            for seed in range(self.budget.baseline_seeds):
                noise = random_like(gradient, 10_000 + seed)
                result = self.attack(
                    name,
                    noise,
                    originals.shape[0],
                    iterations,
                    self.budget.seed + seed,
                    label=f"{name} on random vector {seed + 1}/{self.budget.baseline_seeds}",
                )
                scores.append(_score(result, originals, labels).psnr_best)
            self._baselines[key] = scores
        return self._baselines[key]


def assess(
    round_result: RoundResult,
    model: nn.Module,
    truth: ClientData,
    *,
    protocol: Protocol | None = None,
    update: UpdateKind | None = None,
    w_before: np.ndarray | None = None,
    budget: Budget | None = None,
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
    progress: ProgressFn | None = None,
    attack_clients: Sequence[int] | None = None,
    include_aggregate: bool = True,
    baseline_cache: dict[tuple[Any, ...], list[float]] | None = None,
    steps: Callable[[int, int], None] | None = None,
) -> Assessment:
    """Attack every observable of every server view of ``round_result``.

    ``model`` holds the global weights the round started from (``w_before``; taken
    from the model when not given). ``truth`` scores the reconstructions and is never
    shown to an attack. ``protocol`` (the instance that ran the round) supplies the
    public codec parameters and ``observable_vector``; without it the registered class
    with its default config is used. ``attack_clients``: attack only these clients'
    own messages; None: every client's. ``include_aggregate``: attack the revealed
    aggregate. ``baseline_cache``: a dict to share random-vector baselines between
    assessments of the same model and truth. ``steps``: a
    per-step progress callback handed to every attack (e.g. a
    :class:`leakage.progress.ProgressBar`; its ``restart(label)`` is called per attack).
    """
    budget = budget or Budget()
    update = update or UpdateKind()
    if protocol is None:
        import protocols as registry

        protocol = registry.get(round_result.protocol)()
    if w_before is None:
        w_before = torch.cat([p.detach().flatten().double() for p in model.parameters()]).numpy()
    any_images = next(iter(truth.images.values()))
    shape = cast(tuple[int, int, int], input_shape or tuple(int(s) for s in any_images.shape[1:]))
    classes = num_classes or _infer_classes(model)
    attacker = _Attacker(
        model,
        budget,
        update,
        shape,
        classes,
        progress,
        baseline_cache,
        steps,  # type: ignore[arg-type]
    )
    out = Assessment(round_result.protocol)
    if round_result.error is not None:
        out.notes.append(
            f"the round revealed no aggregate: {type(round_result.error).__name__}: {round_result.error}"
        )
    for observable in observables(round_result, protocol=protocol, update=update, w_before=w_before):
        if observable.payload:
            chi2, p_value = byte_uniformity(observable.payload)
            out.uniformity.append(
                UniformityRow(
                    round_result.protocol,
                    observable.observer,
                    observable.name,
                    observable.kind,
                    len(observable.payload),
                    chi2,
                    p_value,
                    p_value >= UNIFORM_P_MIN if len(observable.payload) >= MIN_UNIFORMITY_BYTES else None,
                )
            )
        if observable.kind == AGGREGATE and not include_aggregate:
            continue
        if (
            attack_clients is not None
            and observable.kind != AGGREGATE
            and not set(observable.clients) <= set(attack_clients)
        ):
            continue
        if observable.candidate is None:
            out.notes.append(f"{observable.observer}: {observable.name} not attacked ({observable.note})")
            continue
        _attack_observable(out, attacker, observable, truth, budget, update)
    return out


def _infer_classes(model: nn.Module) -> int:
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    if last is None:
        raise AttackConfigError("expected a model ending in a Linear classifier")
    return int(last.out_features)


def _attack_observable(
    out: Assessment,
    attacker: _Attacker,
    observable: Observable,
    truth: ClientData,
    budget: Budget,
    update: UpdateKind,
) -> None:
    if observable.candidate is None:  # the caller checked; kept explicit for -O
        raise AttackConfigError(f"observable {observable.name!r} has no candidate update to attack")
    originals, labels = truth.of(observable.clients)
    batch = int(originals.shape[0])
    gradient = gradient_from_vector(attacker.model, observable.candidate)
    structure = gradient_structure(attacker.model, gradient)
    full = structure >= STRUCTURED
    names = [a for a in budget.attacks if _applicable(a, attacker.model, batch, update)]
    if not names:
        out.notes.append(f"{observable.observer}: {observable.name}: none of {budget.attacks} applies")
        return
    iterations = budget.iterations if full else budget.cheap_iterations
    if full and batch > 1 and budget.aggregate_iterations is not None:
        iterations = budget.aggregate_iterations
    if not full:
        names = names[:1]
    for name in names:
        if attacker.progress is not None:
            attacker.progress(
                f"{out.protocol}: {observable.observer} / {observable.name}: {name} "
                f"({'full' if full else 'cheap check'}, {iterations or 'default'} steps)"
            )
        try:
            result = attacker.attack(name, gradient, batch, iterations, budget.seed)
        except LeakageError as exc:
            out.notes.append(f"{observable.observer}: {observable.name}: {name} failed: {exc}")
            continue
        scored = _score(result, originals, labels)
        baseline: list[float] = []
        if scored.psnr_best < budget.threshold_db:
            baseline = attacker.baseline(name, gradient, originals, labels, iterations, observable.clients)
        verdict, reason, beats = decide(
            psnr=scored.psnr_best,
            label_accuracy=scored.label_accuracy,
            structure=structure,
            baseline_psnrs=baseline,
            threshold_db=budget.threshold_db,
        )
        row = AssessmentRow(
            protocol=out.protocol,
            observer=observable.observer,
            observable=observable.name,
            kind=observable.kind,
            attack=name,
            psnr=scored.psnr_best,
            psnr_mean=scored.psnr_mean,
            ssim=scored.ssim,
            label_accuracy=scored.label_accuracy,
            structure=structure,
            baseline_psnr=max(baseline) if baseline else None,
            beats_random=beats,
            verdict=verdict,
            reason=reason,
            iterations=scored.iterations,
            seconds=scored.seconds,
            full_attack=full,
            note=observable.note,
        )
        out.reconstructions[len(out.rows)] = scored.images
        out.rows.append(row)
