"""What each server learns: gradient-inversion attacks pointed at observations.

The attack end of the seam round -> :meth:`Protocol.observe <secagg.protocol.Protocol.observe>`
-> observations -> attacks. :func:`assess` receives :class:`secagg.observe.Observation`
records (a round's come from :meth:`secagg.round.RoundResult.observations`: every
server's, and the colluding servers' pooled view where the protocol knows how to pool
them), each with the attacker's best candidate for the update already formed by the
protocol that ran the round, and runs the attacks of :mod:`leakage.attacks` on every
candidate. It never sees a protocol, a configuration or a view: this module imports
neither ``secagg`` nor ``protocols``.

What clients sent decides how a candidate becomes a gradient (:class:`UpdateKind`):
gradients are taken as they are; FedAvg weights become a gradient
``(w_before - w_after) / lr`` (Geiping et al. 2020: one local step makes the weight
update a scaled gradient; the server sent ``w_before`` and chose ``lr``, so it knows
both).

The threat model is the call chain, as in breaching: the attacks receive the model and
the candidate only; the clients' true images (:class:`ClientData`) are used afterwards,
to score the reconstruction.

Verdict per observation (:func:`decide`):

- ``exposed``: the best-matched reconstructed image reaches ``threshold_db`` PSNR
  (20 dB by default), or every label was found (multiset accuracy 1) on a candidate
  whose last layer has the sign structure of a real cross-entropy gradient (see
  :func:`gradient_structure`; a label guessed from a random vector is not a finding);
- ``not exposed`` otherwise. ``beats_random`` says whether the reconstruction did better
  than the same attack, at the same iteration count, run on random vectors of the same
  shape and per-tensor scale over ``baseline_seeds`` seeds (best baseline PSNR + 1 dB).
  A ``not exposed`` row with ``beats_random`` false is "no better than a random
  vector"; one with ``beats_random`` true is a partial leak worth reading.

Budget: every observable — plaintext, decoded aggregates, colluding reconstructions,
ciphertexts and masked shares alike — gets every applicable attack at the same budget
(:func:`observable_budget`: ``iterations`` steps per image it hides, ``restarts`` draws,
the same seed), so a "not exposed" row rests on the attack that recovers the plaintext,
and each row carries its budget. Candidates that are one update read through
different protocols (the same clients, equal to within :data:`SAME_UPDATE_RTOL`: a
coalition's decryption, a revealed sum, the plaintext) are attacked once, and each row
that takes another's result names it (``attacked_as``). All jobs of one attack with one
batch size and budget run as one batched computation, and each random-vector baseline is
computed once per (model, attack, batch, budget, scale octave) for the whole run.

Uniformity (:func:`byte_uniformity`): a chi-square test of the payload's byte
histogram against uniform (255 degrees of freedom, Wilson-Hilferty p-value, pass at
p >= 1e-3). Masked ring elements and raw ciphertext integers should pass; serialisations
with structure (length prefixes, protobuf fields, a ciphertext's top byte below the
modulus) can fail without anything leaking — the rows say which.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from leakage.attacks import (
    ATTACK_NAMES,
    ATTACKS,
    Applicability,
    AttackRequest,
    FedAvgSpec,
    gradient_from_vector,
)
from leakage.attacks.common import last_linear_gradients, resolve_device
from leakage.errors import AttackConfigError, LeakageError, ShapeMismatchError
from leakage.metrics import RECOVERED_PSNR_DB, match, mse, psnr_from_mse, ssim

if TYPE_CHECKING:  # never at run time: leakage runs with torch + numpy only
    from secagg.observe import Observation

# JSON has no infinity: identical images (PSNR = inf) are reported at this cap.
PSNR_CAP_DB = 200.0
STRUCTURED = 0.9  # structure score above which a candidate "looks like a gradient"
BEATS_RANDOM_MARGIN_DB = 1.0
# Two candidates of the same clients that agree to within this (max |a - b| <= it times
# max |b|) are one update read through two protocols: the fixed-point codecs here differ
# from the plaintext by 1e-8 to 2e-4 of its largest entry (a coalition's decryption, a
# revealed sum, FedAvg weights turned back into a gradient), ciphertexts and masked shares
# by 10x or more. Such candidates are attacked once (:func:`shared_candidates`).
SAME_UPDATE_RTOL = 1e-3
UNIFORM_P_MIN = 1e-3
MIN_UNIFORMITY_BYTES = 1280  # five expected counts per byte value, chi-square's usual rule
# The kinds of secagg.observe that the assessment treats apart (equal strings, checked by a test).
COLLUDING = "colluding"
AGGREGATE = "aggregate"


def is_colluding(observer: str) -> bool:
    """Whether an observer is a coalition: "colluding", or "colluding: <who>" for a protocol
    with several coalitions (a decryption committee: t - 1 members and t members)."""
    return observer == COLLUDING or observer.startswith(COLLUDING + ":")

ProgressFn = Callable[[str], None]


@dataclass(frozen=True)
class Budget:
    """How much attacking to do.

    ``attacks``: names from :data:`leakage.attacks.ATTACKS`, run on every observable;
    ``iterations``: their step count per image the observable hides (None: each attack's
    default); ``aggregate_iterations``: a fixed count for multi-image observables instead
    (None: scaled with the images); ``baseline_seeds``: random vectors the baseline attack
    runs on; ``restarts``: draws per attack run (L-BFGS attacks run them side by side);
    ``plateau``: a DLG/iDLG problem whose best loss fell by less than this fraction over
    its last 40 steps stops there (0: every step of the budget runs). The rule reads only
    the attack's own loss, so it stops the plaintext and a ciphertext alike.
    """

    attacks: tuple[str, ...] = ("idlg",)
    iterations: int | None = 200
    aggregate_iterations: int | None = None  # None: ``iterations``
    baseline_seeds: int = 3
    restarts: int = 1
    plateau: float = 0.0
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
        if self.baseline_seeds < 1 or self.restarts < 1:
            raise AttackConfigError(
                f"expected baseline_seeds, restarts >= 1, got {self.baseline_seeds}, {self.restarts}"
            )
        if not 0.0 <= self.plateau < 1.0:
            raise AttackConfigError(f"plateau must be a fraction in [0, 1), got {self.plateau}")
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
    full_attack: bool  # always true now: every observable gets the full budget
    budget: int  # steps per draw this attack was given (its budget; ``iterations``: steps run)
    restarts: int  # draws it was given
    note: str = ""
    # Why the attack ended before its budget: "converged", "plateau" (its loss stopped
    # falling; Budget.plateau), or "" (it ran the budget).
    stopped: str = ""
    clients: tuple[int, ...] = ()  # whose data the observable depends on
    # The same attack at the same budget on the plaintext this observable hides (the
    # plaintext baseline run's row for the same clients; None: not available), its run.
    reference_psnr: float | None = None
    reference: str = ""
    # Non-empty: this candidate is the same update as another observable's (to within
    # SAME_UPDATE_RTOL), which was attacked once for both; it names that observable
    # ("run: observer: observable") and the relative difference.
    attacked_as: str = ""

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


# --- candidates as gradients -----------------------------------------------------------


def _to_gradient(vector: np.ndarray, update: UpdateKind, w_before: np.ndarray) -> np.ndarray:
    if update.kind == "gradient":
        return vector
    if update.fedavg is None:  # UpdateKind validates this; kept explicit for -O
        raise AttackConfigError("weights need the client's local training (fedavg=FedAvgSpec)")
    return (w_before - vector) / update.fedavg.lr


# --- attacking --------------------------------------------------------------------------


def _applicable(name: str, model: nn.Module, batch: int, update: UpdateKind) -> bool:
    return ATTACKS[name].applies(Applicability(model, batch, update.kind, update.fedavg))


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
    stopped: str


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
        str(getattr(result, "stopped", "")),
    )


@dataclass(frozen=True)
class _GroupSpec:
    """What the jobs of one batched computation share."""

    name: str
    batch: int
    iterations: int
    fedavg: FedAvgSpec | None
    input_shape: tuple[int, int, int]
    num_classes: int
    device: str
    restarts: int
    plateau: float


def _solve_group(
    model: nn.Module,
    spec: _GroupSpec,
    work: Sequence[tuple[Sequence[torch.Tensor], int]],
    progress: Callable[[int, int], None] | None = None,
) -> list[Any]:
    """One attack on every (candidate, seed) of ``work`` as one batched computation (also
    the worker process's entry point): an AttackResult each, or the LeakageError raised."""
    attack = ATTACKS[spec.name]
    requests = [
        AttackRequest(
            model=model, observed=attack.prepare(gradient, spec.fedavg), input_shape=spec.input_shape,
            num_classes=spec.num_classes, batch_size=spec.batch, iterations=spec.iterations,
            device=spec.device, seed=seed, restarts=spec.restarts, fedavg=spec.fedavg, tv_weight=0.2,
            progress=progress, plateau=spec.plateau,
        )
        for gradient, seed in work
    ]
    try:
        return list(attack.run_batch(requests))
    except LeakageError as exc:
        return [exc] * len(requests)


@dataclass(eq=False)
class _Job:
    """One attack run to make: ``name`` on ``gradient`` (a candidate or a random vector)."""

    name: str
    gradient: Sequence[torch.Tensor]
    batch: int
    iterations: int
    seed: int
    fedavg: FedAvgSpec | None = None
    result: Any = None


class _Attacker:
    """Runs attack jobs, batched: every job of one attack with the same batch size, step
    budget and local training goes into one computation
    (:meth:`leakage.attacks.Attack.run_batch`), so the observables of every round handed
    over together, and their random baselines, share one L-BFGS solve."""

    def __init__(
        self,
        model: nn.Module,
        budget: Budget,
        input_shape: tuple[int, int, int],
        num_classes: int,
        progress: ProgressFn | None,
        baseline_cache: dict[tuple[Any, ...], list[Any]] | None = None,
        steps: Callable[[int, int], None] | None = None,
        workers: int = 1,
        pool: Executor | None = None,
    ) -> None:
        self.model = model
        self.steps = steps
        self.budget = budget
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.progress = progress
        # Random-vector reconstructions, once per (model, attack, batch, budget, scale
        # octave) for the whole run: they are scored against each observable's truth.
        self._baselines = baseline_cache if baseline_cache is not None else {}
        self.workers = workers
        # A pool handed over (attack_pool()) is its owner's to shut down; one made here is ours.
        self._executor: Any = pool
        self._owned = pool is None

    def run(self, jobs: Sequence[_Job], what: str) -> None:
        """Fill every job's ``result`` (an AttackResult, or the LeakageError it raised).
        With ``workers`` > 1 on the CPU, every other job of each group goes to a worker
        process (its own batched solve) while this process solves the rest. With a pool
        handed over (:func:`attack_pool`, ``workers`` processes that may be busy with other
        work: evaluate's cost sweep), each group is cut into shares (:func:`pool_shares`)
        and every share goes to the pool, the longest first, so whichever process is free
        takes the next; this process waits."""
        groups: dict[tuple[str, int, int, FedAvgSpec | None], list[_Job]] = {}
        for job in jobs:
            groups.setdefault((job.name, job.batch, job.iterations, job.fedavg), []).append(job)
        if not self._owned and self._executor is not None:
            self._run_in_pool(groups, what)
            return
        pool = self._pool() if len(jobs) > 1 else None
        remote: list[tuple[list[_Job], _GroupSpec, Any]] = []
        if pool is not None:
            for (name, batch, iterations, fedavg), members in groups.items():
                away = members[1::2]
                if away:
                    spec = _GroupSpec(name, batch, iterations, fedavg, self.input_shape, self.num_classes,
                                      self.budget.device, self.budget.restarts, self.budget.plateau)
                    work = [(job.gradient, job.seed) for job in away]
                    remote.append((away, spec, pool.submit(_solve_group, self.model, spec, work)))
                    groups[(name, batch, iterations, fedavg)] = members[0::2]
        for (name, batch, iterations, fedavg), members in groups.items():
            attack = ATTACKS[name]
            if self.progress is not None:
                self.progress(
                    f"{what}: {name} on {len(members)} {'vector' if len(members) == 1 else 'vectors'}"
                    f"{' here (as many again in a worker)' if pool is not None else ''}"
                    f" (batch {batch}, {iterations} steps x {self.budget.restarts} restarts"
                    f"{', batched' if attack.run_many is not None and len(members) > 1 else ''})"
                )
            spec = _GroupSpec(name, batch, iterations, fedavg, self.input_shape, self.num_classes,
                              self.budget.device, self.budget.restarts, self.budget.plateau)
            results = _solve_group(self.model, spec, [(job.gradient, job.seed) for job in members],
                                   self._bar(f"{name} x {len(members)}"))
            for job, result in zip(members, results):
                job.result = result
        for away, _, future in remote:
            for job, result in zip(away, future.result()):
                job.result = result

    def _run_in_pool(self, groups: Mapping[tuple[str, int, int, FedAvgSpec | None], list[_Job]],
                     what: str) -> None:
        shares: list[tuple[int, list[_Job], _GroupSpec]] = []
        for (name, batch, iterations, fedavg), members in groups.items():
            spec = _GroupSpec(name, batch, iterations, fedavg, self.input_shape, self.num_classes,
                              self.budget.device, self.budget.restarts, self.budget.plateau)
            if self.progress is not None:
                self.progress(
                    f"{what}: {name} on {len(members)} {'vector' if len(members) == 1 else 'vectors'} "
                    f"in {min(self.workers, len(members))} worker processes (batch {batch}, "
                    f"{iterations} steps x {self.budget.restarts} restarts)"
                )
            parts = pool_shares(len(members), self.workers)
            for part in range(parts):
                share = members[part :: parts]
                if share:
                    # Longest first (lanes x steps x images per lane), so the last to finish is short.
                    shares.append((len(share) * iterations * batch, share, spec))
        shares.sort(key=lambda item: -item[0])
        futures = [
            (share, self._executor.submit(_solve_group, self.model, spec,
                                          [(job.gradient, job.seed) for job in share]))
            for _, share, spec in shares
        ]
        for share, future in futures:
            for job, result in zip(share, future.result()):
                job.result = result

    def _pool(self) -> Any:
        """The worker process (started once per attacker), or None: one process, or a GPU."""
        if self._executor is None:
            self._executor = attack_pool(self.workers, self.budget.device)
        return self._executor

    def close(self) -> None:
        if self._executor is not None and self._owned:
            self._executor.shutdown()
            self._executor = None

    def _bar(self, label: str) -> Any:
        if self.steps is None:
            return None
        restart = getattr(self.steps, "restart", None)
        if callable(restart):
            restart(f"  {label}")
        return self.steps

    def baseline_key(self, job: _Job, gradient: Sequence[torch.Tensor]) -> tuple[Any, ...]:
        norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in gradient)) or 1.0
        # Per norm octave: the baseline's scale is the candidate's, to within a factor of 2.
        return (id(self.model), job.name, job.batch, job.iterations, job.fedavg, round(math.log2(norm)),
                self.budget.seed, self.budget.baseline_seeds, self.budget.restarts,
                self.budget.plateau, self.budget.device)

    def baselines(self, needed: Mapping[tuple[Any, ...], tuple[_Job, Sequence[torch.Tensor]]],
                  what: str) -> None:
        """Reconstruct from ``baseline_seeds`` random vectors for every key not yet cached."""
        jobs: dict[tuple[Any, ...], list[_Job]] = {}
        for key, (job, gradient) in needed.items():
            if key in self._baselines:
                continue
            jobs[key] = [
                _Job(job.name, random_like(gradient, 10_000 + seed), job.batch, job.iterations,
                     self.budget.seed + seed, job.fedavg)
                for seed in range(self.budget.baseline_seeds)
            ]
        if jobs:
            self.run([job for group in jobs.values() for job in group], f"{what} random baselines")
        for key, group in jobs.items():
            self._baselines[key] = [job.result for job in group if not isinstance(job.result, Exception)]

    def baseline_scores(self, key: tuple[Any, ...], originals: torch.Tensor,
                        labels: torch.Tensor) -> list[float]:
        return [_score(result, originals, labels).psnr_best for result in self._baselines.get(key, [])]


# A group handed to a pool is cut into up to this many shares per worker, each of at
# least MIN_SHARE candidates (fewer lanes batch less well): with one share per worker, the
# default evaluate ended with one worker solving a 290 s share of batch-1 iDLG alone.
SHARES_PER_WORKER = 2
MIN_SHARE = 4


def pool_shares(candidates: int, workers: int) -> int:
    """How many shares a group of ``candidates`` is cut into for ``workers`` processes:
    one per worker at least (while there are candidates), up to :data:`SHARES_PER_WORKER`
    per worker while each keeps :data:`MIN_SHARE` candidates."""
    return max(min(workers, candidates), min(workers * SHARES_PER_WORKER, candidates // MIN_SHARE))


def attack_pool(workers: int, device: str, *, remote: bool = False) -> Executor | None:
    """The worker processes that share the attacks with this one: ``workers`` - 1 of them,
    spawned fresh with this process's torch thread count; None for one worker or a GPU.
    ``remote``: ``workers`` of them, to solve every share while this process does other
    work (hand it to :func:`attack_planned`, which then only waits). Whoever makes one
    shuts it down."""
    if workers <= 1 or resolve_device(device).type != "cpu":
        return None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Our own processes, spawned fresh: they receive the model and candidate tensors from
    # this one (nothing from another party crosses this pipe).
    return ProcessPoolExecutor(
        max_workers=workers if remote else workers - 1, mp_context=multiprocessing.get_context("spawn"),
        initializer=torch.set_num_threads, initargs=(torch.get_num_threads(),),
    )


@dataclass(frozen=True, eq=False)
class _Target:
    """One observation ready to attack: its candidate as a gradient-space vector."""

    observation: Observation
    kind: str
    candidate: np.ndarray | None


def _targets(
    observations: Sequence[Observation], update: UpdateKind, w_before: np.ndarray | None
) -> list[_Target]:
    if update.kind == "weights" and w_before is None:
        raise AttackConfigError("weights need w_before, the global model the server sent")
    targets = []
    for observation in observations:
        kind: str = observation.kind
        candidate = None
        if observation.vector is not None:
            vector = np.nan_to_num(np.asarray(observation.vector, dtype=np.float64), posinf=0.0, neginf=0.0)
            before = w_before if w_before is not None else np.zeros(vector.size)
            candidate = _to_gradient(vector, update, before)
            if update.kind == "weights" and kind == "plaintext":
                kind = "weights"
        targets.append(_Target(observation, kind, candidate))
    return targets


def assess(
    observations: Sequence[Observation],
    model: nn.Module,
    truth: ClientData,
    budget: Budget | None = None,
    *,
    label: str = "",
    update: UpdateKind | None = None,
    w_before: np.ndarray | None = None,
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
    progress: ProgressFn | None = None,
    attack_clients: Sequence[int] | None = None,
    include_aggregate: bool = True,
    baseline_cache: dict[tuple[Any, ...], list[Any]] | None = None,
    steps: Callable[[int, int], None] | None = None,
    workers: int = 1,
) -> Assessment:
    """Attack every observation's candidate; test every payload's byte uniformity.

    ``model`` holds the global weights the round started from (``w_before``; taken
    from the model when not given). ``truth`` scores the reconstructions and is never
    shown to an attack. ``label`` names the run in the rows (the protocol, or the
    protocol and a defense). ``update`` says what clients sent (gradients by default).
    ``attack_clients``: attack only these clients' own messages; None: every client's.
    ``include_aggregate``: attack the revealed aggregate. ``baseline_cache``: a dict to
    share random-vector baselines between assessments of the same model and truth.
    ``steps``: a per-step progress callback handed to every attack (e.g. a
    :class:`leakage.progress.ProgressBar`; its ``restart(label)`` is called per attack).
    ``workers``: processes that share the attacks (:func:`attack_planned`).
    Several rounds' observations can be attacked in one batched computation instead:
    :func:`plan_assessment` each, then :func:`attack_planned` on all of them.
    """
    budget = budget or Budget()
    planned = plan_assessment(
        observations, model, truth, budget, label=label, update=update, w_before=w_before,
        input_shape=input_shape, num_classes=num_classes, attack_clients=attack_clients,
        include_aggregate=include_aggregate,
    )
    return attack_planned([planned], budget, progress=progress, baseline_cache=baseline_cache,
                          steps=steps, what=label, workers=workers)[0]


@dataclass(eq=False)
class PlannedAssessment:
    """One round's observations made ready to attack (:func:`plan_assessment`): the
    assessment so far (uniformity rows, notes) and one plan per observable to attack."""

    assessment: Assessment
    plans: list[_Plan]
    model: nn.Module
    input_shape: tuple[int, int, int]
    num_classes: int


def plan_assessment(
    observations: Sequence[Observation],
    model: nn.Module,
    truth: ClientData,
    budget: Budget | None = None,
    *,
    label: str = "",
    update: UpdateKind | None = None,
    w_before: np.ndarray | None = None,
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
    attack_clients: Sequence[int] | None = None,
    include_aggregate: bool = True,
    shareable: bool = True,
) -> PlannedAssessment:
    """Everything of :func:`assess` but the attacks: candidates formed, byte uniformity
    tested, the jobs of every observable planned (arguments as for :func:`assess`).
    ``shareable``: an observable whose candidate is the same update as another shareable
    one's of the rounds attacked together takes that one's result (False for a round whose
    point is the difference a client-side defence makes, however small)."""
    budget = budget or Budget()
    update = update or UpdateKind()
    if w_before is None:
        w_before = torch.cat([p.detach().flatten().double() for p in model.parameters()]).numpy()
    any_images = next(iter(truth.images.values()))
    shape = cast(tuple[int, int, int], input_shape or tuple(int(s) for s in any_images.shape[1:]))
    classes = num_classes or _infer_classes(model)
    out = Assessment(label)
    plans: list[_Plan] = []
    for target in _targets(observations, update, w_before):
        observation = target.observation
        if observation.payload:
            chi2, p_value = byte_uniformity(observation.payload)
            out.uniformity.append(
                UniformityRow(
                    label,
                    observation.observer,
                    observation.name,
                    target.kind,
                    len(observation.payload),
                    chi2,
                    p_value,
                    p_value >= UNIFORM_P_MIN if len(observation.payload) >= MIN_UNIFORMITY_BYTES else None,
                )
            )
        if observation.kind == AGGREGATE and not include_aggregate:
            continue
        if (
            attack_clients is not None
            and observation.kind != AGGREGATE
            and not set(observation.clients) <= set(attack_clients)
        ):
            continue
        if target.candidate is None:
            out.notes.append(f"{observation.observer}: {observation.name} not attacked ({observation.note})")
            continue
        plan = _plan_observable(out, model, target, truth, budget, update)
        if plan is not None:
            plan.shareable = shareable
            plans.append(plan)
    return PlannedAssessment(out, plans, model, shape, classes)


def attack_planned(
    planned: Sequence[PlannedAssessment],
    budget: Budget | None = None,
    *,
    progress: ProgressFn | None = None,
    baseline_cache: dict[tuple[Any, ...], list[Any]] | None = None,
    steps: Callable[[int, int], None] | None = None,
    what: str = "",
    workers: int = 1,
    pool: Executor | None = None,
) -> list[Assessment]:
    """Attack the observables of every planned assessment (all of one model and image
    shape) in one batched computation per attack, batch size and budget; then the random
    baselines the unrecovered ones need; then score and decide. One :class:`Assessment`
    per planned one, in order. ``workers`` > 1: that many processes share the attacks
    (on the CPU; each solves its share of every batched computation). ``pool``: the
    ``workers`` processes to solve every share in (:func:`attack_pool` with ``remote``;
    its owner shuts it down) while this process waits, instead of a worker started and
    stopped here."""
    budget = budget or Budget()
    if not planned:
        return []
    first = planned[0]
    for other in planned[1:]:
        if other.model is not first.model or (other.input_shape, other.num_classes) != (
            first.input_shape, first.num_classes
        ):
            raise AttackConfigError("expected planned assessments of one model, image shape and class count")
    attacker = _Attacker(
        first.model,
        budget,
        first.input_shape,
        first.num_classes,
        progress,
        baseline_cache,
        steps,  # type: ignore[arg-type]
        workers,
        pool,
    )
    try:
        _attack_plans([(p.assessment, p.plans) for p in planned], attacker, budget, what)
    finally:
        attacker.close()
    return [p.assessment for p in planned]


def _infer_classes(model: nn.Module) -> int:
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    if last is None:
        raise AttackConfigError("expected a model ending in a Linear classifier")
    return int(last.out_features)


@dataclass(eq=False)
class _Plan:
    """One observable ready to attack: its candidate as a gradient, its truth (for scoring
    only), the attacks that apply and their jobs."""

    target: _Target
    gradient: list[torch.Tensor]
    originals: torch.Tensor
    labels: torch.Tensor
    structure: float
    iterations: int
    jobs: list[_Job]
    shareable: bool = True


def observable_budget(budget: Budget, batch: int, default: int) -> int:
    """Steps for an observable that depends on ``batch`` images: the per-image budget
    (``iterations``, or the attack's ``default``), times the images it hides unless
    ``aggregate_iterations`` fixes it. Every observable gets it, whatever it looks like:
    a ciphertext or a masked share is attacked as hard as the plaintext it hides."""
    per_image = budget.iterations if budget.iterations is not None else default
    if batch > 1 and budget.aggregate_iterations is not None:
        return budget.aggregate_iterations
    return per_image * batch


def _plan_observable(
    out: Assessment,
    model: nn.Module,
    target: _Target,
    truth: ClientData,
    budget: Budget,
    update: UpdateKind,
) -> _Plan | None:
    observable = target.observation
    if target.candidate is None:  # the caller checked; kept explicit for -O
        raise AttackConfigError(f"observation {observable.name!r} has no candidate update to attack")
    originals, labels = truth.of(observable.clients)
    batch = int(originals.shape[0])
    gradient = gradient_from_vector(model, target.candidate)
    structure = gradient_structure(model, gradient)
    names = [a for a in budget.attacks if _applicable(a, model, batch, update)]
    if not names:
        out.notes.append(f"{observable.observer}: {observable.name}: none of {budget.attacks} applies")
        return None
    jobs = [
        _Job(name, gradient, batch, observable_budget(budget, batch, ATTACKS[name].default_iterations),
             budget.seed, update.fedavg if ATTACKS[name].shares == "weights" else None)
        for name in names
    ]
    return _Plan(target, gradient, originals, labels, structure, max(j.iterations for j in jobs), jobs)


def _attack_plans(
    rounds: Sequence[tuple[Assessment, Sequence[_Plan]]], attacker: _Attacker, budget: Budget, what: str
) -> None:
    """Run every plan's jobs batched (a candidate that is the same update as an earlier
    one's takes its results), then the baselines the unrecovered ones need, then score and
    decide (rows in observation order, attacks in budget order)."""
    shared = shared_candidates(rounds)
    if shared and attacker.progress is not None:
        attacker.progress(f"{what or 'assessment'}: {len(shared)} candidates are the same update as an "
                          "earlier one's (a decryption, a sum, FedAvg weights): attacked once for both")
    attacked = [plan for _, plans in rounds for plan in plans if id(plan) not in shared]
    attacker.run([job for plan in attacked for job in plan.jobs], what or "assessment")
    for _, plans in rounds:
        for plan in plans:
            if id(plan) in shared:
                for job, done in zip(plan.jobs, shared[id(plan)].plan.jobs):
                    job.result = done.result
    scored: dict[int, _Scored] = {}
    needed: dict[tuple[Any, ...], tuple[_Job, Sequence[torch.Tensor]]] = {}
    for _, plans in rounds:
        for plan in plans:
            for job in plan.jobs:
                if isinstance(job.result, Exception):
                    continue
                scored[id(job)] = _score(job.result, plan.originals, plan.labels)
                if scored[id(job)].psnr_best < budget.threshold_db:
                    needed.setdefault(attacker.baseline_key(job, plan.gradient), (job, plan.gradient))
    attacker.baselines(needed, what or "assessment")
    for out, plans in rounds:
        for plan in plans:
            _decide_plan(out, attacker, plan, scored, budget, shared.get(id(plan)))


@dataclass(frozen=True, eq=False)
class _Shared:
    """The earlier plan whose results a plan takes: its run's label and the candidates'
    relative difference (max |a - b| / max |b|)."""

    plan: _Plan
    label: str
    difference: float

    def describe(self) -> str:
        observation = self.plan.target.observation
        return (f"{self.label}: {observation.observer}: {observation.name} "
                f"(relative difference {self.difference:.1e})")


def shared_candidates(rounds: Sequence[tuple[Assessment, Sequence[_Plan]]]) -> dict[int, _Shared]:
    """The plans (by id) whose candidate is the same update as an earlier shareable plan's:
    the same clients, the same jobs (attacks, batch, budget, local training), and
    max |a - b| <= :data:`SAME_UPDATE_RTOL` x max |b|. Each is attacked once; the first
    in order is the one attacked (the plaintext baseline, when it runs first)."""
    seen: dict[tuple[Any, ...], list[tuple[_Plan, str, np.ndarray, float]]] = {}
    shared: dict[int, _Shared] = {}
    for out, plans in rounds:
        for plan in plans:
            if not plan.shareable or plan.target.candidate is None:
                continue
            key = (tuple(int(c) for c in plan.target.observation.clients),
                   tuple((j.name, j.batch, j.iterations, j.seed, j.fedavg) for j in plan.jobs))
            vector = plan.target.candidate
            for earlier, label, other, scale in seen.get(key, []):
                if vector.shape != other.shape:
                    continue
                difference = float(np.abs(vector - other).max())
                if difference <= SAME_UPDATE_RTOL * scale:
                    shared[id(plan)] = _Shared(earlier, label, difference / scale)
                    break
            else:
                scale = float(np.abs(vector).max())
                if scale > 0 and math.isfinite(scale):
                    seen.setdefault(key, []).append((plan, out.protocol, vector, scale))
    return shared


def _decide_plan(
    out: Assessment, attacker: _Attacker, plan: _Plan, scored: Mapping[int, _Scored], budget: Budget,
    shared: _Shared | None = None,
) -> None:
    observable = plan.target.observation
    for job in plan.jobs:
        if isinstance(job.result, Exception):
            out.notes.append(f"{observable.observer}: {observable.name}: {job.name} failed: {job.result}")
            continue
        result = scored[id(job)]
        baseline: list[float] = []
        if result.psnr_best < budget.threshold_db:
            key = attacker.baseline_key(job, plan.gradient)
            baseline = attacker.baseline_scores(key, plan.originals, plan.labels)
        verdict, reason, beats = decide(
            psnr=result.psnr_best,
            label_accuracy=result.label_accuracy,
            structure=plan.structure,
            baseline_psnrs=baseline,
            threshold_db=budget.threshold_db,
        )
        row = AssessmentRow(
            protocol=out.protocol,
            observer=observable.observer,
            observable=observable.name,
            kind=plan.target.kind,
            attack=job.name,
            psnr=result.psnr_best,
            psnr_mean=result.psnr_mean,
            ssim=result.ssim,
            label_accuracy=result.label_accuracy,
            structure=plan.structure,
            baseline_psnr=max(baseline) if baseline else None,
            beats_random=beats,
            verdict=verdict,
            reason=reason,
            iterations=result.iterations,
            seconds=result.seconds,
            full_attack=True,
            budget=job.iterations,
            restarts=budget.restarts,
            note=observable.note,
            stopped=result.stopped,
            clients=tuple(int(c) for c in observable.clients),
            attacked_as=shared.describe() if shared is not None else "",
        )
        out.reconstructions[len(out.rows)] = result.images
        out.rows.append(row)
