"""Every protocol on Flower's deployment engine: a SuperLink and 3 SuperNodes as processes.

One deployment (TLS from a CA made for the run, SuperNode authentication on, the run
submitted with ``flwr run``) runs one round of each registered protocol. Checks: the
aggregate equals the float64 sample-weighted mean within the protocol's declared
precision, the bytes each party sent and received equal the in-process router's, and
when the deployment returns no process of it is left.

Flower starts one ClientApp process per message, so a deployment costs seconds per
stage: the default suite deploys one round of ``plaintext-fedavg`` (the whole
machinery: TLS, node authentication, ``flwr run``, stop); every protocol runs under
``-m slow`` (about 10 minutes on a loaded 2-core machine).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import protocols
from secagg.round import reference_aggregate, run_round

pytest.importorskip("flwr", reason="Flower is an optional extra: pip install secagg[flower]")

from protocols.runtime.flower.client import _party_input  # noqa: E402
from protocols.runtime.flower.deploy import (  # noqa: E402
    Deployment,
    _run_tag_pids,
    deploy,
    synthetic_update,
)

N_CLIENTS = 3
N_PARAMS = 60
NAMES = protocols.available()
SMALL = ["plaintext-fedavg"]


def _deploy(names: list[str], work: Path) -> Deployment:
    schedule = [(name, dict(protocols.get(name).fast_config)) for name in names]
    # Two-server's B shares the ServerApp process here (insecure_single_operator).
    return deploy(
        schedule, N_CLIENTS, n_params=N_PARAMS, insecure_single_operator=True, timeout=1200, directory=work
    )


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    return _deploy(SMALL, tmp_path_factory.mktemp("deploy-small"))


@pytest.fixture(scope="module")
def every(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    return _deploy(NAMES, tmp_path_factory.mktemp("deploy-every"))


def _updates(round_id: int) -> tuple[list[np.ndarray], list[float]]:
    pairs = [synthetic_update(i, np.zeros(N_PARAMS), round_id) for i in range(N_CLIENTS)]
    return [u for u, _ in pairs], [w for _, w in pairs]


def _round(deployment: Deployment, index: int, name: str) -> dict[str, Any]:
    assert "error" not in deployment.result, deployment.result.get("error")
    rounds = {r["round"]: r for r in deployment.result["rounds"]}
    assert rounds[index]["protocol"] == name
    return rounds[index]


def _processes_stopped(deployment: Deployment) -> None:
    assert deployment.strays == []
    assert _run_tag_pids(str(Path(deployment.directory).resolve())) == []
    logs = {path.name for path in Path(deployment.directory).glob("*.log")}
    assert logs == {"superlink.log", *(f"supernode-{i}.log" for i in range(N_CLIENTS))}


def _aggregate_equals_fedavg(deployment: Deployment, index: int, name: str) -> None:
    outcome = _round(deployment, index, name)
    updates, weights = _updates(index)
    assert tuple(outcome["included"]) == tuple(range(N_CLIENTS))
    reference = reference_aggregate(updates, tuple(range(N_CLIENTS)), kind="weighted_mean", weights=weights)
    protocol = protocols.create(name, **protocols.get(name).fast_config)
    bound = protocol.precision(n_clients=N_CLIENTS, value_range=0.5)
    error = float(np.max(np.abs(np.asarray(outcome["aggregate"]) - reference)))
    assert error <= bound, f"{name}: error {error:.3e} above declared precision {bound:.3e}"


def _bytes_equal_the_router_s(deployment: Deployment, index: int, name: str) -> None:
    outcome = _round(deployment, index, name)
    protocol = protocols.create(name, **protocols.get(name).fast_config)
    updates, weights = _updates(index)
    inputs = [_party_input(protocol, u, weights, i) for i, u in enumerate(updates)]
    round_weights = weights if protocol.aggregate_kind == "weighted_mean" else None
    first = run_round(protocol, inputs, weights=round_weights, round_id=index).costs
    second = run_round(protocol, inputs, weights=round_weights, round_id=index).costs
    assert outcome["delivered"] == outcome["messages"] > 0
    if first.bytes_sent != second.bytes_sent:
        pytest.skip(f"{name}: message sizes vary between runs (compressed ciphertexts)")
    assert {int(k): v for k, v in outcome["bytes_sent"].items()} == first.bytes_sent
    assert {int(k): v for k, v in outcome["bytes_received"].items()} == first.bytes_received


def test_a_small_deployment_aggregates_counts_and_stops(small: Deployment) -> None:
    _aggregate_equals_fedavg(small, 0, SMALL[0])
    _bytes_equal_the_router_s(small, 0, SMALL[0])
    _processes_stopped(small)


@pytest.mark.slow
def test_every_process_of_the_deployment_is_stopped(every: Deployment) -> None:
    _processes_stopped(every)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(NAMES)), ids=NAMES)
def test_aggregate_equals_fedavg_in_a_deployment(every: Deployment, index: int) -> None:
    _aggregate_equals_fedavg(every, index, NAMES[index])


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(NAMES)), ids=NAMES)
def test_deployed_bytes_equal_the_router_s(every: Deployment, index: int) -> None:
    _bytes_equal_the_router_s(every, index, NAMES[index])


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "included"), [("upload", (0, 1)), ("aggregate", (0, 1, 2))])
def test_a_supernode_killed_before_or_after_its_upload(
    tmp_path: Path, stage: str, included: tuple[int, ...]
) -> None:
    """SIGKILL SuperNode 2 before the upload stage (it is left out) or after it (its
    input counts); the others' aggregate completes and every process is stopped."""
    name = "plaintext-fedavg"
    outcome = deploy(
        [(name, {})],
        N_CLIENTS,
        n_params=N_PARAMS,
        kill=(2, stage),
        message_timeout=60,
        timeout=900,
        directory=tmp_path,
    )
    result = _round(outcome, 0, name)
    assert tuple(result["included"]) == included
    updates, weights = _updates(0)
    reference = reference_aggregate(updates, included, kind="weighted_mean", weights=weights)
    assert float(np.max(np.abs(np.asarray(result["aggregate"]) - reference))) < 1e-5
    _processes_stopped(outcome)
