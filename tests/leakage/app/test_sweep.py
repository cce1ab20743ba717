"""The cost sweep's budget: a fallback configuration is projected before it runs."""

import dataclasses

import secagg.costs
from leakage.app.sweep import cost_curve


def test_a_fast_config_projected_past_the_budget_is_skipped_not_run(monkeypatch):
    """paillier-naive's default is projected past the budget at the first size; its
    fast_config is probed small first and, projected past the budget too, never runs at
    that size (before, the fallback ran unprojected: 116 s at 10^4 parameters)."""
    calls = []

    def probe(protocol, *, n_clients, n_params, seed=0):
        fast = protocol.config.key_bits < 2048
        calls.append((fast, n_params))
        per_param = 0.01 if fast else 1.0  # seconds per client-parameter
        zero = {f.name: 0 for f in dataclasses.fields(secagg.costs.RoundCosts)}
        return secagg.costs.RoundCosts(**{**zero, "client_s": per_param * n_params})

    monkeypatch.setattr(secagg.costs, "probe", probe)
    points, notes = cost_curve(["paillier-naive"], [1000, 10000], 2, quick=False, max_seconds=60.0,
                               log=lambda _: None)
    # default probe (100 params: projected 2,000 s at 1,000) -> fallback; fast probe
    # (projected 20 s at 1,000) -> runs; 10,000 projected at 200 s -> skipped
    assert calls == [(False, 100), (True, 100), (True, 1000)]
    assert [(p.n_params, p.config_note) for p in points] == [(1000, "fast_config")]
    assert any("fast_config from 1000" in n for n in notes)
    assert any("skipped 10000" in n for n in notes)
