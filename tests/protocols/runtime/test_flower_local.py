"""The deployment's local pieces that need no Flower process: key files, process lifetimes.

Key files are the only bytes a deployment hands its processes besides Flower's own, so
they are read like any other hostile bytes: a wrong magic, a truncated file or an
oversized node count is a WireFormatError, never an IndexError or a huge allocation.

A runner killed with SIGKILL cannot stop what it started: a tiny runner starts a
sleeping child the way the deployment starts SuperLink and SuperNodes, and another
without the parent-death signal (the control), and is killed; the first child must go
with it, the control must not.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="Flower is an optional extra: pip install secagg[flower]")

from protocols.runtime.flower.client import Trust  # noqa: E402
from protocols.runtime.flower.deploy import (  # noqa: E402
    dump_node_keys,
    dump_server_keys,
    load_node_keys,
    load_server_keys,
)
from protocols.runtime.flower.server import ServerKeys  # noqa: E402
from secagg.errors import WireFormatError  # noqa: E402


def test_key_files_round_trip() -> None:
    trust = Trust.generate(3)
    for node in (trust.node(0), trust.node(2), trust.server_b_node()):
        assert load_node_keys(dump_node_keys(node)) == node
    for with_b in (False, True):
        keys = ServerKeys.of(trust, with_server_b=with_b)
        assert load_server_keys(dump_server_keys(keys)) == keys
    assert len(load_server_keys(dump_server_keys(keys)).node_publics) == 3


def test_hostile_key_files_are_wire_format_errors() -> None:
    trust = Trust.generate(2)
    node = dump_node_keys(trust.node(0))
    server = dump_server_keys(ServerKeys.of(trust, with_server_b=False))
    with pytest.raises(WireFormatError, match="magic SGNK"):
        load_node_keys(server)
    with pytest.raises(WireFormatError, match="magic SGSK"):
        load_server_keys(node)
    for cut in (3, 5, len(node) - 1):
        with pytest.raises(WireFormatError):
            load_node_keys(node[:cut])
    with pytest.raises(WireFormatError):
        load_node_keys(node + b"\x00")
    # The server file's node count sits after magic, version and two blobs: claim 2^32 - 1.
    reader_offset = 5
    for _ in range(2):
        (length,) = struct.unpack(">I", server[reader_offset : reader_offset + 4])
        reader_offset += 4 + length
    forged = server[:reader_offset] + struct.pack(">I", 2**32 - 1) + server[reader_offset + 4 :]
    with pytest.raises(WireFormatError, match="at most 4096 node keys, got 4294967295"):
        load_server_keys(forged)


_RUNNER = """
import os, subprocess, sys, time
from pathlib import Path
from protocols.runtime.flower.deploy import Processes
sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
guarded = Processes("pdeathsig-test").start("child", sleeper, os.environ, Path(sys.argv[1]))
control = subprocess.Popen(sleeper, start_new_session=True)
print(guarded.pid, control.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    """Running, not a zombie (a reparented child may wait for a reaper that never comes)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_started_processes_die_with_a_sigkilled_runner(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[3]),
                                                        os.environ.get("PYTHONPATH", "")])}
    runner = subprocess.Popen([sys.executable, "-c", _RUNNER, str(tmp_path / "child.log")],
                              stdout=subprocess.PIPE, env=env, text=True)
    guarded = control = 0
    try:
        assert runner.stdout is not None
        guarded, control = (int(pid) for pid in runner.stdout.readline().split())
        assert _alive(guarded) and _alive(control)
        runner.send_signal(signal.SIGKILL)
        runner.wait(10)
        deadline = time.monotonic() + 10
        while _alive(guarded) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(guarded), "the guarded child outlived its SIGKILLed runner"
        assert _alive(control), "the control child died too: the check would pass without the signal"
    finally:
        runner.kill()
        for pid in (guarded, control):  # ours: never leave a sleeper behind, pass or fail
            if pid and _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
