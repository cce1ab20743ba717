"""Every protocol inside Flower, training the leakage lab's LeNet, beside Flower's own SecAgg+.

    python -m benchmarks.flower [--quick] [--out bench-out] [--clients 10] [--rounds 3]

Writes ``flower.json``. In Flower's simulation engine (Ray backend, one CPU per virtual
client) ``--clients`` virtual clients train the DLG LeNet (``leakage.models``) by FedAvg
on the embedded images (``leakage.data.load_embedded``, an even seeded split) for
``--rounds`` rounds, once per protocol (:mod:`protocols.runtime.flower`). For each:

- convergence: the training loss of the global model after every round; the max
  absolute distance between the global parameters and those of a plain in-process
  FedAvg run with the same seeds; and, per round, the max error of the step the
  protocol took against the plain FedAvg step from the same parameters, which must be
  within the protocol's declared precision (``within_precision``);
- bytes per parameter uploaded per client (the secagg wire bytes, equal to what the
  in-process router counts, and Flower's protobuf records carrying them) and seconds per
  round (wall clock of the whole round in the simulation, training included).

Beside them, Flower 1.42's SecAgg+ (``SecAggPlusWorkflow`` + ``secaggplus_mod``) on the same
model, data and clients: the same figures, its bytes counted on the same protobuf records.
Every time is a ratio against the plaintext-FedAvg run of the same simulation setup
(``round_s_vs_plaintext``, steady state: the first round also starts Ray's actors).

    python -m benchmarks.flower --deploy [--quick] [--clients 4]

writes ``flower-deploy.json`` instead: one round of every protocol on Flower's deployment
engine (:mod:`protocols.runtime.flower.deploy`: a SuperLink and ``--clients`` SuperNodes as
processes, TLS, node authentication) next to the same schedule in the simulation engine,
on the deployment's seeded synthetic updates (300 parameters): seconds per round in each
and their ratio (``deploy_vs_simulation``), with the startup of each engine reported apart.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, cast

import numpy as np

from benchmarks.common import environment, write_json

LOCAL_EPOCHS = 5
LEARNING_RATE = 0.1
SPLIT_SEED = 7
MODEL_SEED = 3
QUICK_PROTOCOLS = ("plaintext-fedavg", "two-server", "secagg", "paillier", "ckks")
# The per-parameter phe baseline is the Paillier benchmark's business: ~10^4 full
# Paillier encryptions per client per round would dominate this run.
SKIP = ("paillier-naive",)

_TASK: dict[str, Any] = {}


def _task() -> dict[str, Any]:
    """Data, split and model template, built once per process (Ray workers too)."""
    if not _TASK:
        import torch

        from leakage.data import load_embedded
        from leakage.models import build_model
        from secagg.flat import flatten

        torch.set_num_threads(1)
        data = load_embedded()
        model = build_model("lenet", num_classes=data.num_classes, seed=MODEL_SEED)
        vector, spec = flatten(model.state_dict())
        _TASK.update(data=data, model=model, initial=np.asarray(vector, dtype=np.float64), spec=spec)
    return _TASK


def partition_indices(partition: int, n_clients: int, n_images: int) -> np.ndarray:
    order = np.random.default_rng(SPLIT_SEED).permutation(n_images)
    return np.sort(order[partition::n_clients])


def _load(params: np.ndarray) -> Any:
    import torch

    from secagg.flat import unflatten

    task = _task()
    state = {
        k: torch.as_tensor(np.asarray(v, dtype=np.float32))
        for k, v in unflatten(params, task["spec"]).items()
    }
    task["model"].load_state_dict(state)
    return task["model"]


def local_train(partition: int, params: np.ndarray, n_clients: int) -> tuple[np.ndarray, float]:
    """Full-batch SGD on the partition; returns (trained - global, sample count)."""
    import torch

    from secagg.flat import flatten

    task = _task()
    model = _load(params)
    idx = torch.as_tensor(partition_indices(partition, n_clients, len(task["data"])))
    images, labels = task["data"].images[idx], task["data"].labels[idx]
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    for _ in range(LOCAL_EPOCHS):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    trained, _ = flatten(model.state_dict())
    return np.asarray(trained, dtype=np.float64) - params, float(len(idx))


def global_loss(params: np.ndarray) -> tuple[float, float]:
    """Cross-entropy and accuracy of the global model on all embedded images."""
    import torch

    task = _task()
    with torch.no_grad():
        logits = _load(params)(task["data"].images)
        loss = torch.nn.functional.cross_entropy(logits, task["data"].labels)
        accuracy = (logits.argmax(1) == task["data"].labels).float().mean()
    return float(loss), float(accuracy)


class Trainer:
    """``train_fn`` for :func:`protocols.runtime.flower.simulate` (picklable: a module-level class)."""

    def __init__(self, n_clients: int) -> None:
        self.n_clients = n_clients

    def __call__(self, partition: int, params: np.ndarray, round_id: int) -> tuple[np.ndarray, float]:
        return local_train(partition, params, self.n_clients)


def fedavg_step(params: np.ndarray, n_clients: int) -> np.ndarray:
    """One plain FedAvg step in float64, in process: the sample-weighted mean update."""
    pairs = [local_train(i, params, n_clients) for i in range(n_clients)]
    weights = np.array([w for _, w in pairs])
    return (weights[:, None] * np.stack([u for u, _ in pairs])).sum(0) / weights.sum()


def plain_fedavg(n_clients: int, rounds: int) -> list[np.ndarray]:
    """The in-process reference: FedAvg in float64 with the same seeds."""
    params = _task()["initial"].copy()
    history = []
    for _ in range(rounds):
        params = params + fedavg_step(params, n_clients)
        history.append(params.copy())
    return history


def round_errors(history: list[np.ndarray], n_clients: int) -> list[float]:
    """Per round: max |global step taken - plain FedAvg step from the same parameters|."""
    errors = []
    previous = _task()["initial"]
    for params in history:
        errors.append(float(np.max(np.abs((params - previous) - fedavg_step(previous, n_clients)))))
        previous = params
    return errors


def run_protocol(
    name: str, *, n_clients: int, rounds: int, quick: bool, reference: list[np.ndarray]
) -> dict[str, Any]:
    import protocols
    from protocols.runtime.flower import SecAggWorkflow, simulate

    config = dict(protocols.get(name).fast_config) if quick else {}
    # Costs only: two-server's A and B share the ServerApp process here (not a deployment).
    workflow = SecAggWorkflow(name, config, insecure_single_operator=True)
    began = time.perf_counter()
    run = simulate([workflow] * rounds, Trainer(n_clients), initial=_task()["initial"], n_clients=n_clients)
    total = time.perf_counter() - began
    n_params = int(_task()["initial"].size)
    losses = [global_loss(p) for p in run.params]
    return {
        "protocol": name,
        "config": config,
        "provisioning": workflow.provisioning,
        "n_params": n_params,
        "simulation_s": total,
        "round_s": run.round_seconds,
        "protocol_s": [r.seconds for r in run.rounds],
        "wire_bytes_per_param_up": float(np.mean([r.costs.bytes_per_param() for r in run.rounds])),
        "flower_bytes_per_param_up": float(
            np.mean([r.flower_bytes_up / n_clients / n_params for r in run.rounds])
        ),
        "flower_bytes_per_param_down": float(
            np.mean([r.flower_bytes_down / n_clients / n_params for r in run.rounds])
        ),
        "loss": [loss for loss, _ in losses],
        "accuracy": [acc for _, acc in losses],
        "max_abs_diff_vs_plain_fedavg": [
            float(np.max(np.abs(p - q))) for p, q in zip(run.params, reference, strict=True)
        ],
        "round_error_vs_fedavg_step": round_errors(run.params, n_clients),
        "declared_precision": protocols.create(name, **config).precision(
            n_clients=n_clients, value_range=1.0
        ),
    }


# -- Flower's own SecAgg+ ---------------------------------------------------------------------


class _CountingGrid:
    """A Grid that adds up the protobuf size of what it sends and what comes back."""

    def __init__(self, grid: Any) -> None:
        self._grid = grid
        self.bytes_down = 0
        self.bytes_up = 0

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        from flwr.common.serde import recorddict_to_proto

        messages = list(messages)
        self.bytes_down += sum(recorddict_to_proto(m.content).ByteSize() for m in messages if m.has_content())
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        self.bytes_up += sum(recorddict_to_proto(m.content).ByteSize() for m in replies if m.has_content())
        return replies

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


def run_secaggplus(*, n_clients: int, rounds: int, reference: list[np.ndarray]) -> dict[str, Any]:
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from protocols.runtime.flower.server import _ray_sees_repo

    _ray_sees_repo()
    spec = _task()["spec"]
    initial = _task()["initial"]
    record: dict[str, Any] = {"round_s": [], "params": []}

    def to_arrays(vector: np.ndarray) -> list[np.ndarray]:
        from secagg.flat import unflatten

        return [np.asarray(v, dtype=np.float32) for v in unflatten(vector, spec).values()]

    class Client(NumPyClient):  # type: ignore[misc]
        def __init__(self, partition: int) -> None:
            self.partition = partition

        def fit(
            self, parameters: list[np.ndarray], config: dict[str, Any]
        ) -> tuple[list[np.ndarray], int, dict]:
            flat = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1) for p in parameters])
            delta, weight = local_train(self.partition, flat, n_clients)
            return to_arrays(flat + delta), int(weight), {}

    def client_fn(context: Any) -> Any:
        return Client(int(context.node_config["partition-id"])).to_client()

    class Strategy(FedAvg):  # type: ignore[misc]
        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            from flwr.common import parameters_to_ndarrays

            aggregated, metrics = super().aggregate_fit(server_round, results, failures)
            if aggregated is not None:
                arrays = parameters_to_ndarrays(aggregated)
                record["params"].append(np.concatenate([a.astype(np.float64).reshape(-1) for a in arrays]))
            return aggregated, metrics

    class TimedSecAggPlus(SecAggPlusWorkflow):  # type: ignore[misc]
        def __call__(self, grid: Any, context: Any) -> None:
            began = time.perf_counter()
            super().__call__(grid, context)
            record["round_s"].append(time.perf_counter() - began)

    server = ServerApp()
    counting: dict[str, _CountingGrid] = {}

    @server.main()
    def main(grid: Any, context: Any) -> None:
        strategy = Strategy(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=n_clients,
            min_available_clients=n_clients,
            initial_parameters=ndarrays_to_parameters(to_arrays(initial)),
        )
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
        # Flower's defaults; the reconstruction threshold must not exceed the shares.
        fit = TimedSecAggPlus(num_shares=n_clients, reconstruction_threshold=max(2, (2 * n_clients) // 3))
        counting["grid"] = _CountingGrid(grid)
        DefaultWorkflow(fit_workflow=fit)(cast(Any, counting["grid"]), legacy)

    began = time.perf_counter()
    run_simulation(
        server_app=server,
        client_app=ClientApp(client_fn=client_fn, mods=[secaggplus_mod]),
        num_supernodes=n_clients,
        backend_config={"client_resources": {"num_cpus": 1}},
    )
    total = time.perf_counter() - began
    n_params = int(initial.size)
    grid = counting.get("grid")
    params = record["params"]
    losses = [global_loss(p) for p in params]
    return {
        "protocol": "flower-secaggplus",
        "n_params": n_params,
        "simulation_s": total,
        "round_s": record["round_s"],
        "flower_bytes_per_param_up": (grid.bytes_up / rounds / n_clients / n_params) if grid else None,
        "flower_bytes_per_param_down": (grid.bytes_down / rounds / n_clients / n_params) if grid else None,
        "loss": [loss for loss, _ in losses],
        "accuracy": [acc for _, acc in losses],
        "max_abs_diff_vs_plain_fedavg": [
            float(np.max(np.abs(p - q))) for p, q in zip(params, reference, strict=False)
        ],
        "round_error_vs_fedavg_step": round_errors(params, n_clients),
        "rounds_completed": len(params),
    }


def run(quick: bool = False, *, n_clients: int = 10, rounds: int | None = None) -> dict[str, Any]:
    import protocols

    rounds = rounds or (2 if quick else 3)
    names = [n for n in protocols.available() if n not in SKIP]
    if quick:
        names = [n for n in names if n in QUICK_PROTOCOLS]
    reference = plain_fedavg(n_clients, rounds)
    initial_loss = global_loss(_task()["initial"])
    rows = [
        run_protocol(name, n_clients=n_clients, rounds=rounds, quick=quick, reference=reference)
        for name in names
    ]
    rows.append(run_secaggplus(n_clients=n_clients, rounds=rounds, reference=reference))
    summarise(rows)
    return {
        "benchmark": "flower",
        "environment": environment(),
        "setup": {
            "clients": n_clients,
            "rounds": rounds,
            "model": "lenet (leakage.models, DLG LeNet)",
            "data": "leakage.data.load_embedded (120 images, 10 classes), even seeded split",
            "local_training": f"{LOCAL_EPOCHS} full-batch SGD steps, lr {LEARNING_RATE}",
            "engine": "flwr.simulation.run_simulation, Ray backend, 1 CPU per virtual client",
            "quick": quick,
        },
        "plain_fedavg_loss": [initial_loss[0]] + [global_loss(p)[0] for p in reference],
        "rows": rows,
    }


def summarise(rows: list[dict[str, Any]]) -> None:
    """Steady-state round time (the first round also starts Ray's actors), ratios, bounds."""
    for row in rows:
        times = row["round_s"][1:] or row["round_s"]
        row["round_s_steady"] = float(np.mean(times)) if times else None
        precision = row.get("declared_precision")
        if precision is not None:
            # Each round's aggregate is within the declared precision of the FedAvg step.
            row["within_precision"] = bool(max(row["round_error_vs_fedavg_step"]) <= precision)
    baseline = next((r for r in rows if r["protocol"] == "plaintext-fedavg"), None)
    if baseline is not None and baseline["round_s_steady"]:
        for row in rows:
            steady = row["round_s_steady"]
            row["round_s_vs_plaintext"] = steady / baseline["round_s_steady"] if steady else None


def run_deploy(quick: bool, *, n_clients: int, n_params: int = 300) -> dict[str, Any]:
    """Seconds per round per protocol: deployment engine against simulation engine."""
    import protocols
    from protocols.runtime.flower import SecAggWorkflow, simulate
    from protocols.runtime.flower.deploy import deploy, synthetic_update

    names = [name for name in protocols.available() if name not in SKIP]
    schedule = [(name, dict(protocols.get(name).fast_config) if quick else {}) for name in names]
    began = time.perf_counter()
    # Server B of two-server runs on a SuperNode of its own (the simulation keeps it in the ServerApp).
    deployed = deploy(schedule, n_clients, n_params=n_params, timeout=3600)
    deploy_wall = time.perf_counter() - began
    if "error" in deployed.result:
        raise RuntimeError(f"deployment failed: {deployed.result['error']}")
    began = time.perf_counter()
    simulated = simulate(
        [SecAggWorkflow(name, config, insecure_single_operator=True) for name, config in schedule],
        synthetic_update,
        initial=np.zeros(n_params),
        n_clients=n_clients,
    )
    simulation_wall = time.perf_counter() - began
    rows = []
    for index, (name, config) in enumerate(schedule):
        deploy_s = float(deployed.result["round_seconds"][index])
        simulation_s = float(simulated.round_seconds[index])
        rows.append(
            {
                "protocol": name,
                "config": config,
                "deploy_round_s": deploy_s,
                "simulation_round_s": simulation_s,
                "deploy_vs_simulation": deploy_s / simulation_s,
            }
        )
    return {
        "benchmark": "flower-deploy",
        "environment": environment(),
        "quick": quick,
        "n_clients": n_clients,
        "n_params": n_params,
        "deploy_startup_s": deployed.startup_seconds,
        "deploy_wall_s": deploy_wall,
        "deploy_strays": deployed.strays,
        "deploy_server_b_node": True,
        "simulation_wall_s": simulation_wall,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploy", action="store_true", help="deployment engine next to simulation")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="bench-out")
    parser.add_argument("--clients", type=int, default=None, help="default: 10 (simulation), 4 (--deploy)")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    if args.deploy:
        result = run_deploy(args.quick, n_clients=args.clients or 4)
        out = write_json(Path(args.out) / "flower-deploy.json", result)
        for row in result["rows"]:
            print(
                f"{row['protocol']:18s} deploy {row['deploy_round_s']:7.2f} s/round  "
                f"simulation {row['simulation_round_s']:6.2f} s/round  x{row['deploy_vs_simulation']:.1f}"
            )
        print(f"wrote {out}")
        return
    record = run(args.quick, n_clients=args.clients or 10, rounds=args.rounds)
    path = write_json(Path(args.out) / "flower.json", record)
    for row in record["rows"]:
        print(
            f"{row['protocol']:18s} round {row['round_s_steady']:6.2f} s  "
            f"up {row.get('wire_bytes_per_param_up', float('nan')):7.2f} B/param (wire)  "
            f"{row['flower_bytes_per_param_up']:7.2f} B/param (flower)  "
            f"loss {row['loss'][-1]:.4f}  "
            f"max|diff| {max(row['max_abs_diff_vs_plain_fedavg'] or [float('nan')]):.2e}"
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
