"""Client-side defences: transforms applied to an update before any protocol sees it.

:mod:`secagg.defences.transforms` (clipping, noise, quantisation, pruning, DP-SGD-style
Gaussian noise) and :mod:`secagg.defences.dp` (the Rényi accountant behind the DP
transforms). numpy only; protocols never depend on this room, and it never depends on them.
"""
