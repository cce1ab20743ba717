"""A secagg round on Flower's deployment engine: a SuperLink and N SuperNodes as processes.

``python -m protocols.runtime.flower.deploy --clients 4 --protocol secagg`` does on
loopback what an operator does across machines with Flower 1.42:

1. makes the run's credentials locally: a CA and a SuperLink TLS certificate for
   127.0.0.1 (``cryptography`` x509, EC P-256), one EC P-384 SuperNode authentication
   key per node (OpenSSH format, as ``flower-supernode --auth-supernode-private-key``
   reads it), and secagg's own long-term keys (:class:`protocols.runtime.flower.client.Trust`):
   each node's key file (its Ed25519 identity, the pinned dealer keys) is named in that
   node's ``--node-config``; the ServerApp's file holds only public keys;
2. starts ``flower-superlink`` with TLS and ``--enable-supernode-auth``, registers every
   node's public key (``flwr supernode register``), starts one ``flower-supernode`` per
   client with TLS and its authentication key, each process in its own session;
3. submits the run with ``flwr run`` (a Flower App written into the run's directory,
   whose ServerApp and ClientApp are this package's); the ServerApp runs the FedAvg
   round of :mod:`protocols.runtime.flower.server` and writes the round's result as JSON;
4. stops every process it started (SIGTERM, then SIGKILL after a bound) and waits until
   no process of the run (including the ServerApp/ClientApp/SuperExec children Flower
   starts) is left. A runner killed outright (SIGKILL) cannot do that: on Linux every
   process it started carries a parent-death signal (SIGKILL), so they go with it.

Updates are synthetic and seeded (:func:`synthetic_update`) so a caller can compute the
float64 reference. No network beyond loopback; nothing is downloaded (runtime dependency
installation is off).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from protocols.runtime.flower.client import NodeKeys, Trust
from protocols.runtime.flower.server import ServerKeys
from secagg.errors import ConfigError, ProtocolStateError, WireFormatError
from secagg.wire import Reader, Writer

if TYPE_CHECKING:
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

APP_PACKAGE = "secagg_deploy_app"
RESULT_VERSION = 1
RANGE = 0.5


def synthetic_update(partition: int, params: np.ndarray, round_id: int) -> tuple[np.ndarray, float]:
    """The deployment's stand-in for local training: a seeded update and sample count."""
    rng = np.random.default_rng(1000 * round_id + partition)
    return rng.uniform(-RANGE, RANGE, params.size), float(partition + 1)


# -- key files (explicit layouts, never pickled) ------------------------------------------

_NODE_MAGIC, _SERVER_MAGIC = b"SGNK", b"SGSK"


_KEYS_VERSION = 2
_MAX_NODES = 4096


def _write_publics(writer: Writer, publics: Sequence[bytes]) -> Writer:
    """``u32 n, blob* node publics`` (both key files carry the nodes' public keys so)."""
    writer.u32(len(publics))
    for public in publics:
        writer.blob(public)
    return writer


def _read_publics(reader: Reader, what: str) -> tuple[bytes, ...]:
    count = reader.u32("node count")
    if count > _MAX_NODES:
        raise WireFormatError(f"{what}: expected at most {_MAX_NODES} node keys, got {count}")
    return tuple(reader.blob("node public", 64) for _ in range(count))


def _open_keys(data: bytes, magic: bytes, what: str) -> Reader:
    """A reader past the key file's magic and version, which must be ours."""
    reader = Reader(data, what)
    if reader.raw(4, "magic") != magic or reader.u8("version") != _KEYS_VERSION:
        raise WireFormatError(f"{what}: expected magic {magic.decode()} version {_KEYS_VERSION}")
    return reader


def dump_node_keys(keys: NodeKeys) -> bytes:
    """Layout: ``b"SGNK" | u8 2 | blob identity | blob dealer public | blob B public | blob
    dealer private | u32 n, blob* node publics | blob B private`` (private keys empty where
    the node holds none)."""
    writer = Writer().raw(_NODE_MAGIC).u8(_KEYS_VERSION).blob(keys.identity_private).blob(keys.dealer_public)
    writer.blob(keys.server_b_public).blob(keys.dealer_private)
    _write_publics(writer, keys.node_publics).blob(keys.server_b_private)
    return writer.to_bytes()


def load_node_keys(data: bytes) -> NodeKeys:
    reader = _open_keys(data, _NODE_MAGIC, "node keys")
    identity, dealer, server_b, dealer_private = (reader.blob(name, 64) for name in ("id", "d", "b", "dp"))
    publics = _read_publics(reader, "node keys")
    server_b_private = reader.blob("server b private", 64)
    reader.done()
    return NodeKeys(identity, dealer, server_b, dealer_private, publics, server_b_private)


def dump_server_keys(keys: ServerKeys) -> bytes:
    """Layout: ``b"SGSK" | u8 2 | blob dealer public | blob B private (empty unless B shares
    the ServerApp) | u32 n, blob* node publics | blob B public``."""
    writer = (
        Writer().raw(_SERVER_MAGIC).u8(_KEYS_VERSION).blob(keys.dealer_public).blob(keys.server_b_private)
    )
    _write_publics(writer, keys.node_publics).blob(keys.server_b_public)
    return writer.to_bytes()


def load_server_keys(data: bytes) -> ServerKeys:
    reader = _open_keys(data, _SERVER_MAGIC, "server keys")
    dealer, server_b = reader.blob("dealer", 64), reader.blob("server b", 64)
    publics = _read_publics(reader, "server keys")
    server_b_public = reader.blob("server b public", 64)
    reader.done()
    return ServerKeys(dealer, publics, server_b, server_b_public)


def _write_secret(path: Path, data: bytes) -> None:
    path.write_bytes(b"")
    path.chmod(0o600)
    path.write_bytes(data)


# -- the apps Flower runs ----------------------------------------------------------------


def _node_keys(partition: int, node_config: Mapping[str, Any]) -> NodeKeys:
    path = node_config.get("secagg-keys")
    if not path:
        raise ConfigError(f"node {partition}: expected 'secagg-keys' (a key file) in the node configuration")
    return load_node_keys(Path(str(path)).read_bytes())


def deployed_client_app() -> ClientApp:
    """The ClientApp of a deployment: keys from the node's configuration, synthetic updates."""
    from protocols.runtime.flower.client import make_client_app

    return make_client_app(synthetic_update, _node_keys)


def _stage_barrier(progress: Path, kill_at: str) -> Callable[[str], None]:
    """Before stage ``kill_at``, tell the launcher (``progress``) and wait until it has
    stopped the SuperNode it was asked to stop (it answers in ``progress.done``)."""

    def before(stage: str) -> None:
        if stage != kill_at:
            return
        progress.write_text(stage)
        done = progress.with_suffix(".done")
        deadline = time.monotonic() + 60
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.1)

    return before


def deployed_server_app() -> ServerApp:
    """The ServerApp of a deployment: one FedAvg round per ``rounds``, the result as JSON."""
    from flwr.serverapp import ServerApp

    from protocols.runtime.flower.server import FlowerRun, SecAggWorkflow, serve

    app = ServerApp()

    @app.main()
    def main(grid: Any, context: Any) -> None:
        config = context.run_config
        result_path = Path(str(config["result"]))
        began = time.perf_counter()
        record: dict[str, Any] = {"version": RESULT_VERSION}
        try:
            keys = load_server_keys(Path(str(config["server-keys"])).read_bytes())
            schedule = [
                SecAggWorkflow(
                    str(name),
                    dict(protocol_config),
                    insecure_single_operator=bool(config["insecure-single-operator"]),
                    server_b_node=bool(config["server-b-node"]),
                    timeout=float(config["timeout"]),
                    before_stage=_stage_barrier(Path(str(config["progress"])), str(config["kill-at"])),
                )
                for name, protocol_config in json.loads(str(config["schedule"]))
            ]
            run = FlowerRun(protocol=",".join(w.protocol_name for w in schedule))
            serve(
                grid,
                schedule,
                initial=np.zeros(int(config["n-params"])),
                n_nodes=int(config["n-clients"]),
                run=run,
                keys=keys,
            )
            if run.error is not None:
                raise run.error
            record["rounds"] = [
                {
                    "round": outcome.round_id,
                    "protocol": schedule[outcome.round_id].protocol_name,
                    "aggregate": outcome.aggregate.tolist(),
                    "included": list(outcome.included),
                    "bytes_sent": {str(k): v for k, v in outcome.costs.bytes_sent.items()},
                    "bytes_received": {str(k): v for k, v in outcome.costs.bytes_received.items()},
                    "delivered": sum(entry.delivered for entry in outcome.transcript),
                    "messages": len(outcome.transcript),
                    "protocol_seconds": outcome.seconds,
                    "flower_bytes_up": outcome.flower_bytes_up,
                    "flower_bytes_down": outcome.flower_bytes_down,
                    # The server parties this ServerApp process hosted, and the secrets they held.
                    "server_secrets": {
                        str(sid): sorted(h.name for h in view.holdings if h.secret)
                        for sid, view in outcome.server_views.items()
                    },
                }
                for outcome in run.rounds
            ]
            record["holds_server_b_key"] = bool(keys.server_b_private)
            record["fresh_nodes"] = run.fresh_nodes
            record["round_seconds"] = run.round_seconds
        except BaseException as exc:  # noqa: BLE001 - reported to the launcher in the result
            record["error"] = f"{type(exc).__name__}: {exc}"
        record["server_seconds"] = time.perf_counter() - began
        partial = result_path.with_suffix(".partial")
        partial.write_text(json.dumps(record))
        partial.replace(result_path)

    return app


# -- credentials ---------------------------------------------------------------------------


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a SuperLink certificate for 127.0.0.1/localhost: (ca.pem, server.pem, server.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "secagg deployment CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_secret(
        key_path,
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    return ca_path, cert_path, key_path


def make_node_auth_key(directory: Path, name: str) -> tuple[Path, Path]:
    """An EC P-384 SuperNode authentication key pair in OpenSSH format: (private, public)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    private, public = directory / f"{name}.key", directory / f"{name}.pub"
    _write_secret(
        private,
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ),
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    return private, public


# -- processes -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_port(port: int, timeout: float, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ProtocolStateError(f"process exited with {process.returncode} before listening; see {log}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.5)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise ProtocolStateError(f"expected a listener on 127.0.0.1:{port} within {timeout:.0f} s; see {log}")


def _run_tag_pids(tag: str) -> list[int]:
    """Processes whose command line or environment names this run's directory."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if tag.encode() in cmdline or tag.encode() in environ:
            found.append(int(entry.name))
    return found


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` under which a child gets ``sig`` when the process that started it
    dies, however it dies (SIGKILL included): Linux's ``prctl(PR_SET_PDEATHSIG)``. None
    off Linux, where nothing equivalent is set.

    The signal is tied to the *thread* that forks: start the processes from a thread that
    lives as long as the deployment (the main thread, as the CLI and the tests do). A
    runner that dies between the fork and the prctl is caught by comparing the parent pid
    afterwards. libc's ``prctl`` is looked up here, before the fork, so the child does no
    more than two system calls before it execs.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def arm() -> None:
        if prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent is already gone: follow it now
            os.kill(os.getpid(), sig)

    return arm


@dataclass
class Processes:
    """The processes of one deployment, stopped together within a bound.

    Each is started in its own session (a terminal's Ctrl-C reaches the runner, which
    stops them in order) and with a parent-death signal (:func:`die_with_parent`): if the
    runner is killed outright, Linux SIGKILLs them, and Flower's own helpers (SuperExec,
    ServerApp, ClientApp processes) exit when their parent does.
    """

    tag: str
    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path, *, append: bool = False
    ) -> subprocess.Popen[bytes]:
        handle = log.open("ab" if append else "wb")
        process = subprocess.Popen(  # noqa: S603 - fixed argv of Flower's own executables
            list(argv),
            env=dict(env),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),  # two syscalls in the child; libc looked up before the fork
        )
        handle.close()
        self.started.append((name, process))
        return process

    def kill(self, name: str) -> None:
        """SIGKILL one process (a node that fails), and wait for it."""
        for own, process in self.started:
            if own == name and process.poll() is None:
                process.kill()
                process.wait(10)

    def stop(self, name: str, grace: float = 10.0) -> None:
        """SIGTERM one process (SIGKILL after ``grace``), and wait for it."""
        for own, process in self.started:
            if own == name and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(grace)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(grace)

    def stop_all(self, grace: float = 10.0) -> list[int]:
        """Stop every process, then every process of the run Flower started; pids left (none)."""
        for _, process in reversed(self.started):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, process in self.started:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(grace)
        # Flower's SuperExec, ServerApp and ClientApp processes watch their parent and exit.
        deadline = time.monotonic() + grace
        while (left := _run_tag_pids(self.tag)) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in left:  # started by this run (they carry its directory): ours to end
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
        return _run_tag_pids(self.tag)


@dataclass
class Deployment:
    """What one deployment produced: the ServerApp's result, timings, and stray processes."""

    protocol: str
    n_clients: int
    n_params: int
    result: dict[str, Any]
    wall_seconds: float
    startup_seconds: float
    run_seconds: float
    strays: list[int]
    directory: Path


def _bin(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            raise ConfigError(f"expected Flower's {name} executable next to {sys.executable} or on PATH")
        return found
    return str(path)


def _repo_root() -> str:
    return str(Path(__file__).resolve().parents[3])


def _write_app(directory: Path, settings: Mapping[str, Any]) -> Path:
    app = directory / "app"
    package = app / APP_PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""The secagg deployment app (generated)."""\n')
    (package / "server_app.py").write_text(
        "from protocols.runtime.flower.deploy import deployed_server_app\n\napp = deployed_server_app()\n"
    )
    (package / "client_app.py").write_text(
        "from protocols.runtime.flower.deploy import deployed_client_app\n\napp = deployed_client_app()\n"
    )
    lines = [
        "[build-system]",
        'requires = ["hatchling"]',
        'build-backend = "hatchling.build"',
        "",
        "[project]",
        f'name = "{APP_PACKAGE.replace("_", "-")}"',
        'version = "1.0.0"',
        "dependencies = []",
        "",
        "[tool.hatch.build.targets.wheel]",
        'packages = ["."]',
        "",
        "[tool.flwr.app]",
        'publisher = "secagg"',
        "",
        "[tool.flwr.app.components]",
        f'serverapp = "{APP_PACKAGE}.server_app:app"',
        f'clientapp = "{APP_PACKAGE}.client_app:app"',
        "",
        "[tool.flwr.app.config]",
    ]
    for key, value in settings.items():
        lines.append(f"{key} = {json.dumps(value)}")
    (app / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return app


@dataclass
class RunOutcome:
    """One ``flwr run`` on a federation: the ServerApp's result and how long it took."""

    result: dict[str, Any]
    run_seconds: float
    run_id: str


class LocalFederation:
    """A SuperLink and N SuperNodes on loopback (TLS, SuperNode authentication), plus
    server B's own SuperNode where a protocol has two servers and runs them apart.

    ``start`` makes the credentials and starts every process; ``submit`` runs one Flower
    run (``flwr run``) and waits for its result; ``restart_superlink`` stops the SuperLink
    and starts a fresh one on the same address (it keeps no state: runs and registered
    nodes live in its memory, so the nodes' keys are registered again and the SuperNodes
    reconnect); ``close`` stops every process and returns any that would not die.
    """

    def __init__(self, n_clients: int, directory: Path, *, server_b: bool = False) -> None:
        if n_clients < 2:
            raise ConfigError(f"expected at least 2 clients, got {n_clients}")
        self.n_clients = n_clients
        self.work = directory
        self.work.mkdir(parents=True, exist_ok=True)
        self.tag = str(self.work.resolve())
        self.server_b = server_b
        self.procs = Processes(self.tag)
        self.trust = Trust.generate(n_clients)
        self.creds = self.work / "creds"
        self.creds.mkdir(exist_ok=True)
        self.runs = 0
        self.link_port = _free_port()
        self._superlink: subprocess.Popen[bytes] | None = None
        self._node_publics: list[Path] = []
        home = self.work / "flwr-home"
        home.mkdir(exist_ok=True)
        paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([_repo_root(), *paths]),
            # Flower starts its helpers (flower-superexec, flwr-serverapp, ...) by name.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            "FLWR_HOME": str(home),
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "SECAGG_DEPLOYMENT": self.tag,
        }
        self._home = home

    @property
    def node_names(self) -> list[str]:
        return [f"supernode-{i}" for i in range(self.n_clients)] + (["server-b"] if self.server_b else [])

    def start(self) -> None:
        self.ca, self.cert, self.key = make_tls(self.creds)
        (self._home / "config.toml").write_text(
            "[superlink]\n"
            'default = "secagg"\n\n'
            "[superlink.secagg]\n"
            f'address = "127.0.0.1:{self.link_port}"\n'
            f'root-certificates = "{self.ca}"\n'
        )
        self.node_files = []
        for i in range(self.n_clients):
            path = self.creds / f"secagg-node-{i}.keys"
            _write_secret(path, dump_node_keys(self.trust.node(i)))
            self.node_files.append(path)
        if self.server_b:
            path = self.creds / "secagg-server-b.keys"
            _write_secret(path, dump_node_keys(self.trust.server_b_node()))
            self.node_files.append(path)
        self.start_superlink()
        for name in self.node_names:
            _, public = make_node_auth_key(self.creds, name)
            self._node_publics.append(public)
            self._register(public)
        self.start_supernodes()

    def start_supernodes(self) -> None:
        for index, name in enumerate(self.node_names):
            # Server B's node takes the partition after the clients' (the ServerApp tells it
            # apart by its answer to 'hello', from its keys, not by this number).
            node_config = (
                f'partition-id={index} num-partitions={self.n_clients} secagg-keys="{self.node_files[index]}"'
            )
            self.procs.start(
                name,
                [
                    _bin("flower-supernode"),
                    "--root-certificates", str(self.ca),
                    "--superlink", f"127.0.0.1:{self.link_port}",
                    "--auth-supernode-private-key", str(self.creds / f"{name}.key"),
                    "--node-config", node_config,
                    "--host", "127.0.0.1",
                    "--port", str(_free_port()),
                    "--max-retries", "60",
                ],
                self.env,
                self.work / f"{name}.log",
                append=True,
            )  # fmt: skip

    def start_superlink(self) -> None:
        log = self.work / "superlink.log"
        self._superlink = self.procs.start(
            "superlink",
            [
                _bin("flower-superlink"),
                "--ssl-ca-certfile", str(self.ca),
                "--ssl-certfile", str(self.cert),
                "--ssl-keyfile", str(self.key),
                "--enable-supernode-auth",
                "--disable-runtime-dependency-installation",
                "--host", "127.0.0.1",
                "--port", str(self.link_port),
            ],
            self.env,
            log,
            append=True,
        )  # fmt: skip
        _wait_port(self.link_port, 60, self._superlink, log)

    def _flwr(self, argv: Sequence[str], *, timeout: float, what: str, cwd: Path | None = None) -> bytes:
        """Run Flower's CLI (``flwr argv...``) in this federation's environment; its stdout.

        A non-zero exit raises :class:`ProtocolStateError` naming ``what`` with the tails of
        both streams (Flower prints its errors to either)."""
        completed = subprocess.run(  # noqa: S603 - Flower's CLI, fixed argv
            [_bin("flwr"), *argv],
            env=self.env,
            capture_output=True,
            timeout=timeout,
            check=False,
            cwd=cwd,
            preexec_fn=die_with_parent(),  # like every process the deployment starts
        )
        if completed.returncode != 0:
            raise ProtocolStateError(
                f"{what} failed: {completed.stdout.decode()[-600:]} {completed.stderr.decode()[-600:]}"
            )
        return completed.stdout

    def _register(self, public: Path) -> None:
        argv = ["supernode", "register", str(public), "secagg", "--format", "json"]
        self._flwr(argv, timeout=60, what="flwr supernode register")

    def restart_superlink(self) -> None:
        """Stop the SuperLink (SIGTERM, then SIGKILL) and start a fresh one on the same port.

        The new SuperLink keeps nothing (runs and registered nodes lived in the old one's
        memory): the nodes' keys are registered again and the SuperNodes started again
        with their own keys and configuration, since Flower's SuperNode shuts itself down
        when a SuperLink answers 401 (it no longer knows the node)."""
        for name in self.node_names:
            self.procs.stop(name)
        self.procs.stop("superlink")
        self.start_superlink()
        for public in self._node_publics:
            self._register(public)
        self.start_supernodes()

    def list_runs(self) -> list[str]:
        """The run ids the SuperLink knows (``flwr ls``)."""
        listed = self._flwr(["ls", "secagg", "--format", "json"], timeout=60, what="flwr ls", cwd=self.work)
        runs = json.loads(listed).get("runs", [])
        return [str(run.get("run-id", run.get("run_id"))) for run in runs]

    def submit(
        self,
        schedule: Sequence[tuple[str, Mapping[str, Any]]],
        *,
        n_params: int,
        insecure_single_operator: bool = False,
        timeout: float = 300.0,
        kill: tuple[int, str] | None = None,
        message_timeout: float = 600.0,
    ) -> RunOutcome:
        """One ``flwr run`` of ``schedule``; the ServerApp's result (its error in ``result["error"]``)."""
        import protocols as registry

        classes = [registry.get(name) for name, _ in schedule]
        two_servers = any(len(cls.server_ids) > 1 for cls in classes)
        if two_servers and not insecure_single_operator and not self.server_b:
            raise ConfigError(
                "a two-server protocol needs server B's own node: LocalFederation(server_b=True)"
            )
        self.runs += 1
        run_dir = self.work / f"run-{self.runs}"
        run_dir.mkdir()
        server_keys = run_dir / "secagg-server.keys"
        with_b_key = insecure_single_operator and two_servers
        _write_secret(server_keys, dump_server_keys(ServerKeys.of(self.trust, with_server_b=with_b_key)))
        result_path = run_dir / "result.json"
        progress = run_dir / "progress"
        app = _write_app(
            run_dir,
            {
                "schedule": json.dumps([[name, dict(settings)] for name, settings in schedule]),
                "n-clients": self.n_clients,
                "n-params": n_params,
                "result": str(result_path),
                "server-keys": str(server_keys),
                "insecure-single-operator": insecure_single_operator,
                "server-b-node": two_servers and not insecure_single_operator,
                "timeout": float(message_timeout),
                "progress": str(progress),
                "kill-at": kill[1] if kill is not None else "",
            },
        )
        if kill is not None and kill[1] == "train":
            self.procs.kill(f"supernode-{kill[0]}")
        submitted = self._flwr(["run", str(app), "secagg", "--format", "json"], timeout=120, what="flwr run")
        try:
            run_id = str(json.loads(submitted).get("run-id", ""))
        except ValueError:
            run_id = ""
        began = time.perf_counter()
        deadline = time.monotonic() + timeout
        while not result_path.exists():
            if kill is not None and progress.exists() and not progress.with_suffix(".done").exists():
                self.procs.kill(f"supernode-{kill[0]}")
                progress.with_suffix(".done").write_text("stopped")
            if time.monotonic() > deadline:
                raise ProtocolStateError(
                    f"expected the run's result within {timeout:.0f} s; logs in {self.work}"
                )
            if self._superlink is not None and self._superlink.poll() is not None:
                raise ProtocolStateError(
                    f"the SuperLink exited with {self._superlink.returncode}; logs in {self.work}"
                )
            time.sleep(0.25)
        return RunOutcome(json.loads(result_path.read_text()), time.perf_counter() - began, run_id)

    def close(self) -> list[int]:
        return self.procs.stop_all()


def deploy(
    schedule: str | Sequence[tuple[str, Mapping[str, Any]]],
    n_clients: int,
    *,
    n_params: int = 300,
    config: Mapping[str, Any] | None = None,
    rounds: int = 1,
    insecure_single_operator: bool = False,
    timeout: float = 300.0,
    directory: Path | None = None,
    keep: bool = False,
    kill: tuple[int, str] | None = None,
    message_timeout: float = 600.0,
) -> Deployment:
    """Run ``rounds`` rounds of ``protocol`` (with ``config``) on a SuperLink and
    ``n_clients`` SuperNodes, or one round per (protocol, config) of a ``schedule``, all
    in one Flower run.

    A protocol with two servers runs server B on a SuperNode of its own (its own process
    and keys; A's ServerApp holds none of B's secrets), unless ``insecure_single_operator``
    puts B in A's ServerApp. Every process is stopped before this returns (``strays``
    lists any that would not die, none expected). Raises :class:`ProtocolStateError` when
    a process fails to start or the run does not finish within ``timeout`` seconds; the
    ServerApp's own error comes back in ``result["error"]``.

    ``kill=(partition, stage)`` stops that SuperNode's process (SIGKILL) just before the
    stage's messages go out (``"train"``: before it trains); the ServerApp waits
    ``message_timeout`` seconds for a node's reply before it counts the node as dropped.
    """
    import protocols as registry

    if isinstance(schedule, str):
        schedule = [(schedule, dict(config or {}))] * rounds
    # An unknown name fails here, before any process starts.
    classes = [registry.get(name) for name, _ in schedule]
    protocol = ",".join(dict.fromkeys(name for name, _ in schedule))
    if n_clients < 2:
        raise ConfigError(f"expected at least 2 clients, got {n_clients}")
    two_servers = any(len(cls.server_ids) > 1 for cls in classes)
    began = time.perf_counter()
    work = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="secagg-deploy-"))
    federation = LocalFederation(n_clients, work, server_b=two_servers and not insecure_single_operator)
    startup = run_seconds = 0.0
    try:
        federation.start()
        startup = time.perf_counter() - began
        outcome = federation.submit(
            schedule,
            n_params=n_params,
            insecure_single_operator=insecure_single_operator,
            timeout=timeout,
            kill=kill,
            message_timeout=message_timeout,
        )
        run_seconds = outcome.run_seconds
        result = outcome.result
    finally:
        strays = federation.close()
    wall = time.perf_counter() - began
    if not keep and directory is None:
        shutil.rmtree(work, ignore_errors=True)
    return Deployment(protocol, n_clients, n_params, result, wall, startup, run_seconds, strays, work)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m protocols.runtime.flower.deploy",
        description="One secagg round on a local SuperLink and N SuperNodes (TLS, node authentication).",
    )
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--protocol", default="secagg", help="a protocol name, or 'all'")
    parser.add_argument("--params", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="the protocol's fast_config (small keys)")
    parser.add_argument("--insecure-single-operator", action="store_true")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (logs, credentials)")
    args = parser.parse_args(argv)
    import protocols as registry

    names = registry.available() if args.protocol == "all" else [args.protocol]
    schedule = [
        (name, dict(registry.get(name).fast_config) if args.quick else {})
        for name in names
        for _ in range(args.rounds)
    ]
    outcome = deploy(
        schedule,
        args.clients,
        n_params=args.params,
        insecure_single_operator=args.insecure_single_operator,
        timeout=args.timeout,
        keep=args.keep,
    )
    summary = {
        "protocol": outcome.protocol,
        "clients": outcome.n_clients,
        "wall_s": round(outcome.wall_seconds, 2),
        "startup_s": round(outcome.startup_seconds, 2),
        "run_s": round(outcome.run_seconds, 2),
        "strays": outcome.strays,
        "error": outcome.result.get("error"),
        "rounds": [
            {k: v for k, v in r.items() if k != "aggregate"} for r in outcome.result.get("rounds", [])
        ],
    }
    print(json.dumps(summary, indent=2))
    return 0 if "error" not in outcome.result and not outcome.strays else 1


if __name__ == "__main__":
    raise SystemExit(main())
