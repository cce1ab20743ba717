"""The application above the attack lab: ``secagg evaluate`` and ``secagg assess``.

It runs rounds of every protocol on simulated clients, points the lab's attacks at what
each observer saw, and writes the report and ``results.json``. The attack lab
(:mod:`leakage.attacks`, :mod:`leakage.assess`, models, data, metrics) never imports
this package.
"""
