"""The records ``secagg evaluate`` produces, typed, and the ``results.json`` they become.

One :class:`RunRecord` per round (a protocol, or the plaintext baseline behind a
client-side defense), one :class:`CostPoint` per point of the cost sweep, and the
:class:`EvaluateRecord` that holds them. :meth:`EvaluateRecord.as_dict` is exactly what
``results.json`` holds and what the report (:mod:`leakage.app.report`) renders.

``results.json`` schema (``"schema": "secagg-evaluate/2"``)::

    {
      "schema": "secagg-evaluate/2",
      "created": ISO-8601 UTC time, "wall_seconds": float,
      "environment": {"python", "torch", "numpy", "platform", "cpu_count", "torch_threads", "device"},
      "settings": {"model", "resolution", "n_params", "clients", "batch", "attacks",
                   "iterations", "aggregate_iterations", "restarts",
                   "baseline_seeds", "threshold_db", "lr", "seed", "quick", "device",
                   "protocols", "defenses"},
      "originals": [{"client": int, "labels": [int], "classes": [str]}],
      "runs": [{                                # one per protocol, then one per defense
          "name": str,                          # protocol name, or "plaintext-fedsgd + SPEC"
          "protocol": str, "defense": str | null, "kind": "protocol" | "defense",
          "update": "gradient" | "weights", "aggregate_kind": "sum" | "weighted_mean",
          "config": {...}, "config_note": str,
          "threat_model": {"keys", "server_sees", "collusion", "dropouts", "min_clients", "notes"},
          "error": str | null,
          "costs": COSTS | null,                # null: the round did not start
          "defense_info": {...} | null,         # the transform's describe() + relative error
          "rows": [ROW], "uniformity": [UNIFORMITY], "notes": [str],
          "verdicts": {"client_messages": "exposed" | "not exposed" | null,
                       "aggregate": "exposed" | "not exposed" | null}
      }],
      "rows": [ROW],                            # every run's rows, flat
      "cost_curve": [{"protocol", "n_params", "n_clients", "config_note", **COSTS}],
      "cost_curve_notes": [str]
    }

    COSTS = {"client_s", "client_offline_s", "server_s", "finalize_s", "setup_s",
             "bytes_up_per_client", "bytes_down_per_client", "bytes_per_param",
             "expansion_over_float32", "total_bytes", "max_abs_error", "declared_precision"}
            (:class:`secagg.costs.RoundCosts`; the same names as ``secagg aggregate --json``)
    ROW = {"protocol", "observer", "observable", "kind", "attack", "psnr", "psnr_mean",
           "ssim", "label_accuracy", "structure", "baseline_psnr", "beats_random",
           "verdict", "reason", "iterations", "seconds", "full_attack", "budget",
           "restarts", "note", "stopped", "clients", "reference_psnr", "reference",
           "attacked_as"}
          (:class:`leakage.assess.AssessmentRow`; ``protocol`` is the run's name;
          ``budget`` x ``restarts`` is what the attack was given, ``iterations`` the
          steps its draws ran, ``stopped`` why it ended early ("converged", "plateau"
          or ""); ``reference_psnr`` what the same attack at the same budget reached on
          the plaintext of the same clients, in the run named ``reference``;
          ``attacked_as``: "" or the observable, "run: observer: observable (relative
          difference d)", whose candidate is the same update and whose attack result
          this row takes, the update having been attacked once for both)
    UNIFORMITY = {"protocol", "observer", "observable", "kind", "n_bytes", "chi2",
                  "p_value", "uniform"}

``psnr`` is the best-matched image's PSNR in dB, capped at 200 (identical images).
``settings.plateau``: the fraction a problem's best loss must fall by over 40 steps to go
on (:class:`leakage.assess.Budget`). Rows gained ``stopped``, ``clients``,
``reference_psnr``, ``reference`` and ``attacked_as`` within version 2 (added fields only).
Version 2 (from 1): ``costs`` is the shared cost record (``precision_error`` is now
``max_abs_error``; ``client_offline_s``, ``bytes_down_per_client`` and ``total_bytes``
added), cost-curve points carry the same record, and ``threat_model`` has ``notes``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from leakage.assess import AGGREGATE, AssessmentRow, UniformityRow, is_colluding
from leakage.metrics import RECOVERED_PSNR_DB

if TYPE_CHECKING:  # the attack lab imports no secagg at run time
    from secagg.costs import RoundCosts

SCHEMA = "secagg-evaluate/2"
Verdict = Literal["exposed", "not exposed"]


@dataclass(frozen=True)
class Verdicts:
    """A run's verdict on the client messages and on the revealed aggregate (None: no
    row of that kind, e.g. no aggregate was revealed)."""

    client_messages: Verdict | None
    aggregate: Verdict | None

    @classmethod
    def of(cls, rows: Sequence[AssessmentRow]) -> Verdicts:
        return cls(summary_verdict(rows, aggregate=False), summary_verdict(rows, aggregate=True))


def summary_verdict(rows: Sequence[AssessmentRow], *, aggregate: bool) -> Verdict | None:
    """Exposed if any single server's row of that kind is (colluding rows apart)."""
    chosen = [r for r in rows if (r.observable == AGGREGATE) == aggregate and not is_colluding(r.observer)]
    if not chosen:
        return None
    return "exposed" if any(r.verdict == "exposed" for r in chosen) else "not exposed"


def row_sentence(row: Mapping[str, Any]) -> str:
    """Why a row is "not exposed", in one sentence: what the same attack at the same
    budget reached on the plaintext, what it reached here, and on random vectors."""
    if row["verdict"] == "exposed":
        return ""
    budget = f"{row['budget']} steps x {row['restarts']} restarts"
    here = f"here it reaches {row['psnr']:.1f} dB"
    random = "" if row["baseline_psnr"] is None else f", random vectors {row['baseline_psnr']:.1f} dB"
    reference = row.get("reference_psnr")
    if reference is None:
        return f"{budget}: {here}{random} (no plaintext run to compare with)"
    recovered = reference >= RECOVERED_PSNR_DB
    outcome = "recovers the plaintext at" if recovered else "reaches on the plaintext only"
    return f"the same attack at the same budget ({budget}) {outcome} {reference:.1f} dB; {here}{random}"


def colluding_verdict(rows: Sequence[AssessmentRow]) -> Verdict | None:
    """Exposed if any coalition's row is (None: the run had no colluding rows)."""
    chosen = [r for r in rows if is_colluding(r.observer)]
    if not chosen:
        return None
    return "exposed" if any(r.verdict == "exposed" for r in chosen) else "not exposed"


@dataclass(frozen=True)
class RunRecord:
    """One round and what the attacks made of it."""

    name: str
    protocol: str
    defense: str | None
    kind: Literal["protocol", "defense"]
    update: str
    aggregate_kind: str
    config: Mapping[str, Any]
    config_note: str
    threat_model: Mapping[str, Any]
    error: str | None = None
    costs: RoundCosts | None = None
    defense_info: Mapping[str, Any] | None = None
    rows: tuple[AssessmentRow, ...] = ()
    uniformity: tuple[UniformityRow, ...] = ()
    notes: tuple[str, ...] = ()
    verdicts: Verdicts = field(default_factory=lambda: Verdicts(None, None))

    def client_rows(self) -> list[AssessmentRow]:
        """Rows of single servers' client messages (aggregate and coalitions apart)."""
        return [r for r in self.rows if r.observable != AGGREGATE and not is_colluding(r.observer)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "protocol": self.protocol,
            "defense": self.defense,
            "kind": self.kind,
            "update": self.update,
            "aggregate_kind": self.aggregate_kind,
            "config": dict(self.config),
            "config_note": self.config_note,
            "threat_model": dict(self.threat_model),
            "error": self.error,
            "costs": None if self.costs is None else self.costs.as_dict(),
            "defense_info": None if self.defense_info is None else dict(self.defense_info),
            "rows": [r.as_dict() for r in self.rows],
            "uniformity": [u.as_dict() for u in self.uniformity],
            "notes": list(self.notes),
            "verdicts": dataclasses.asdict(self.verdicts),
        }


@dataclass(frozen=True)
class CostPoint:
    """One point of the cost sweep: a protocol's round on random updates."""

    protocol: str
    n_params: int
    n_clients: int
    config_note: str
    costs: RoundCosts

    def as_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "n_params": self.n_params,
            "n_clients": self.n_clients,
            "config_note": self.config_note,
            **self.costs.as_dict(),
        }


@dataclass(frozen=True)
class EvaluateRecord:
    """Everything one ``secagg evaluate`` run produced (``results.json`` via :meth:`as_dict`)."""

    created: str
    wall_seconds: float
    environment: Mapping[str, Any]
    settings: Mapping[str, Any]
    originals: tuple[Mapping[str, Any], ...]
    runs: tuple[RunRecord, ...]
    cost_curve: tuple[CostPoint, ...] = ()
    cost_curve_notes: tuple[str, ...] = ()
    # Rows of the "server that deviates" section (leakage.app.malicious.evaluate_malicious).
    malicious: tuple[Mapping[str, Any], ...] = ()
    schema: str = SCHEMA

    def run(self, name: str) -> RunRecord:
        for run in self.runs:
            if run.name == name:
                return run
        raise KeyError(f"no run named {name!r}; have {[r.name for r in self.runs]}")

    def as_dict(self) -> dict[str, Any]:
        runs = [run.as_dict() for run in self.runs]
        return {
            "schema": self.schema,
            "created": self.created,
            "wall_seconds": self.wall_seconds,
            "environment": dict(self.environment),
            "settings": dict(self.settings),
            "originals": [dict(o) for o in self.originals],
            "runs": runs,
            "rows": [row for run in runs for row in run["rows"]],
            "cost_curve": [p.as_dict() for p in self.cost_curve],
            "cost_curve_notes": list(self.cost_curve_notes),
            "malicious": [dict(row) for row in self.malicious],
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, default=json_default) + "\n"

    def write(self, path: Path) -> None:
        path.write_text(self.to_json())


def json_default(value: Any) -> Any:
    """numpy scalars as numbers, bytes as their length, anything else as its text."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    return str(value)
