"""The main job, ``secagg evaluate``: every protocol's round on real images, attacked.

What it does: simulated clients compute LeNet gradients (Zhu, Liu, Han 2019's model) on
the embedded real 32x32 images (:mod:`leakage.app.simulation`); every registered
protocol runs one round over them through the router (real keys, real bytes); each
round's server views become observations (:meth:`secagg.protocol.Protocol.observe`, and
:meth:`~secagg.protocol.Protocol.collude` for the parties whose pooled views the
protocol names) and :func:`leakage.assess.assess` points the attacks at them; the
client-side defenses of :mod:`secagg.defences.transforms` run at one representative
setting each over the plaintext baseline; a small cost sweep over model sizes runs on
random updates (:mod:`leakage.app.sweep`). It writes ``report.html`` (self-contained,
:mod:`leakage.app.report`) and ``results.json`` (:mod:`leakage.app.records` documents
its schema), prints a summary table and reports progress on stderr.

What clients send: protocols whose aggregate is a ``sum`` get gradients (FedSGD);
``weighted_mean`` protocols get weights after one local SGD step at ``lr`` (FedAvg with
sample counts = local batch), which the attacker turns back into a gradient with the
``w_before`` it sent. A protocol with a public input bound gets the smallest power of
two that covers the updates when its default does not (the bound is public).

Keys: every protocol runs its default (secure) configuration, except that with
``quick`` it runs its ``fast_config`` (e.g. 512-bit Paillier), and a protocol whose
round is projected (from a 256-parameter probe round, linearly) to take longer than
``max_protocol_seconds`` also falls back to its ``fast_config``
(:func:`secagg.costs.choose_config`); the report says which.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from leakage.app.records import (
    EvaluateRecord,
    RunRecord,
    Verdicts,
    colluding_verdict,
)
from leakage.app.settings import DEFAULT_DEFENSES, Log, Settings, StepBar
from leakage.app.simulation import Simulation, configure_device, environment, simulate
from leakage.app.sweep import cost_curve
from leakage.assess import (
    Assessment,
    Budget,
    PlannedAssessment,
    UpdateKind,
    attack_planned,
    attack_pool,
    is_colluding,
    plan_assessment,
)

if TYPE_CHECKING:  # the attack lab imports no secagg at run time
    from secagg.protocol import Protocol
    from secagg.round import RoundResult

__all__ = [
    "DEFAULT_DEFENSES",
    "Log",
    "Settings",
    "Simulation",
    "build_protocol",
    "configure_device",
    "evaluate",
    "finish_runs",
    "start_protocol",
    "simulate",
    "summary_table",
]


def build_protocol(
    name: str,
    updates: Sequence[np.ndarray],
    *,
    quick: bool,
    max_seconds: float,
    log: Callable[[str], None],
) -> tuple[Protocol[Any], str]:
    """The protocol instance for ``name`` and a note saying which configuration it got
    (:func:`secagg.costs.choose_config` over these updates)."""
    import protocols
    from secagg.costs import choose_config

    cls = protocols.get(name)
    choice = choose_config(
        cls,
        fast=quick,
        n_clients=len(updates),
        n_params=int(updates[0].size),
        max_seconds=max_seconds,
        max_abs=float(max(np.abs(u).max() for u in updates)),
    )
    note = "fast_config (--quick)" if quick else choice.note
    if choice.note.startswith("fast_config (secure default"):
        log(f"{name}: {choice.note}; running its fast_config instead")
    elif not quick and cls.fast_config:
        # The round's projection leaves out turning it into observations, where a
        # protocol with coalitions decrypts every client's message once per coalition
        # (paillier-naive-threshold: per parameter, minutes at LeNet's size).
        observe_s = observation_seconds(choice.protocol, len(updates), int(updates[0].size))
        if observe_s > max_seconds:
            note = f"fast_config (secure default's server views projected at {observe_s:.0f} s)"
            log(f"{name}: {note}; running its fast_config instead")
            fast = choose_config(
                cls, fast=True, n_clients=len(updates), n_params=int(updates[0].size),
                max_seconds=max_seconds, max_abs=float(max(np.abs(u).max() for u in updates)),
            )
            return fast.protocol, note
    return choice.protocol, note


def observation_seconds(protocol: Protocol[Any], n_clients: int, n_params: int) -> float:
    """Seconds that turning a round of ``n_clients`` x ``n_params`` into observations
    (every server's view, every coalition's pooled view) is projected to take: one probe
    round of ``n_clients`` x 16 parameters, scaled linearly in parameters (0: the probe
    round was refused; the round itself will say why). 16, not the round probe's 256:
    paillier-naive-threshold's coalitions took ~110 s over 256 parameters here. A packed
    protocol's views cost per ciphertext, so the projection errs high for it. The probe
    round runs :meth:`~secagg.protocol.Protocol.cost_probe` (keys of the same size from a
    cheaper generation), since its keys are thrown away whichever configuration then runs."""
    from secagg.errors import SecAggError
    from secagg.round import run_round

    rng = np.random.default_rng(0)  # simulation data, never key material
    bound = protocol.input_bound if protocol.input_bound is not None else 1.0
    params = min(OBSERVE_PROBE_PARAMS, n_params)
    updates = [rng.uniform(-bound / 2, bound / 2, params) for _ in range(n_clients)]
    weights = [1.0] * n_clients if protocol.aggregate_kind == "weighted_mean" else None
    try:
        result = run_round(protocol.cost_probe(), updates, weights=weights)
        began = time.perf_counter()
        result.observations()
    except SecAggError:
        return 0.0
    return (time.perf_counter() - began) * n_params / params


OBSERVE_PROBE_PARAMS = 16


def _threat(protocol: Protocol[Any]) -> dict[str, Any]:
    return dataclasses.asdict(protocol.threat_model)


def evaluate(settings: Settings) -> EvaluateRecord:
    """Run everything ``settings`` asks for, write report.html + results.json, return the record."""
    import protocols

    started = time.perf_counter()
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    log = Log(settings.progress)
    device = configure_device(settings)
    names = list(settings.protocols) if settings.protocols is not None else protocols.available()
    for name in names:
        protocols.get(name)  # an unknown name fails now, listing the valid ones
    defenses = list(settings.defense_specs())

    # The cost sweep runs in one of the attack workers while this process runs the rounds
    # (one process each on the 2 cores this job targets); then the attacks' shares go to
    # the workers, the longest first, each taken by whichever worker is free, while this
    # process waits: never more than ``workers`` processes busy.
    pool = attack_pool(settings.workers, settings.device, remote=True)
    try:
        return _evaluate(settings, started, created, log, device, names, defenses, pool)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _evaluate(
    settings: Settings,
    started: float,
    created: str,
    log: Log,
    device: torch.device,
    names: list[str],
    defenses: list[str],
    pool: Executor | None,
) -> EvaluateRecord:
    import protocols
    from leakage.app.report import write_report

    sweep = pool.submit(
        cost_curve, names, settings.sizes(), settings.cost_clients, quick=settings.quick,
        max_seconds=settings.max_protocol_seconds / 4, log=log,
    ) if pool is not None else None
    sim = simulate(settings)
    n_params = sim.n_params
    sample_counts = [float(settings.batch)] * settings.clients
    budget = settings.budget()
    log(
        f"{settings.model} ({n_params} parameters), {settings.clients} clients x batch {settings.batch}, "
        f"{len(names)} protocols, {len(defenses)} defenses, attacks {', '.join(settings.attacks)} on {device}"
    )

    # Every round first; then the observables of all of them are attacked together (one
    # batched solve per attack, batch size and budget), then each run's record is finished.
    pending: list[PendingRun] = []
    baselines: dict[tuple[Any, ...], list[Any]] = {}
    bar = StepBar("", enabled=settings.progress) if settings.progress else None
    for name in names:
        cls = protocols.get(name)
        weighted = cls.aggregate_kind == "weighted_mean"
        updates, update_kind = sim.updates_for(cls.aggregate_kind)
        log(f"{name}: one round ({'weights' if weighted else 'gradients'})")
        protocol, note = build_protocol(
            name, updates, quick=settings.quick, max_seconds=settings.max_protocol_seconds, log=log
        )
        pending.append(start_protocol(
            name,
            protocol,
            updates,
            sample_counts if weighted else None,
            update_kind,
            sim,
            budget,
            log,
            config_note=note,
        ))
    if defenses:
        from secagg.defences.transforms import parse_transforms, relative_error

        # Defenses act on gradients: the baseline that sends them (FedSGD) carries them.
        protocol = protocols.create(protocols.baseline("sum"))
        for spec in defenses:
            transform = parse_transforms(spec)
            if _is_ddp(transform):
                pending.append(_start_ddp(spec, transform, sim, settings, budget, log))
                continue
            defended = [np.asarray(transform.apply(g), dtype=np.float64) for g in sim.gradients]
            info = dict(transform.describe())
            info["relative_error"] = relative_error(np.sum(defended, axis=0), np.sum(sim.gradients, axis=0))
            label = f"{protocol.name} + {spec}"
            log(
                f"{label}: one round (client 0's message"
                f"{'' if settings.quick else ' and the aggregate'} attacked)"
            )
            run = start_protocol(
                label,
                protocol,
                defended,
                None,
                UpdateKind(),
                sim,
                budget,
                log,
                defense=spec,
                config_note="default config",
                attack_clients=(0,),
                include_aggregate=not settings.quick,
            )
            run.post.append(functools.partial(_with_defense_info, info=info))
            pending.append(run)
    runs, reconstructions = finish_runs(pending, budget, log, baseline_cache=baselines, steps=bar,
                                        workers=settings.workers, pool=pool)

    malicious_rows: list[dict[str, Any]] = []
    malicious_images: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if settings.malicious:
        from leakage.app.malicious import EVALUATE_PROTOCOLS, evaluate_malicious

        malicious_rows, malicious_images = evaluate_malicious(
            settings.malicious,
            settings.malicious_protocols or EVALUATE_PROTOCOLS,
            clients=settings.clients,
            batch=settings.batch,
            model=settings.model,
            resolution=settings.image_size,
            iterations=budget.iterations,
            inversion=settings.attacks[:1],
            quick=settings.quick,
            seed=settings.seed,
            device=settings.device,
            max_protocol_seconds=settings.max_protocol_seconds,
            log=log,
        )

    points, curve_notes = sweep.result() if sweep is not None else cost_curve(
        names,
        settings.sizes(),
        settings.cost_clients,
        quick=settings.quick,
        max_seconds=settings.max_protocol_seconds / 4,
        log=log,
    )
    record = EvaluateRecord(
        created=created,
        wall_seconds=time.perf_counter() - started,
        environment=environment(device),
        settings={
            "model": settings.model,
            "resolution": settings.image_size,
            "n_params": n_params,
            "clients": settings.clients,
            "batch": settings.batch,
            "attacks": list(settings.attacks),
            "iterations": budget.iterations,
            "aggregate_iterations": budget.aggregate_iterations,
            "restarts": budget.restarts,
            "plateau": budget.plateau,
            "workers": settings.workers,
            "baseline_seeds": budget.baseline_seeds,
            "threshold_db": budget.threshold_db,
            "lr": settings.lr,
            "seed": settings.seed,
            "quick": settings.quick,
            "device": str(device),
            "protocols": names,
            "defenses": defenses,
        },
        originals=tuple(sim.originals_record()),
        runs=tuple(runs),
        cost_curve=tuple(points),
        cost_curve_notes=tuple(curve_notes),
        malicious=tuple(malicious_rows),
    )
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    record.write(out / "results.json")
    write_report(
        out / "report.html",
        record.as_dict(),
        originals=sim.originals,
        reconstructions=reconstructions,
        malicious_images=malicious_images,
    )
    log(f"wrote {out / 'report.html'} and {out / 'results.json'} in {record.wall_seconds:.0f} s")
    return record


@dataclass(eq=False)
class PendingRun:
    """A round that ran and whose observables wait to be attacked: its record so far, its
    planned assessment (None: the round did not start), and what to apply to the
    finished record (``post``, in order)."""

    record: RunRecord
    planned: PlannedAssessment | None
    notes: list[str]
    post: list[Callable[[RunRecord], RunRecord]] = field(default_factory=list)


def start_protocol(
    label: str,
    protocol: Protocol[Any],
    updates: Sequence[np.ndarray],
    weights: Sequence[float] | None,
    update_kind: UpdateKind,
    sim: Simulation,
    budget: Budget,
    log: Callable[[str], None],
    *,
    defense: str | None = None,
    config_note: str,
    attack_clients: Sequence[int] | None = None,
    include_aggregate: bool = True,
    observe: Callable[[list[Any]], list[Any]] | None = None,
) -> PendingRun:
    """One round of ``protocol`` over ``updates`` and its observations planned for the
    attacks (:func:`finish_runs` attacks them). ``observe`` maps the round's observations
    first (distributed DP decodes the revealed sum)."""
    from secagg.costs import round_costs
    from secagg.errors import SecAggError
    from secagg.round import run_round

    # The fields every run record starts with, whether or not the round started.
    header = RunRecord(
        name=label,
        protocol=protocol.name,
        defense=defense,
        kind="defense" if defense else "protocol",
        update=update_kind.kind,
        aggregate_kind=protocol.aggregate_kind,
        config=dataclasses.asdict(protocol.config),
        config_note=config_note,
        threat_model=_threat(protocol),
    )
    try:
        result = run_round(protocol, updates, weights=weights)
    except SecAggError as exc:  # refused before any message (e.g. a bit budget): a result too
        log(f"{label}: the round did not start: {type(exc).__name__}: {exc}")
        return PendingRun(dataclasses.replace(header, error=f"{type(exc).__name__}: {exc}"), None, [])
    costs = round_costs(result, updates, weights=weights)
    log(
        f"{label}: round done ({costs.bytes_per_param:.2f} bytes/param, "
        f"client {costs.client_s:.2f} s); server views planned for the attacks"
    )
    observations = result.observations()
    planned = plan_assessment(
        observe(observations) if observe is not None else observations,
        sim.model,
        sim.truth,
        budget,
        label=label,
        update=update_kind,
        w_before=sim.w_before,
        attack_clients=attack_clients,
        include_aggregate=include_aggregate,
        # A defence's rows measure what its transform changes, however little: never shared.
        shareable=defense is None,
    )
    record = dataclasses.replace(
        header,
        error=None if result.error is None else f"{type(result.error).__name__}: {result.error}",
        costs=costs,
    )
    return PendingRun(record, planned, round_notes(result))


def finish_runs(
    pending: Sequence[PendingRun],
    budget: Budget,
    log: Callable[[str], None],
    *,
    baseline_cache: dict[tuple[Any, ...], list[Any]] | None = None,
    steps: Callable[[int, int], None] | None = None,
    workers: int = 1,
    pool: Executor | None = None,
) -> tuple[list[RunRecord], dict[str, dict[int, torch.Tensor]]]:
    """Attack the observables of every pending run together, then finish each run's
    record (rows, uniformity, notes, verdicts, the plaintext reference of each row) and
    return the records and the matched reconstructions by run name and row index
    (``pool``: worker processes to share the attacks, :func:`leakage.assess.attack_pool`)."""
    planned = [run.planned for run in pending if run.planned is not None]
    jobs = sum(len(plan.jobs) for p in planned for plan in p.plans)
    log(f"attacking {jobs} observable x attack pairs of {len(planned)} rounds together")
    assessments = iter(attack_planned(planned, budget, progress=log, baseline_cache=baseline_cache,
                                      steps=steps, what="every round", workers=workers, pool=pool))
    records: list[RunRecord] = []
    reconstructions: dict[str, dict[int, torch.Tensor]] = {}
    for run in pending:
        record = run.record
        assessment = next(assessments) if run.planned is not None else Assessment(record.name)
        if run.planned is not None:
            rows = tuple(dataclasses.replace(row, protocol=record.name) for row in assessment.rows)
            record = dataclasses.replace(
                record,
                rows=rows,
                uniformity=tuple(dataclasses.replace(u, protocol=record.name) for u in assessment.uniformity),
                notes=tuple(run.notes + assessment.notes),
                verdicts=Verdicts.of(rows),
            )
        for post in run.post:
            record = post(record)
        records.append(record)
        reconstructions[record.name] = assessment.reconstructions
    return with_references(records), reconstructions


def with_references(records: Sequence[RunRecord]) -> list[RunRecord]:
    """Every row with the same attack's result at the same budget on the plaintext it
    hides: the row of the plaintext baseline run (``plaintext-*`` with no defence, of the
    same aggregate kind; defences ride on the FedSGD one) for the same clients."""
    import protocols

    plain: dict[str, RunRecord] = {}
    for record in records:
        if record.defense is None and record.protocol == protocols.baseline(record.aggregate_kind):
            plain.setdefault(record.aggregate_kind, record)
    out = []
    for record in records:
        reference = plain.get(record.aggregate_kind if record.defense is None else "sum")
        if reference is None or reference is record:
            out.append(record)
            continue
        found = {(r.attack, r.clients, r.budget, r.restarts): r for r in reference.rows
                 if not is_colluding(r.observer)}
        rows = []
        for row in record.rows:
            match = found.get((row.attack, row.clients, row.budget, row.restarts))
            if match is not None:
                row = dataclasses.replace(row, reference_psnr=match.psnr, reference=reference.name)
            rows.append(row)
        out.append(dataclasses.replace(record, rows=tuple(rows)))
    return out


def _with_defense_info(record: RunRecord, *, info: dict[str, Any]) -> RunRecord:
    return dataclasses.replace(record, defense_info=info)


def _is_ddp(transform: Any) -> bool:
    from secagg.defences.ddp import find_ddp

    return find_ddp(transform) is not None


def _start_ddp(
    spec: str,
    transform: Any,
    sim: Simulation,
    settings: Settings,
    budget: Budget,
    log: Callable[[str], None],
) -> PendingRun:
    """Distributed DP over a secure sum (secagg): the revealed sum is decoded with the round's
    public parameters and attacked; epsilon goes with the run."""
    import protocols
    from secagg.defences.ddp import DDPRound
    from secagg.defences.transforms import relative_error
    from secagg.errors import ConfigError

    ddp_round = DDPRound.bind(transform, n_clients=settings.clients, n_params=sim.n_params)
    if ddp_round is None:
        raise ConfigError(f"expected a distributed-DP defence, got {spec!r}")
    messages = ddp_round.encode(sim.gradients)
    name = "secagg"
    protocol, note = ddp_round.protocol(protocols.get(name), fast=settings.quick)
    label = f"{name} + {spec}"
    log(f"{label}: one round (client 0's masked message and the decoded sum attacked)")
    run = start_protocol(
        label,
        protocol,
        messages,
        None,
        UpdateKind(),
        sim,
        budget,
        log,
        defense=spec,
        config_note=note,
        attack_clients=(0,),
        include_aggregate=True,
        observe=ddp_round.observations,
    )
    info = ddp_round.info()
    decoded = ddp_round.ddp.decode_sum(np.sum(messages, axis=0), n_params=sim.n_params)
    info["relative_error"] = relative_error(decoded, np.sum(sim.gradients, axis=0))
    run.post.append(
        lambda record: dataclasses.replace(record, defense_info=info, notes=(ddp_round.note(), *record.notes))
    )
    return run


def round_notes(result: RoundResult) -> list[str]:
    """What a reader of the run must know about its round (no aggregate, or not a server's)."""
    from secagg.party import party_name

    protocol = result.instance
    if result.error is not None:
        return [f"the round revealed no aggregate: {type(result.error).__name__}: {result.error}"]
    if protocol.aggregate_holder not in protocol.server_ids:
        return [
            f"the aggregate is revealed to the {party_name(protocol.aggregate_holder)}, not to a server, "
            "so no server view holds it; were it published, it would leak like any other protocol's sum "
            "(see the rows of the protocols whose server holds it)"
        ]
    return []


def summary_table(record: EvaluateRecord) -> str:
    """The terminal summary: one line per run."""
    header = (
        f"{'run':<44} {'client messages':<16} {'aggregate':<20} {'best PSNR':>9} "
        f"{'bytes/param':>11} {'client s':>9}"
    )
    lines = [header, "-" * len(header)]
    nan = float("nan")
    for run in record.runs:
        best = max((r.psnr for r in run.client_rows()), default=nan)
        verdicts = run.verdicts
        aggregate: str = verdicts.aggregate or "-"
        if run.defense_info and run.defense_info.get("epsilon_revealed") is not None:
            aggregate += f" eps={run.defense_info['epsilon_revealed']:.3g}"
        lines.append(
            f"{run.name[:44]:<44} {verdicts.client_messages or '-':<16} "
            f"{aggregate:<20} "
            f"{best:>9.1f} {run.costs.bytes_per_param if run.costs else nan:>11.2f} "
            f"{run.costs.client_s if run.costs else nan:>9.3f}"
        )
        colluding = colluding_verdict(run.rows)
        if colluding is not None:
            lines.append(f"{'  (servers colluding)':<44} {colluding:<16}")
    return "\n".join(lines)
