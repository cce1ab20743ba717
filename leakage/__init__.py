"""leakage: what a server learns about a client's images from what the client sends.

Models (``leakage.models``), embedded real images (``leakage.data``), gradient-inversion
attacks — DLG, iDLG, Inverting Gradients, analytic recovery — (``leakage.attacks``),
metrics (``leakage.metrics``) and the ``attack`` command (``leakage.cli``).

This ``__init__`` imports nothing heavy, so ``leakage.cli`` can be registered in a CLI
without loading torch; the attacks need only torch and numpy.
"""

from __future__ import annotations

__all__: list[str] = []
