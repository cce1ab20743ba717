"""Every secagg protocol inside Flower (flwr >= 1.42, the Message API), as an optional extra.

``pip install secagg[flower]``. Nothing outside this package imports ``flwr``, and this
package imports it only inside the functions that build Flower objects, so
``import protocols.runtime.flower`` works without it.

- :mod:`protocols.runtime.flower.transport`: the byte accounting shared with the in-process router,
  the router's delivery checks, node state as bytes, the sealed provisioning channel.
- :mod:`protocols.runtime.flower.client`: the client node (its parties, stepped per stage) and
  :func:`make_client_app`, the ``ClientApp``.
- :mod:`protocols.runtime.flower.server`: :class:`SecAggWorkflow` (the protocol's stages as Flower
  message exchanges through the ``Grid``), :func:`make_server_app` (FedAvg training) and
  :func:`simulate` (Flower's simulation engine, Ray).

>>> from protocols.runtime.flower import simulate  # no flwr import yet
"""

from __future__ import annotations

from protocols.runtime.flower.client import SecAggNode, make_client_app, provisioning_of
from protocols.runtime.flower.server import FlowerRound, FlowerRun, SecAggWorkflow, make_server_app, simulate
from protocols.runtime.flower.transport import WireLedger, secret_holdings

__all__ = [
    "FlowerRound",
    "FlowerRun",
    "SecAggNode",
    "SecAggWorkflow",
    "WireLedger",
    "make_client_app",
    "make_server_app",
    "provisioning_of",
    "secret_holdings",
    "simulate",
]
