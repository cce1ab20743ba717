"""What a server that deviates sends: the model modifications of the malicious-server attacks.

Every attack here changes only the *model the server sends each client*; clients then
train on what they received, the protocol runs unchanged, and the attacker reads the
aggregate (:mod:`leakage.attacks.imprint` has the read-backs, :mod:`leakage.app.malicious`
runs them through real rounds). Torch and numpy only.

- **Model inconsistency / gradient suppression** (Pasquini, Francati, Ateniese, CCS 2022):
  the target gets the real model; every other client a model whose weights are zero and
  whose last hidden layer is pushed into saturation (its bias set to ``-SILENCE``), so
  the hidden features are ~0 (sigmoid) or exactly 0 (dead ReLUs) and every gradient but
  the classifier's bias vanishes. The secure sum is then the target's update plus the
  other clients' classifier-bias gradients ``softmax(0) - onehot(y)`` (the authors' PoC
  notes the same: "the last bias still moves").
- **Imprint / binning module** ("Robbing the Fed", Fowl, Geiping, Czaja, Goldblum,
  Goldstein, ICLR 2022): one consistent model for everyone with a block in front,
  ``x + B relu(A x + b)``, where every row of ``A`` is one fixed linear image statistic
  (a seeded random direction, or the brightness) and the biases ``b_k = -q_k`` are
  quantiles of that statistic's distribution (a normal fitted on public data, as the
  paper does). In the cumulative form (ReLU bins, equal gains back into the image),
  ``dL/dh_k(x)`` is the same for every bin an image activates, bin k sums over the images
  whose statistic exceeds ``q_k``, and the difference of consecutive bins isolates an
  image alone in its gap; in the sparse form (bins clamped to [0, 1], the default) bin k
  holds only the images of its own gap. Either way an image alone in its gap is read back
  as ``dW_k / db_k`` from the *aggregate* of many clients.
- **Trap weights** ("When the Curious Abandon Honesty", Boenisch, Dziedzic, Schuster,
  Shamsabadi, Shumailov, Papernot, EuroS&P 2023): the same block with rows drawn half
  negative (``-|N(0, sigma)|`` at a random half of the pixels) and the other half the same
  magnitudes times ``scale < 1``, bias 0, so each ReLU fires for few images and a neuron
  fired by exactly one image gives it back as ``dW_i / db_i``.

The expected number of images the imprint recovers from ``n`` images in one aggregate
(:func:`expected_imprint_recoveries`): an image is read back when it is alone in its gap
between consecutive biases (the gap below the lowest bias activates nothing). With gap
probabilities ``p_g`` under the data's distribution, ``E = n * sum_{g >= 1} p_g (1 -
p_g)^(n - 1)`` over the K readable gaps; at ideal quantiles (cumulative bins:
``p_g = 1/(K+1)``; sparse bins, whose top gap saturates: ``1/(K+2)``) that is
``n K/(K+1) (1 - 1/(K+1))^(n-1)``: 77.7 of 128 images for K = 256 (77.6 sparse).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import torch
from torch import nn

from leakage.errors import AttackConfigError

SERVER_ATTACKS: tuple[str, ...] = ("inconsistency", "imprint", "trap")
SILENCE = 40.0  # sigmoid(-40) ~ 4e-18: the suppressed clients' hidden features vanish
STATISTICS: tuple[str, ...] = ("random", "brightness")


STRUCTURES: tuple[str, ...] = ("cumulative", "sparse", "trap")


class MaliciousBlock(nn.Module):
    """``x + sum_k g_k act(A x + b)_k``: the server's inserted first layer (one Linear,
    ``rows`` neurons; fixed gains ``g`` in a buffer). The rows' weighted sum is added to
    every pixel (breaching's parameter-free "addition" connection, which keeps the model
    and every protocol's upload small), so the base model still sees its image, shifted,
    and row k passes ``g_k dL/d(shift)`` back.

    ``structure`` says how the rows work and how the read-back treats them:
    ``cumulative`` (imprint, ReLU: bin k holds every image above ``q_k``; consecutive bins
    are differenced, so every gain is the same, 1/rows), ``sparse`` (imprint,
    ``clamp(., 0, 1)``: bin k is linear only between ``q_k`` and ``q_{k+1}``, so it holds
    the images of one gap and needs no difference; the paper's second form. Gains
    alternate ``+1, -1``: the saturated bins below an image cancel in pairs, so the shift
    stays within [-1, 1] while each bin's gradient is rows times larger than with equal
    gains, which is what survives a fixed-point ring) or ``trap`` (ReLU, each row alone;
    alternating gains too: a row fires for few images, so the shift stays small).
    """

    gains: torch.Tensor

    def __init__(self, input_shape: tuple[int, int, int], rows: int, structure: str) -> None:
        super().__init__()
        if structure not in STRUCTURES:
            raise AttackConfigError(f"structure must be one of {STRUCTURES}, got {structure!r}")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.structure = structure
        features = math.prod(self.input_shape)
        self.linear0 = nn.Linear(features, rows)
        if structure != "cumulative":
            gains = torch.where(torch.arange(rows) % 2 == 0, 1.0, -1.0)
        else:
            gains = torch.full((rows,), 1.0 / rows)
        self.register_buffer("gains", gains)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.linear0(x.flatten(1))
        hidden = pre.clamp(0.0, 1.0) if self.structure == "sparse" else torch.relu(pre)
        return x + (hidden @ self.gains).view(-1, 1, 1, 1)


class WithBlock(nn.Module):
    """A base model with a :class:`MaliciousBlock` in front (``block`` first in parameters)."""

    def __init__(self, block: MaliciousBlock, base: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(self.block(x))


def malicious_block(model: nn.Module) -> MaliciousBlock | None:
    """The server's inserted block of ``model`` (None for an unmodified model)."""
    if isinstance(model, WithBlock):
        return model.block
    return None


# --- model inconsistency --------------------------------------------------------------------


def _classifier(model: nn.Module) -> nn.Linear:
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    if last is None or last.bias is None:
        raise AttackConfigError(
            f"expected a model ending in a Linear classifier with bias, got {type(model).__name__}"
        )
    return last


def suppressed_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose gradient vanishes except at the classifier's bias.

    Every weight and bias is zeroed; the layer that feeds the classifier gets the bias
    ``-SILENCE`` so its activations are 0 (ReLU) or ~4e-18 (sigmoid). Then the classifier's
    weight gradient ``(p - y) h^T`` and everything behind it are (near) zero.
    """
    silenced = copy.deepcopy(model)
    classifier = _classifier(silenced)
    feeder = None
    for module in silenced.modules():
        if module is classifier:
            break
        if isinstance(module, (nn.Linear, nn.Conv2d)) and module.bias is not None:
            feeder = module
    if feeder is None or feeder.bias is None:
        raise AttackConfigError("expected a layer with bias before the classifier to silence")
    with torch.no_grad():
        for param in silenced.parameters():
            param.zero_()
        feeder.bias.fill_(-SILENCE)
    return silenced


def inconsistent_models(model: nn.Module, n_clients: int, target: int) -> list[nn.Module]:
    """What the deviating server sends: the real model to ``target``, suppressed ones to the rest."""
    if not 0 <= target < n_clients:
        raise AttackConfigError(f"target must be a client index in [0, {n_clients}), got {target}")
    silent = suppressed_model(model)
    return [model if c == target else silent for c in range(n_clients)]


def suppressed_coordinates(model: nn.Module) -> np.ndarray:
    """Boolean mask over the flat parameters: the classifier's bias, the coordinates the
    suppressed clients still move (the attacker knows which they are)."""
    classifier = _classifier(model)
    mask = []
    for param in model.parameters():
        mask.append(np.full(param.numel(), param is classifier.bias))
    return np.concatenate(mask)


def trusted_view(model: nn.Module, vector: np.ndarray) -> tuple[nn.Module, np.ndarray]:
    """The attacker's view of the isolated update without the coordinates it knows the
    suppressed clients moved: a copy of ``model`` whose classifier bias is a fixed buffer
    (same function, one parameter fewer) and ``vector`` without those coordinates, so a
    gradient-matching attack matches only the target's own gradient."""
    mask = suppressed_coordinates(model)
    view = copy.deepcopy(model)
    classifier = _classifier(view)
    bias = classifier.bias.detach().clone()
    del classifier.bias
    classifier.register_buffer("bias", bias)
    return view, np.asarray(vector)[~mask]


# --- imprint (binning) ----------------------------------------------------------------------


@dataclass(frozen=True)
class ImprintSpec:
    """The imprint block: ``bins`` rows, the statistic they measure and its fitted normal."""

    bins: int = 256
    statistic: str = "random"
    structure: str = "sparse"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.structure not in ("cumulative", "sparse"):
            raise AttackConfigError(
                f"imprint structure must be 'cumulative' or 'sparse', got {self.structure!r}"
            )
        if self.bins < 2:
            raise AttackConfigError(f"expected at least 2 bins, got {self.bins}")
        if self.statistic not in STATISTICS:
            raise AttackConfigError(f"statistic must be one of {STATISTICS}, got {self.statistic!r}")


def statistic_direction(statistic: str, features: int, seed: int) -> torch.Tensor:
    """The linear image statistic as a unit-norm direction (float64): a seeded random
    Gaussian direction, or the brightness (the all-ones direction)."""
    if statistic == "brightness":
        direction = torch.ones(features, dtype=torch.float64)
    elif statistic == "random":
        generator = torch.Generator().manual_seed(seed)
        direction = torch.randn(features, generator=generator, dtype=torch.float64)
    else:
        raise AttackConfigError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    return direction / direction.norm()


def imprint_biases(values: torch.Tensor, bins: int) -> torch.Tensor:
    """``bins`` thresholds ``q_k``: the k/(bins+1) quantiles of a normal fitted to
    ``values`` (the statistic on the server's public data), ascending."""
    mean = float(values.double().mean())
    std = float(values.double().std())
    if not std > 0:
        raise AttackConfigError("expected public data whose statistic varies; its std is 0")
    normal = NormalDist(mean, std)
    return torch.tensor([normal.inv_cdf(k / (bins + 1)) for k in range(1, bins + 1)], dtype=torch.float64)


def imprint_model(
    model: nn.Module, public_images: torch.Tensor, spec: ImprintSpec | None = None
) -> WithBlock:
    """``model`` with an imprint block in front, bins fitted on ``public_images``."""
    spec = spec or ImprintSpec()
    shape = tuple(int(s) for s in public_images.shape[1:])
    features = math.prod(shape)
    direction = statistic_direction(spec.statistic, features, spec.seed)
    values = public_images.double().flatten(1) @ direction
    block = MaliciousBlock(shape, spec.bins, spec.structure)  # type: ignore[arg-type]
    if spec.structure == "cumulative":
        thresholds = imprint_biases(values, spec.bins)
        widths = torch.ones(spec.bins, dtype=torch.float64)
    else:  # bin k is linear on [q_k, q_{k+1}]: bins + 1 edges
        edges = imprint_biases(values, spec.bins + 1)
        thresholds, widths = edges[:-1], edges[1:] - edges[:-1]
    with torch.no_grad():
        block.linear0.weight.copy_((direction[None, :] / widths[:, None]).float())
        block.linear0.bias.copy_((-thresholds / widths).float())
    return WithBlock(block, copy.deepcopy(model))


def imprint_edges(model: nn.Module) -> torch.Tensor:
    """The statistic's edges of an imprint model's bins, ascending (K for cumulative, K+1
    for sparse bins), read from the block's weights as the attacker knows them."""
    block = malicious_block(model)
    if block is None or block.structure not in ("cumulative", "sparse"):
        raise AttackConfigError("expected a model with an imprint block in front")
    weight = block.linear0.weight.detach().double()
    bias = block.linear0.bias.detach().double()
    scale = weight.norm(dim=1)  # 1 / width of each bin (the direction has unit norm)
    lower = -bias / scale
    if block.structure == "cumulative":
        return torch.sort(lower).values
    upper = lower + 1.0 / scale
    return torch.sort(torch.cat([lower, upper[-1:]])).values


def imprint_statistic(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The imprint block's statistic of ``images`` (float64)."""
    block = malicious_block(model)
    if block is None:
        raise AttackConfigError("expected a model with an imprint block in front")
    direction = block.linear0.weight.detach().double()[0]
    return images.double().flatten(1) @ (direction / direction.norm())


def imprint_gap_probabilities(edges: torch.Tensor, values: torch.Tensor) -> np.ndarray:
    """Empirical probability of each gap between sorted ``edges`` under ``values``:
    gap 0 below the lowest edge, gap len(edges) above the highest."""
    ordered = np.sort(edges.double().numpy())
    gaps = np.searchsorted(ordered, values.double().numpy(), side="left")
    return np.bincount(gaps, minlength=ordered.size + 1) / max(1, values.numel())


def expected_imprint_recoveries(n_images: int, gap_probabilities: Sequence[float], bins: int) -> float:
    """``n sum_{g=1..K} p_g (1 - p_g)^(n-1)``: images expected alone in a readable gap
    (gaps 1..K; gap 0 activates nothing, and a sparse block's gap K+1 saturates every bin).

    >>> round(expected_imprint_recoveries(128, [1 / 257] * 257, 256), 1)
    77.7
    >>> round(expected_imprint_recoveries(128, [1 / 258] * 258, 256), 1)
    77.6
    """
    p = np.asarray(gap_probabilities, dtype=np.float64)[1 : bins + 1]
    return float(n_images * (p * (1.0 - p) ** (n_images - 1)).sum())


def expected_imprint_recoveries_drawn(n_images: int, gap_counts: Sequence[int], bins: int) -> float:
    """The same expectation when the ``n`` images are drawn without replacement from a
    finite population with ``gap_counts[g]`` members in gap g: an image of a gap of m
    is read back when it is drawn and none of the other m - 1 is,
    ``(n/N) C(N-m, n-1) / C(N-1, n-1)``."""
    counts = [int(c) for c in gap_counts]
    population = sum(counts)
    if not 0 < n_images <= population:
        raise AttackConfigError(f"expected 0 < n <= population {population}, got {n_images}")
    total = 0.0
    for m in counts[1 : bins + 1]:
        if m == 0 or population - m < n_images - 1:
            continue
        total += (
            m
            * (n_images / population)
            * math.comb(population - m, n_images - 1)
            / math.comb(population - 1, n_images - 1)
        )
    return total


# --- trap weights ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TrapSpec:
    """Trap rows: ``rows`` neurons, ``sigma`` of the magnitudes, ``scale`` of the positive half."""

    rows: int = 512
    sigma: float = 0.5
    scale: float = 0.95
    rate: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rows < 1 or not self.sigma > 0 or not 0 < self.scale < 1:
            raise AttackConfigError(
                f"expected rows >= 1, sigma > 0, 0 < scale < 1; got {self.rows}, {self.sigma}, {self.scale}"
            )
        if self.rate is not None and not 0 < self.rate < 1:
            raise AttackConfigError(f"expected an activation rate in (0, 1) or None, got {self.rate}")


def trap_weights(features: int, spec: TrapSpec) -> torch.Tensor:
    """[rows, features]: per row, a random half ``-|N(0, sigma)|`` and the other half the
    same magnitudes times ``scale`` (so for non-negative images most rows are negative)."""
    generator = torch.Generator().manual_seed(spec.seed)
    half = features // 2
    order = torch.argsort(torch.rand(spec.rows, features, generator=generator), dim=1)
    magnitudes = torch.randn(spec.rows, half, generator=generator).abs() * spec.sigma
    weights = torch.zeros(spec.rows, features)
    weights.scatter_(1, order[:, :half], -magnitudes)
    weights.scatter_(1, order[:, half : 2 * half], spec.scale * magnitudes)
    return weights


def trap_model(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    spec: TrapSpec | None = None,
    public_images: torch.Tensor | None = None,
) -> WithBlock:
    """``model`` with a trap-weight block in front.

    The paper's rows have bias 0 and rely on ``scale`` alone. With ``spec.rate`` and
    ``public_images``, each row's bias is instead set so that it fires for a ``rate``
    fraction of the public images (our calibration: the server aims each row at about
    one image of the aggregate, ``rate ~ 1 / images``).
    """
    spec = spec or TrapSpec()
    features = math.prod(input_shape)
    block = MaliciousBlock(input_shape, spec.rows, "trap")
    weights = trap_weights(features, spec)
    bias = torch.zeros(spec.rows)
    if spec.rate is not None:
        if public_images is None:
            raise AttackConfigError("a trap activation rate needs public images to calibrate on")
        values = public_images.flatten(1).float() @ weights.T  # [public, rows]
        bias = -torch.quantile(values, 1.0 - spec.rate, dim=0)
    with torch.no_grad():
        block.linear0.weight.copy_(weights)
        block.linear0.bias.copy_(bias)
    return WithBlock(block, copy.deepcopy(model))
