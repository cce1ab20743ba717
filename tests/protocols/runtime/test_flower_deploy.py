"""Every protocol on Flower's deployment engine: a SuperLink and 3 SuperNodes as processes.

One deployment (TLS from a CA made for the run, SuperNode authentication on, the run
submitted with ``flwr run``) runs one round of each registered protocol. Checks: the
aggregate equals the float64 sample-weighted mean within the protocol's declared
precision, the bytes each party sent and received equal the in-process router's, and
when the deployment returns no process of it is left.

Two-server runs server B on a SuperNode of its own (its own process and keys): server
A's ServerApp process is shown to hold none of B's secrets.

Flower starts one ClientApp process per message, so a deployment costs seconds per
stage (one two-server round: about a minute on 2 idle cores, three on a loaded machine):
the default suite deploys one round of ``two-server`` (the whole machinery: TLS, node
authentication, ``flwr run``, server B's own node, stop); every protocol, the SuperNode
kills and the SuperLink restart run under ``-m slow`` (about 15 minutes on a loaded 2-core
machine).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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
    LocalFederation,
    _run_tag_pids,
    deploy,
    load_server_keys,
    synthetic_update,
)
from secagg.party import SERVER, SERVER_B  # noqa: E402

N_CLIENTS = 3
N_PARAMS = 60
NAMES = protocols.available()
SMALL = ["two-server"]


def _deploy(names: list[str], work: Path) -> Deployment:
    schedule = [(name, dict(protocols.get(name).fast_config)) for name in names]
    # Two-server's B runs on a SuperNode of its own.
    return deploy(schedule, N_CLIENTS, n_params=N_PARAMS, timeout=1200, directory=work)


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


def _processes_stopped(deployment: Deployment, *, server_b: bool = True) -> None:
    assert deployment.strays == []
    assert _run_tag_pids(str(Path(deployment.directory).resolve())) == []
    logs = {path.name for path in Path(deployment.directory).glob("*.log")}
    nodes = {f"supernode-{i}.log" for i in range(N_CLIENTS)} | ({"server-b.log"} if server_b else set())
    assert logs == {"superlink.log", *nodes}


def _server_a_holds_no_b_secret(deployment: Deployment, index: int) -> None:
    """Server A's ServerApp process hosted server A only, with none of B's secrets, and
    its key file holds no key of B's but B's public key."""
    outcome = _round(deployment, index, "two-server")
    assert set(outcome["server_secrets"]) == {str(SERVER)}
    secrets_of_b = protocols.get("two-server").server_secrets[SERVER_B]
    assert not secrets_of_b & set(outcome["server_secrets"][str(SERVER)])
    assert deployment.result["holds_server_b_key"] is False
    keys = load_server_keys((Path(deployment.directory) / "run-1" / "secagg-server.keys").read_bytes())
    assert keys.server_b_private == b"" and len(keys.server_b_public) == 32
    # B took part, from its own node: it sent A its mask sum.
    assert outcome["bytes_sent"][str(SERVER_B)] > 0


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
    _server_a_holds_no_b_secret(small, 0)
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
@pytest.mark.parametrize(
    ("name", "config", "stage", "included"),
    [
        ("plaintext-fedavg", {}, "upload", (0, 1)),
        ("plaintext-fedavg", {}, "aggregate", (0, 1, 2)),
        # t = 2 of 3: the round recovers the killed client's pair masks from its shares.
        ("secagg", {"threshold": 2}, "masked_input", (0, 1)),
        ("secagg", {"threshold": 2}, "unmasking", (0, 1, 2)),
    ],
    ids=["fedavg-before", "fedavg-after", "secagg-before", "secagg-after"],
)
def test_a_supernode_killed_before_or_after_its_upload(
    tmp_path: Path, name: str, config: dict[str, Any], stage: str, included: tuple[int, ...]
) -> None:
    """SIGKILL SuperNode 2 before its upload stage (it is left out) or after it (its
    input counts); the others' aggregate completes and every process is stopped."""
    outcome = deploy(
        [(name, config)],
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
    bound = protocols.create(name, **config).precision(n_clients=N_CLIENTS, value_range=0.5)
    assert float(np.max(np.abs(np.asarray(result["aggregate"]) - reference))) <= max(bound, 1e-5)
    _processes_stopped(outcome, server_b=False)


@pytest.mark.slow
def test_a_supernode_killed_below_the_threshold_ends_in_a_typed_error(tmp_path: Path) -> None:
    """secagg with t = 3 of 3 cannot lose a client before its masked input: the ServerApp
    reports NotEnoughClientsError, reveals nothing, and every process is stopped."""
    outcome = deploy(
        [("secagg", {})],
        N_CLIENTS,
        n_params=N_PARAMS,
        kill=(2, "masked_input"),
        message_timeout=60,
        timeout=900,
        directory=tmp_path,
    )
    assert str(outcome.result.get("error", "")).startswith("NotEnoughClientsError")
    assert "rounds" not in outcome.result
    _processes_stopped(outcome, server_b=False)


@pytest.mark.slow
def test_a_restarted_superlink_keeps_nothing_of_the_previous_run(tmp_path: Path) -> None:
    """Run 1, restart the SuperLink (same address, nodes registered again, SuperNodes
    reconnect), run 2 with the same round id: the new SuperLink lists run 2 only, every
    node meets run 2 with no secagg state, and run 2's aggregate is right."""
    name = "secagg"
    federation = LocalFederation(N_CLIENTS, tmp_path)
    try:
        federation.start()
        first = federation.submit([(name, {})], n_params=N_PARAMS, timeout=900)
        assert "error" not in first.result, first.result.get("error")
        assert first.run_id in federation.list_runs()
        federation.restart_superlink()
        assert federation.list_runs() == []
        second = federation.submit([(name, {})], n_params=N_PARAMS, timeout=900)
    finally:
        strays = federation.close()
    assert strays == []
    assert second.run_id != first.run_id
    assert "error" not in second.result, second.result.get("error")
    assert second.result["fresh_nodes"] == first.result["fresh_nodes"] == N_CLIENTS
    outcome = second.result["rounds"][0]
    updates, weights = _updates(0)
    reference = reference_aggregate(updates, tuple(range(N_CLIENTS)), kind="weighted_mean", weights=weights)
    bound = protocols.create(name).precision(n_clients=N_CLIENTS, value_range=0.5)
    assert float(np.max(np.abs(np.asarray(outcome["aggregate"]) - reference))) <= bound


_FEDERATION_RUNNER = """
import sys, time
from pathlib import Path
from protocols.runtime.flower.deploy import LocalFederation
federation = LocalFederation(2, Path(sys.argv[1]))
federation.start()
print(federation.tag, flush=True)
time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_sigkilled_runner_takes_its_deployment_with_it(tmp_path: Path) -> None:
    """A runner that started a federation (SuperLink, SuperNodes, Flower's SuperExecs) is
    SIGKILLed: no process of the deployment is left 30 s later (measured: 6 gone in 4.6 s;
    without the parent-death signal all 6 were still running 10 s later)."""
    runner = subprocess.Popen([sys.executable, "-c", _FEDERATION_RUNNER, str(tmp_path / "fed")],
                              stdout=subprocess.PIPE, text=True, env=_with_repo_path())
    tag = ""
    try:
        assert runner.stdout is not None
        tag = runner.stdout.readline().strip()
        assert tag, "the runner did not start its federation"
        time.sleep(5)  # the SuperNodes start their SuperExecs
        assert len([pid for pid in _run_tag_pids(tag) if pid != runner.pid]) >= 3
        runner.send_signal(signal.SIGKILL)
        runner.wait(10)
        deadline = time.monotonic() + 30
        while _run_tag_pids(tag) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _run_tag_pids(tag) == []
    finally:
        runner.kill()
        # A zombie's cmdline is empty, so _run_tag_pids lists only live processes.
        for pid in _run_tag_pids(tag) if tag else []:  # ours, should the check fail
            os.kill(pid, signal.SIGKILL)


def _with_repo_path() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[3])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
