"""Models the attacks are pointed at.

- ``lenet``: the LeNet of Deep Leakage from Gradients (Zhu, Liu, Han, NeurIPS 2019,
  reference code mit-han-lab/dlg): three 5x5 convolutions of 12 channels, padding 2,
  strides 2, 2, 1, a Sigmoid after each, then ``Linear(12 * ceil(H/4) * ceil(W/4),
  classes)``; every weight and bias drawn from uniform(-0.5, 0.5). Sigmoid is twice
  differentiable everywhere, which second-order gradient matching needs.
- ``mlp``: a fully connected network whose first layer is ``Linear`` with bias, the
  setting of the analytic attacks (Phong et al. 2017; Geiping et al. 2020, Prop. D.1).
  Layers: Linear(d, width) -> Sigmoid -> Linear(width, width) -> Sigmoid ->
  Linear(width, classes), PyTorch's default uniform(+-1/sqrt(fan_in)) ranges.
- ``convnet``: a small ReLU network with residual blocks (no batch norm, so the client's
  gradient does not depend on batch statistics), closer to what is trained in practice.

Models see images in [0, 1] with no further normalisation; that is what the DLG
reference code feeds its LeNet. All initialisation is drawn from one seeded
``torch.Generator`` in ``model.parameters()`` order, so a seed fixes every weight.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from leakage.errors import AttackConfigError, UnknownNameError

MODEL_NAMES: tuple[str, ...] = ("lenet", "mlp", "convnet")


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class LeNet(nn.Module):
    """The DLG paper's LeNet (sigmoid activations, no pooling)."""

    def __init__(self, *, num_classes: int, in_channels: int, image_size: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 12, kernel_size=5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=1),
            nn.Sigmoid(),
        )
        side = _conv_out(_conv_out(_conv_out(image_size, 5, 2, 2), 5, 2, 2), 5, 1, 2)
        self.fc = nn.Linear(12 * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).flatten(1))


class MLP(nn.Module):
    """Fully connected network whose first layer is Linear with bias."""

    def __init__(
        self, *, num_classes: int, in_channels: int, image_size: int, width: int
    ) -> None:
        super().__init__()
        features = in_channels * image_size * image_size
        self.fc1 = nn.Linear(features, width)
        self.fc2 = nn.Linear(width, width)
        self.fc3 = nn.Linear(width, num_classes)
        self.act = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h1 = self.act(self.fc1(x.flatten(1)))
        h2 = self.act(self.fc2(h1))
        return self.fc3(h2)


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))


class ConvNet(nn.Module):
    """Small ReLU ResNet-style network: stem, two residual stages, pooled classifier."""

    def __init__(
        self, *, num_classes: int, in_channels: int, image_size: int, width: int
    ) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.stage1 = _ResidualBlock(width)
        self.down = nn.Conv2d(width, 2 * width, 3, padding=1, stride=2)
        self.stage2 = _ResidualBlock(2 * width)
        self.pool = nn.AdaptiveAvgPool2d(4 if image_size >= 8 else 1)
        pooled = 16 if image_size >= 8 else 1
        self.fc = nn.Linear(2 * width * pooled, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1(torch.relu(self.stem(x)))
        x = self.stage2(torch.relu(self.down(x)))
        return self.fc(self.pool(x).flatten(1))


def _init_uniform(model: nn.Module, bound: Callable[[torch.Tensor, int], float], seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, (nn.Conv2d, nn.Linear)):
                continue
            fan_in = math.prod(module.weight.shape[1:])
            for param in (module.weight, module.bias):
                if param is None:
                    continue
                b = bound(param, fan_in)
                # Draw on the CPU generator so the weights do not depend on the device.
                values = torch.rand(param.shape, generator=generator, dtype=torch.float32)
                param.copy_(values.mul_(2 * b).sub_(b))


def build_model(
    name: str,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    seed: int = 0,
    width: int | None = None,
) -> nn.Module:
    """Build one of ``MODEL_NAMES`` with deterministic, seeded weights (float32, CPU).

    ``width`` is the hidden width of ``mlp`` (default 256) or the first stage's channel
    count of ``convnet`` (default 16); ``lenet`` has fixed widths and ignores it.

    >>> build_model("lenet", num_classes=10, seed=1).fc.weight.shape
    torch.Size([10, 768])
    """
    if name not in MODEL_NAMES:
        raise UnknownNameError("model", name, MODEL_NAMES)
    for label, value in (("num_classes", num_classes), ("in_channels", in_channels),
                         ("image_size", image_size)):
        if not isinstance(value, int) or value < 1:
            raise AttackConfigError(f"{label} must be a positive int, got {value!r}")
    if num_classes < 2:
        raise AttackConfigError(f"num_classes must be >= 2, got {num_classes}")
    model: nn.Module
    if name == "lenet":
        model = LeNet(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
        _init_uniform(model, lambda _p, _f: 0.5, seed)
    elif name == "mlp":
        model = MLP(num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                    width=width or 256)
        _init_uniform(model, lambda _p, fan_in: 1.0 / math.sqrt(fan_in), seed)
    else:
        model = ConvNet(num_classes=num_classes, in_channels=in_channels,
                        image_size=image_size, width=width or 16)
        # He-uniform for weights keeps ReLU activations from vanishing; small biases.
        _init_uniform(
            model,
            lambda p, fan_in: math.sqrt(6.0 / fan_in) if p.dim() > 1 else 1.0 / math.sqrt(fan_in),
            seed,
        )
    return model


def first_linear(model: nn.Module) -> nn.Linear:
    """The first ``nn.Linear`` of a model whose first parameterised layer is Linear."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            break
        if isinstance(module, nn.Linear):
            if module.bias is None:
                raise AttackConfigError("the first Linear layer has no bias; expected one")
            return module
    raise AttackConfigError(
        f"expected a model whose first layer is Linear with bias (e.g. 'mlp'), "
        f"got {type(model).__name__}"
    )
