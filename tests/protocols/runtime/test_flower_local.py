"""The deployment's local pieces that need no Flower process: its key files.

Key files are the only bytes a deployment hands its processes besides Flower's own, so
they are read like any other hostile bytes: a wrong magic, a truncated file or an
oversized node count is a WireFormatError, never an IndexError or a huge allocation.
"""

from __future__ import annotations

import struct

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
