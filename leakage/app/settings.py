"""What ``secagg evaluate`` and ``secagg assess`` run, and how they report progress.

:class:`Settings` is the whole request (clients, batch, model, attacks, budgets, where
to write); the defaults are the newcomer's command. :class:`Log` and :class:`StepBar`
write progress on stderr, never on stdout (which carries ``--json``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from leakage.assess import Budget
from leakage.errors import AttackConfigError
from leakage.progress import ProgressBar

# One representative setting per defense (the DLG paper's "defends" side where it has one).
DEFAULT_DEFENSES: tuple[str, ...] = (
    "gaussian:var=1e-2",
    "laplace:var=1e-2",
    "dp:clip=1.0,noise_multiplier=1.0",
    "fp16",
    "int8",
    "prune:ratio=0.3",
)


# Budget.plateau of evaluate and assess: the fraction a problem's best loss must fall by
# over 40 steps to go on.
PLATEAU = 0.05


@dataclass(frozen=True)
class Settings:
    """What ``secagg evaluate`` runs; the defaults are the newcomer's command."""

    protocols: tuple[str, ...] | None = None  # None: every registered protocol
    defenses: tuple[str, ...] | None = None  # None: DEFAULT_DEFENSES
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
    # Processes that share the attacks (each solves half of every batched computation):
    # the job is mostly attacks, and the machines it targets have 2 cores.
    workers: int = 2
    # Server attacks for the "server that deviates" section (leakage.malicious.SERVER_ATTACKS)
    # and the protocols they run through (None: leakage.app.malicious.EVALUATE_PROTOCOLS).
    malicious: tuple[str, ...] = ()
    malicious_protocols: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.clients < 1 or self.batch < 1:
            raise AttackConfigError(f"expected clients and batch >= 1, got {self.clients}, {self.batch}")
        if self.workers < 1:
            raise AttackConfigError(f"expected workers >= 1, got {self.workers}")
        if not self.lr > 0:
            raise AttackConfigError(f"expected lr > 0, got {self.lr}")
        if self.resolution is not None and self.resolution < 4:
            raise AttackConfigError(f"expected resolution >= 4, got {self.resolution}")
        unknown = [a for a in self.malicious if a not in ("inconsistency", "imprint", "trap")]
        if unknown:
            raise AttackConfigError(
                f"expected server attacks from inconsistency, imprint, trap; got {unknown}"
            )

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
            # A problem whose best loss fell < 5 % over 40 steps stops (every observable
            # alike, plaintext included): ciphertexts and masked shares settle at the loss
            # of a zero gradient within ~20 steps, and running them to the end of the
            # budget was most of the job's time.
            plateau=PLATEAU,
            device=self.device,
            seed=self.seed,
        )

    def sizes(self) -> tuple[int, ...]:
        if self.cost_sizes is not None:
            return self.cost_sizes
        return (1_000, 4_000) if self.quick else (1_000, 10_000, 100_000)

    def defense_specs(self) -> tuple[str, ...]:
        return self.defenses if self.defenses is not None else DEFAULT_DEFENSES


class StepBar(ProgressBar):
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
