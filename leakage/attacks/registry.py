"""The attack registry: every attack the lab runs, by name, with what the callers need.

One :class:`Attack` per entry of :data:`ATTACKS` says how to run it, its default step
count, when it applies to an observation (model, batch size, what the client sent) and
how the observed vector is prepared for it. Callers (``run_attack``, the assessment, the
command lines, the benchmarks) look attacks up here instead of keeping lists of names or
branching on them; adding an attack is one entry.

The attacks themselves are those of Zhu et al. 2019 (DLG), Zhao et al. 2020 (iDLG),
Geiping et al. 2020 (Inverting Gradients, and its FedAvg variant) and the analytic
recoveries of a fully connected layer (Phong et al. 2017 and the follow-ups in
:mod:`leakage.attacks.analytic`).

This module imports no torch at module level, so the command lines can list the attack
names without paying for torch; each runner imports its implementation when called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from leakage.errors import AttackConfigError, UnknownNameError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from leakage.attacks.common import AttackResult, ProgressFn
    from leakage.attacks.inverting import FedAvgSpec


@dataclass(frozen=True, eq=False)
class AttackRequest:
    """Everything one attack run is given: the model and what the client shared, never data.

    ``observed`` is already prepared for the attack (see :attr:`Attack.prepare`);
    ``iterations`` is resolved (the attack's default when the caller gave none).
    """

    model: nn.Module
    observed: Sequence[torch.Tensor]
    input_shape: tuple[int, int, int]
    num_classes: int
    batch_size: int
    iterations: int
    device: str | torch.device
    seed: int
    restarts: int | None
    fedavg: FedAvgSpec | None
    tv_weight: float
    progress: ProgressFn | None
    # Batched DLG/iDLG: stop a problem whose best loss fell by less than this fraction
    # over the last few checks (0: run every step of the budget).
    plateau: float = 0.0


@dataclass(frozen=True)
class Applicability:
    """What decides whether an attack applies: the model, how many examples the observed
    update depends on, and what clients sent (``gradient`` or ``weights`` after local
    training described by ``fedavg``)."""

    model: nn.Module
    batch: int
    update: str = "gradient"
    fedavg: FedAvgSpec | None = None


def _always(_: Applicability) -> str | None:
    return None


def _needs_weights(context: Applicability) -> str | None:
    if context.update != "weights" or context.fedavg is None:
        return "matches a weight update after local training; the clients sent gradients"
    return None


def _needs_first_linear_single(context: Applicability) -> str | None:
    from leakage.models import first_linear

    try:
        first_linear(context.model)
    except AttackConfigError:
        return "needs a model whose first layer is fully connected"
    if context.batch != 1:
        return f"recovers one example; the update depends on {context.batch}"
    return None


def _needs_block(*structures: str) -> Callable[[Applicability], str | None]:
    def check(context: Applicability) -> str | None:
        from leakage.malicious import malicious_block

        block = malicious_block(context.model)
        if block is None or block.structure not in structures:
            return f"reads back a {'/'.join(structures)} block a malicious server inserted; none here"
        if context.update != "gradient" and context.fedavg is not None and context.fedavg.local_steps > 1:
            return "exact for one local step; the clients took several"
        return None

    return check


def _as_given(observed: Sequence[torch.Tensor], _: FedAvgSpec | None) -> list[torch.Tensor]:
    return list(observed)


def _gradient_to_update(observed: Sequence[torch.Tensor], fedavg: FedAvgSpec | None) -> list[torch.Tensor]:
    # A candidate in gradient space is the weight update divided by the local learning
    # rate; IG's FedAvg variant matches the update w_before - w_after itself.
    if fedavg is None:
        raise AttackConfigError("ig-fedavg needs the client's local training (fedavg=FedAvgSpec); got None")
    return [g * fedavg.lr for g in observed]


def _run_dlg(request: AttackRequest) -> AttackResult:
    from leakage.attacks.deep_leakage import dlg

    return dlg(
        request.model, request.observed, input_shape=request.input_shape,
        num_classes=request.num_classes, batch_size=request.batch_size,
        iterations=request.iterations, device=request.device, seed=request.seed,
        restarts=request.restarts or 4, progress=request.progress,
    )


def _run_idlg(request: AttackRequest) -> AttackResult:
    from leakage.attacks.improved_dlg import idlg

    return idlg(
        request.model, request.observed, input_shape=request.input_shape,
        num_classes=request.num_classes, batch_size=request.batch_size,
        iterations=request.iterations, device=request.device, seed=request.seed,
        restarts=request.restarts or 4, progress=request.progress,
    )


def _run_matching_many(name: str, requests: Sequence[AttackRequest]) -> list[AttackResult]:
    """DLG or iDLG on many requests (same model, shape, batch, steps, restarts, device) as
    one batched solve; iDLG infers each request's labels first."""
    from leakage.attacks.deep_leakage import MatchingProblem, solve_matching
    from leakage.attacks.improved_dlg import infer_label_counts

    if not requests:
        return []
    first = requests[0]
    problems = [
        MatchingProblem(
            r.observed,
            None if name == "dlg" else infer_label_counts(r.model, r.observed, r.batch_size,
                                                             input_shape=r.input_shape),
            r.seed,
        )
        for r in requests
    ]
    return solve_matching(
        name, first.model, problems, input_shape=first.input_shape,
        num_classes=first.num_classes, batch_size=first.batch_size,
        iterations=first.iterations, restarts=first.restarts or 4, device=first.device,
        progress=first.progress, plateau=first.plateau,
    )


def _run_dlg_many(requests: Sequence[AttackRequest]) -> list[AttackResult]:
    return _run_matching_many("dlg", requests)


def _run_idlg_many(requests: Sequence[AttackRequest]) -> list[AttackResult]:
    return _run_matching_many("idlg", requests)


def _run_ig(request: AttackRequest, fedavg: FedAvgSpec | None) -> AttackResult:
    from leakage.attacks.inverting import inverting_gradients

    return inverting_gradients(
        request.model, request.observed, input_shape=request.input_shape,
        num_classes=request.num_classes, batch_size=request.batch_size,
        iterations=request.iterations, device=request.device, seed=request.seed,
        restarts=request.restarts or 4, tv_weight=request.tv_weight, fedavg=fedavg,
        progress=request.progress,
    )


def _run_ig_gradient(request: AttackRequest) -> AttackResult:
    return _run_ig(request, None)


def _run_ig_fedavg(request: AttackRequest) -> AttackResult:
    if request.fedavg is None:
        raise AttackConfigError("ig-fedavg needs fedavg=FedAvgSpec(lr, local_steps); got None")
    return _run_ig(request, request.fedavg)


def _run_ig_many(requests: Sequence[AttackRequest]) -> list[AttackResult]:
    """IG (or ig-fedavg) on many requests sharing model, shape, batch, steps, restarts,
    device and local training, as one batched computation."""
    from leakage.attacks.inverting import inverting_gradients_many

    if not requests:
        return []
    first = requests[0]
    return inverting_gradients_many(
        first.model, [r.observed for r in requests], [r.seed for r in requests],
        input_shape=first.input_shape, num_classes=first.num_classes, batch_size=first.batch_size,
        iterations=first.iterations, device=first.device, restarts=first.restarts or 4,
        tv_weight=first.tv_weight, progress=first.progress,
    )


def _run_ig_fedavg_many(requests: Sequence[AttackRequest]) -> list[AttackResult]:
    from leakage.attacks.inverting import inverting_gradients_many

    if not requests:
        return []
    first = requests[0]
    if first.fedavg is None or any(r.fedavg != first.fedavg for r in requests):
        raise AttackConfigError("ig-fedavg needs one fedavg=FedAvgSpec(lr, local_steps) for every request")
    return inverting_gradients_many(
        first.model, [r.observed for r in requests], [r.seed for r in requests],
        input_shape=first.input_shape, num_classes=first.num_classes, batch_size=first.batch_size,
        iterations=first.iterations, device=first.device, restarts=first.restarts or 4,
        tv_weight=first.tv_weight, fedavg=first.fedavg, progress=first.progress,
    )


def _run_analytic(which: str) -> Callable[[AttackRequest], AttackResult]:
    def run(request: AttackRequest) -> AttackResult:
        from leakage.attacks import analytic

        attack = {
            "analytic": analytic.analytic_first_layer,
            "analytic-hidden": analytic.analytic_hidden,
            "analytic-bias": analytic.analytic_unknown_bias,
        }[which]
        return attack(request.model, request.observed, input_shape=request.input_shape,
                      batch_size=request.batch_size)

    return run


def _run_readback(which: str) -> Callable[[AttackRequest], AttackResult]:
    def run(request: AttackRequest) -> AttackResult:
        from leakage.attacks import imprint

        readback = imprint.imprint_readback if which == "imprint" else imprint.trap_readback
        return readback(request.model, request.observed, input_shape=request.input_shape,
                        batch_size=request.batch_size)

    return run


@dataclass(frozen=True)
class Attack:
    """One registered attack.

    ``run``: the attack on a request. ``default_iterations``: its step count when the
    caller gives none (DLG/iDLG count L-BFGS steps of 20 inner evaluations, as in the
    paper's 300; IG counts Adam steps; analytic attacks are one step and ignore it).
    ``not_applicable``: None when the attack applies to the context, else the reason.
    ``prepare``: turns the observed candidate (in gradient space) into what the attack
    matches. ``shares``: what the simulated client hands over for this attack
    (``gradient`` or ``weights``). ``default_model``: the model the stand-alone command
    builds when none is named. ``run_many``: when set, runs many requests that share the
    model, shape, batch size, steps, restarts and device as one batched computation
    (results in request order); callers use it to attack a round's observables and the
    random baselines together (:meth:`run_batch`).
    """

    name: str
    summary: str
    run: Callable[[AttackRequest], AttackResult]
    default_iterations: int = 1
    not_applicable: Callable[[Applicability], str | None] = _always
    prepare: Callable[[Sequence[torch.Tensor], FedAvgSpec | None], list[torch.Tensor]] = _as_given
    shares: str = "gradient"
    default_model: str = "lenet"
    iterative: bool = True
    run_many: Callable[[Sequence[AttackRequest]], list[AttackResult]] | None = None

    def applies(self, context: Applicability) -> bool:
        return self.not_applicable(context) is None

    def run_batch(self, requests: Sequence[AttackRequest]) -> list[AttackResult]:
        """Every request, batched when the attack can (``run_many``), else one by one."""
        if self.run_many is not None:
            return self.run_many(requests)
        return [self.run(r) for r in requests]


def _registry(*attacks: Attack) -> Mapping[str, Attack]:
    table: dict[str, Attack] = {}
    for attack in attacks:
        if attack.name in table:
            raise AttackConfigError(f"attack {attack.name!r} registered twice")
        table[attack.name] = attack
    return MappingProxyType(table)


ATTACKS: Mapping[str, Attack] = _registry(
    Attack("dlg", "Deep Leakage from Gradients (Zhu et al. 2019): L-BFGS on the L2 gradient distance",
           _run_dlg, default_iterations=300, run_many=_run_dlg_many),
    Attack("idlg", "iDLG (Zhao et al. 2020): label from the last layer's gradient, then DLG",
           _run_idlg, default_iterations=300, run_many=_run_idlg_many),
    Attack("ig", "Inverting Gradients (Geiping et al. 2020): cosine distance + TV prior, Adam",
           _run_ig_gradient, default_iterations=2000, run_many=_run_ig_many),
    Attack("ig-fedavg", "Inverting Gradients against a FedAvg weight update (Geiping et al. 2020)",
           _run_ig_fedavg, default_iterations=2000, not_applicable=_needs_weights,
           prepare=_gradient_to_update, shares="weights", run_many=_run_ig_fedavg_many),
    Attack("analytic", "closed-form input from a first fully connected layer (Phong et al. 2017)",
           _run_analytic("analytic"), not_applicable=_needs_first_linear_single,
           default_model="mlp", iterative=False),
    Attack("analytic-hidden", "input from the second layer's gradients through the first layer",
           _run_analytic("analytic-hidden"), not_applicable=_needs_first_linear_single,
           default_model="mlp", iterative=False),
    Attack("analytic-bias", "first-layer recovery with the bias unknown (candidate biases tried)",
           _run_analytic("analytic-bias"), not_applicable=_needs_first_linear_single,
           default_model="mlp", iterative=False),
    Attack("imprint", "bin differences of a malicious imprint block, x = dW/db (Fowl et al. 2022)",
           _run_readback("imprint"), not_applicable=_needs_block("cumulative", "sparse"), iterative=False),
    Attack("trap", "rows of a malicious trap-weight block, x = dW_i/db_i (Boenisch et al. 2023)",
           _run_readback("trap"), not_applicable=_needs_block("trap"), iterative=False),
)

ATTACK_NAMES: tuple[str, ...] = tuple(ATTACKS)


def attack_named(name: str) -> Attack:
    """The registered attack ``name``; :class:`UnknownNameError` lists the valid names."""
    try:
        return ATTACKS[name]
    except KeyError:
        raise UnknownNameError("attack", name, ATTACK_NAMES) from None


def run_attack(
    name: str,
    model: nn.Module,
    observed_gradient: Sequence[torch.Tensor],
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    batch_size: int = 1,
    iterations: int | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    restarts: int | None = None,
    fedavg: FedAvgSpec | None = None,
    tv_weight: float = 0.2,
    progress: ProgressFn | None = None,
) -> AttackResult:
    """Run attack ``name`` (a key of :data:`ATTACKS`) on what the client shared.

    For ``ig-fedavg`` pass the weight update ``w_before - w_after`` as
    ``observed_gradient`` and the client's local training as ``fedavg``. Analytic
    attacks run on the CPU in float64 and ignore iterations, restarts and device.
    """
    attack = attack_named(name)
    request = AttackRequest(
        model=model, observed=observed_gradient, input_shape=input_shape,
        num_classes=num_classes, batch_size=batch_size,
        iterations=iterations if iterations is not None else attack.default_iterations,
        device=device, seed=seed, restarts=restarts, fedavg=fedavg, tv_weight=tv_weight,
        progress=progress,
    )
    return attack.run(request)
