"""Runtimes that carry every registered protocol over a real engine instead of the router.

:mod:`protocols.runtime.flower` runs any protocol's parties inside Flower 1.42. A runtime
is not a protocol: it registers nothing and knows protocols only through their
:class:`secagg.protocol.Protocol` interface.
"""
