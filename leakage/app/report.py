"""The ``secagg evaluate`` report: one self-contained HTML file.

Images are inlined as base64 PNG (written by :mod:`leakage.png`, no PIL), the cost plot
is inline SVG, and there is no script and no external stylesheet, so the file can be
mailed or attached to a CI run and opened anywhere. Sections: what was run; the
headline (one line per protocol: is a client's message exposed, is the aggregate, what
does it cost); the reconstructions (originals, then per protocol and observer what
the attacker recovered from each observable, PSNR under each); the verdict table; the
byte-uniformity checks; the cost table and plot; each protocol's threat model; notes.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leakage.app.records import row_sentence
from leakage.assess import is_colluding
from leakage.png import encode_png, image_grid

AGGREGATE = "aggregate"
_PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222;line-height:1.45;padding:0 1em}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.exposed{background:#fde0dd;color:#a50f15;font-weight:600}
.safe{background:#e5f5e0;color:#006d2c}
.muted{color:#777;font-size:.85em}
figure.run{margin:0 0 1.5em}figure.run figcaption{font-weight:600;margin-bottom:.3em}
.cell{display:inline-block;text-align:center;margin:0 .4em .4em 0;vertical-align:top}
.cell img,.orig img{image-rendering:pixelated;border:1px solid #ccc}
.cell .cap{font-size:.8em}
.grid td{text-align:center}
code{background:#f5f5f5;padding:0 .2em}
"""


def data_uri(images: torch.Tensor | np.ndarray, *, scale: int = 3) -> str:
    """A ``data:image/png;base64,...`` URI of [N, C, H, W] images in [0, 1] side by side."""
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    png = encode_png(image_grid([array.astype(np.float64)], scale=scale, pad=1))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 2, *, sci: bool = False) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return "–"
        if sci:
            return f"{value:.2e}"
        return f"{value:.{digits}f}"
    return _e(value)


def _verdict_cell(verdict: str | None, reason: str = "") -> str:
    if verdict is None:
        return "<td>–</td>"
    css = "exposed" if verdict == "exposed" else "safe"
    extra = f" ({_e(reason)})" if reason else ""
    return f'<td class="{css}">{_e(verdict)}{extra}</td>'


# --- the SVG plot -------------------------------------------------------------------------


def svg_loglog(
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    width: int = 560,
    height: int = 340,
) -> str:
    """A log-log line plot of ``series`` (name -> [(x, y)]) as an inline SVG string."""
    points = [(x, y) for values in series.values() for x, y in values if x > 0 and y > 0]
    if not points:
        return f'<p class="muted">{_e(title)}: no data.</p>'
    left, right, top, bottom = 70, 170, 30, 45
    x_lo = math.floor(math.log10(min(p[0] for p in points)))
    x_hi = math.ceil(math.log10(max(p[0] for p in points)))
    y_lo = math.floor(math.log10(min(p[1] for p in points)))
    y_hi = math.ceil(math.log10(max(p[1] for p in points)))
    x_hi = max(x_hi, x_lo + 1)
    y_hi = max(y_hi, y_lo + 1)
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (math.log10(x) - x_lo) / (x_hi - x_lo) * plot_w

    def sy(y: float) -> float:
        return top + plot_h - (math.log10(y) - y_lo) / (y_hi - y_lo) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{_e(title)}" font-family="sans-serif" font-size="11">',
        f'<text x="{left}" y="18" font-size="13" font-weight="bold">{_e(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>',
    ]
    for e in range(x_lo, x_hi + 1):
        x = sx(10.0**e)
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#eee"/>')
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 15}" text-anchor="middle">1e{e}</text>')
    for e in range(y_lo, y_hi + 1):
        y = sy(10.0**e)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end">1e{e}</text>')
    parts.append(
        f'<text x="{left + plot_w / 2:.0f}" y="{height - 8}" text-anchor="middle">{_e(xlabel)}</text>'
    )
    parts.append(
        f'<text transform="translate(14,{top + plot_h / 2:.0f}) rotate(-90)" '
        f'text-anchor="middle">{_e(ylabel)}</text>'
    )
    for index, (name, values) in enumerate(series.items()):
        color = _PALETTE[index % len(_PALETTE)]
        usable = sorted((x, y) for x, y in values if x > 0 and y > 0)
        if not usable:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in usable)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, y in usable:
            parts.append(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}">'
                f"<title>{_e(name)}: {x:g} -> {y:.3g}</title></circle>"
            )
        ly = top + 12 + 16 * index
        parts.append(
            f'<line x1="{width - right + 10}" y1="{ly - 4}" x2="{width - right + 28}" y2="{ly - 4}" '
            f'stroke="{color}" stroke-width="2"/>'
        )
        parts.append(f'<text x="{width - right + 32}" y="{ly}">{_e(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


# --- sections -------------------------------------------------------------------------------


def _headline(record: dict[str, Any]) -> str:
    rows = [
        "<table><tr><th>run</th><th>a client's message</th><th>the aggregate</th>"
        "<th>servers colluding</th><th>best PSNR on a client message (dB)</th><th>bytes / param</th>"
        "<th>x float32</th><th>client s</th></tr>"
    ]
    for run in record["runs"]:
        client = [r for r in run["rows"] if r["observable"] != AGGREGATE and not is_colluding(r["observer"])]
        colluding = [r for r in run["rows"] if is_colluding(r["observer"])]
        best = max((r["psnr"] for r in client), default=None)
        costs = run["costs"] or {}
        collude = (
            ("exposed" if any(r["verdict"] == "exposed" for r in colluding) else "not exposed")
            if colluding
            else None
        )
        rows.append(
            f"<tr><td>{_e(run['name'])}</td>{_verdict_cell(run['verdicts']['client_messages'])}"
            f"{_verdict_cell(run['verdicts']['aggregate'])}{_verdict_cell(collude)}"
            f'<td class="num">{_num(best, 1)}</td><td class="num">{_num(costs.get("bytes_per_param"))}</td>'
            f'<td class="num">{_num(costs.get("expansion_over_float32"))}</td>'
            f'<td class="num">{_num(costs.get("client_s"), 3)}</td></tr>'
        )
    rows.append("</table>")
    return "".join(rows)


def _originals(record: dict[str, Any], originals: torch.Tensor) -> str:
    batch = record["settings"]["batch"]
    cells = []
    for entry in record["originals"]:
        client = entry["client"]
        images = originals[client * batch : (client + 1) * batch]
        caption = ", ".join(_e(c) for c in entry["classes"])
        cells.append(
            f'<div class="cell orig"><img alt="client {client} original" src="{data_uri(images)}">'
            f'<div class="cap">client-{client}<br>{caption}</div></div>'
        )
    return "".join(cells)


def _run_figure(run: dict[str, Any], recon: Mapping[int, torch.Tensor]) -> str:
    """One figure per run: per observer a row of cells, one per observable (first attack)."""
    by_observer: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    seen: set[tuple[str, str]] = set()
    for index, row in enumerate(run["rows"]):
        key = (row["observer"], row["observable"])
        if key in seen:  # several attacks on one observable: show the first, the table has all
            continue
        seen.add(key)
        by_observer.setdefault(row["observer"], []).append((index, row))
    parts = [
        f'<figure class="run" data-protocol="{_e(run["name"])}"><figcaption>{_e(run["name"])}'
        f' <span class="muted">({_e(run["update"])}, {_e(run["config_note"])})</span></figcaption>'
    ]
    if run["error"]:
        parts.append(f'<p class="muted">round error: {_e(run["error"])}</p>')
    if not by_observer:
        parts.append('<p class="muted">nothing was attacked.</p>')
    for observer, items in by_observer.items():
        parts.append(f'<div><span class="muted">seen by {_e(observer)}:</span><br>')
        for index, row in items:
            images = recon.get(index)
            css = "exposed" if row["verdict"] == "exposed" else "safe"
            img = (
                f'<img alt="{_e(row["observable"])} as recovered by {_e(row["attack"])}" '
                f'src="{data_uri(images)}">'
                if images is not None
                else ""
            )
            parts.append(
                f'<div class="cell">{img}<div class="cap">{_e(row["observable"])}<br>'
                f'<span class="{css}">{_num(row["psnr"], 1)} dB</span> · {_e(row["kind"])}</div></div>'
            )
        parts.append("</div>")
    parts.append("</figure>")
    return "".join(parts)


def _verdict_table(rows: Sequence[dict[str, Any]]) -> str:
    out = [
        "<table><tr><th>run</th><th>observer</th><th>observable</th><th>kind</th><th>attack</th>"
        "<th>PSNR dB</th><th>mean PSNR</th><th>SSIM</th><th>label acc.</th><th>structure</th>"
        "<th>random-vector PSNR</th><th>beats random</th><th>budget (steps x restarts)</th><th>steps run</th>"
        "<th>verdict</th><th>against the plaintext</th></tr>"
    ]
    for r in rows:
        out.append(
            f"<tr><td>{_e(r['protocol'])}</td><td>{_e(r['observer'])}</td><td>{_e(r['observable'])}</td>"
            f"<td>{_e(r['kind'])}</td><td>{_e(r['attack'])}</td>"
            f'<td class="num">{_num(r["psnr"], 1)}</td><td class="num">{_num(r["psnr_mean"], 1)}</td>'
            f'<td class="num">{_num(r["ssim"], 3)}</td><td class="num">{_num(r["label_accuracy"])}</td>'
            f'<td class="num">{_num(r["structure"])}</td><td class="num">{_num(r["baseline_psnr"], 1)}</td>'
            f'<td>{_num(r["beats_random"])}</td>'
            f'<td class="num">{r.get("budget", "?")} x {r.get("restarts", "?")}</td>'
            f'<td class="num">{r["iterations"]}{_stopped(r)}</td>'
            f"{_verdict_cell(r['verdict'], r['reason'])}<td>{_e(row_sentence(r))}{_attacked_as(r)}</td></tr>"
        )
    out.append("</table>")
    return "".join(out)


def _attacked_as(row: dict[str, Any]) -> str:
    shared = row.get("attacked_as") or ""
    if not shared:
        return ""
    return f' <span class="muted">(the same update as {_e(shared)}, attacked once for both)</span>'


def _stopped(row: dict[str, Any]) -> str:
    reason = row.get("stopped") or ""
    return f' <span class="muted">({_e(reason)})</span>' if reason else ""


def _uniformity_table(runs: Sequence[dict[str, Any]]) -> str:
    out = [
        "<table><tr><th>run</th><th>observer</th><th>observable</th><th>kind</th><th>bytes</th>"
        "<th>chi-square</th><th>p</th><th>uniform?</th></tr>"
    ]
    for run in runs:
        for u in run["uniformity"]:
            if u["uniform"] is None:
                cell = '<td class="muted">too few bytes</td>'
            else:
                cell = '<td class="safe">pass</td>' if u["uniform"] else '<td class="exposed">fail</td>'
            out.append(
                f"<tr><td>{_e(u['protocol'])}</td><td>{_e(u['observer'])}</td>"
                f"<td>{_e(u['observable'])}</td><td>{_e(u['kind'])}</td>"
                f'<td class="num">{u["n_bytes"]}</td><td class="num">{_num(u["chi2"], 1)}</td>'
                f'<td class="num">{_num(u["p_value"], 4)}</td>{cell}</tr>'
            )
    out.append("</table>")
    return "".join(out)


def _cost_table(runs: Sequence[dict[str, Any]], n_params: int, clients: int) -> str:
    out = [
        f'<p class="muted">One round, {clients} clients, {n_params} parameters (the model above). '
        "Client time is per client; server time excludes the reveal (finalize).</p>"
        "<table><tr><th>protocol</th><th>config</th><th>client s</th><th>server s</th><th>finalize s</th>"
        "<th>setup s</th><th>upload bytes / client</th><th>bytes / param</th><th>x float32</th>"
        "<th>max |error|</th><th>declared precision</th></tr>"
    ]
    for run in runs:
        if run["kind"] != "protocol":
            continue
        c = run["costs"] or {}
        out.append(
            f"<tr><td>{_e(run['name'])}</td><td>{_e(run['config_note'])}</td>"
            f'<td class="num">{_num(c.get("client_s"), 4)}</td>'
            f'<td class="num">{_num(c.get("server_s"), 4)}</td>'
            f'<td class="num">{_num(c.get("finalize_s"), 4)}</td>'
            f'<td class="num">{_num(c.get("setup_s"), 3)}</td>'
            f'<td class="num">{_num(c.get("bytes_up_per_client"), 0)}</td>'
            f'<td class="num">{_num(c.get("bytes_per_param"))}</td>'
            f'<td class="num">{_num(c.get("expansion_over_float32"))}</td>'
            f'<td class="num">{_num(c.get("max_abs_error"), sci=True)}</td>'
            f'<td class="num">{_num(c.get("declared_precision"), sci=True)}</td></tr>'
        )
    out.append("</table>")
    return "".join(out)


def _cost_plots(record: dict[str, Any]) -> str:
    time_series: dict[str, list[tuple[float, float]]] = {}
    byte_series: dict[str, list[tuple[float, float]]] = {}
    for point in record["cost_curve"]:
        total = point["client_s"] + point["server_s"] + point["finalize_s"]
        time_series.setdefault(point["protocol"], []).append((point["n_params"], total))
        byte_series.setdefault(point["protocol"], []).append(
            (point["n_params"], point["bytes_per_param"] * point["n_params"])
        )
    clients = record["cost_curve"][0]["n_clients"] if record["cost_curve"] else 0
    notes = "".join(f"<li>{_e(n)}</li>" for n in record.get("cost_curve_notes", []))
    return (
        svg_loglog(
            time_series,
            title="time per round: one client + server + reveal (s)",
            xlabel="model parameters",
            ylabel="seconds",
        )
        + svg_loglog(
            byte_series, title="upload per client (bytes)", xlabel="model parameters", ylabel="bytes"
        )
        + f'<p class="muted">Random updates, {clients} clients, one round per point '
        "(fast_config under --quick). Bench with <code>python -m benchmarks</code> for the full grid.</p>"
        + (f'<ul class="muted">{notes}</ul>' if notes else "")
    )


def _threats(runs: Sequence[dict[str, Any]]) -> str:
    out = [
        "<table><tr><th>protocol</th><th>keys</th><th>each server sees</th><th>collusion</th>"
        "<th>dropouts</th><th>min clients</th></tr>"
    ]
    for run in runs:
        if run["kind"] != "protocol":
            continue
        t = run["threat_model"]
        out.append(
            f"<tr><td>{_e(run['name'])}</td><td>{_e(t['keys'])}</td><td>{_e(t['server_sees'])}</td>"
            f"<td>{_e(t['collusion'])}</td><td>{_e(t['dropouts'])}</td><td>{_e(t['min_clients'])}</td></tr>"
        )
    out.append("</table>")
    return "".join(out)


def _defenses(runs: Sequence[dict[str, Any]]) -> str:
    chosen = [r for r in runs if r["kind"] == "defense"]
    if not chosen:
        return (
            '<p class="muted">No defenses were run (secagg.defences.transforms missing, '
            "or --defenses none).</p>"
        )
    out = [
        "<table><tr><th>defense</th><th>client-0's message</th><th>best PSNR dB</th>"
        "<th>aggregate</th><th>relative error of the aggregate</th><th>details</th></tr>"
    ]
    for run in chosen:
        info = run.get("defense_info") or {}
        client = [r for r in run["rows"] if r["observable"] != AGGREGATE]
        best = max((r["psnr"] for r in client), default=None)
        details = ", ".join(
            f"{_e(k)}={_e(v)}" for k, v in info.items() if k not in ("spec", "relative_error")
        )
        out.append(
            f"<tr><td><code>{_e(run['defense'])}</code></td>"
            f'{_verdict_cell(run["verdicts"]["client_messages"])}<td class="num">{_num(best, 1)}</td>'
            f"{_verdict_cell(run['verdicts']['aggregate'])}"
            f'<td class="num">{_num(info.get("relative_error"), sci=True)}</td>'
            f'<td class="muted">{details}</td></tr>'
        )
    out.append("</table>")
    return "".join(out)


def render(
    record: dict[str, Any],
    *,
    originals: torch.Tensor,
    reconstructions: Mapping[str, Mapping[int, torch.Tensor]],
    malicious_images: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> str:
    """The whole report as one HTML string."""
    s = record["settings"]
    env = record["environment"]
    notes = [f"{run['name']}: {n}" for run in record["runs"] for n in run["notes"]]
    figures = "".join(_run_figure(run, reconstructions.get(run["name"], {})) for run in record["runs"])
    intro = (
        f"<p>{s['clients']} simulated clients, each with {s['batch']} of the embedded real "
        f"{s['resolution']}x{s['resolution']} images, computed {s['model']} updates "
        f"({s['n_params']} parameters). Every protocol ran one round through the router with real keys "
        "and real bytes; the attacks (<code>" + _e(", ".join(s["attacks"])) + "</code>) then got exactly "
        "what each server received. An observable is <b>exposed</b> when the best-matched reconstruction "
        f"reaches {s['threshold_db']:g} dB PSNR, or when every label is found from a candidate shaped like "
        "a real gradient; otherwise it is <b>not exposed</b>, and the table says whether the attack did "
        "any better than on a random vector of the same shape "
        f"({s['baseline_seeds']} seeds). Every observable, ciphertexts and masked shares included, got "
        f"the same attacks at the same budget: {s['iterations']} steps per image it hides "
        f"x {s.get('restarts', '?')} restarts, the same seeds (each row says its budget).</p>"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>secagg evaluate: what each server learns</title>"
        f"<style>{_CSS}</style></head><body>"
        "<h1>What each server learns, and what protection costs</h1>"
        f'<p class="muted">secagg evaluate · {_e(record["created"])} · {_e(env["platform"])} · '
        f"{_e(env['cpu_count'])} CPUs · torch {_e(env['torch'])} on {_e(env['device'])} · "
        f"{record['wall_seconds']:.0f} s{' · --quick' if s['quick'] else ''}</p>"
        + intro
        + "<h2>Headline</h2>"
        + _headline(record)
        + "<h2>What the attacker recovered</h2><p>Originals (the clients' private images):</p>"
        + f"<div>{_originals(record, originals)}</div>"
        + '<p class="muted">Below, per run and per observer, the reconstruction from each observable '
        "(matched to the originals), with its PSNR.</p>"
        + figures
        + _malicious(record.get("malicious", []), malicious_images or {})
        + "<h2>Defenses (client-side, over plaintext FedSGD)</h2>"
        + _defenses(record["runs"])
        + "<h2>Verdicts</h2>"
        + _verdict_table(record["rows"])
        + "<h2>Are the payload bytes uniform?</h2>"
        '<p class="muted">Chi-square of each payload\'s byte histogram against uniform (p >= 0.001 passes). '
        "Masked ring elements should pass; plaintext floats fail by design; ciphertext serialisations can "
        "fail on their structure (headers, a top byte below the modulus) without leaking the update.</p>"
        + _uniformity_table(record["runs"])
        + "<h2>Costs</h2>"
        + _cost_table(record["runs"], s["n_params"], s["clients"])
        + _cost_plots(record)
        + "<h2>Threat models</h2>"
        + _threats(record["runs"])
        + ("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>" if notes else "")
        + "</body></html>\n"
    )


def _malicious(
    rows: Sequence[dict[str, Any]], images: Mapping[str, tuple[torch.Tensor, torch.Tensor]]
) -> str:
    """The "server that deviates" section: one row per protocol, attack and defence, and
    the undefended runs' originals over their closest reconstructions."""
    if not rows:
        return ""
    head = (
        "<tr><th>protocol</th><th>server attack</th><th>defence</th><th>who reads the output</th>"
        "<th>images &ge; 30 dB</th><th>target cosine</th><th>best PSNR</th><th>verdict</th><th>why</th></tr>"
    )
    body = []
    for r in rows:
        cosine = "" if r["target_cosine"] is None else f"{r['target_cosine']:.4f}"
        refused = "; ".join(f"client {c}: {v}" for c, v in r["refused"].items())[:160]
        why = r["error"] or refused
        body.append(
            f"<tr><td>{_e(r['protocol'])}</td><td>{_e(r['attack'])}</td><td>{_e(r['defense'] or 'none')}</td>"
            f"<td>{_e(r['readers'] or '')}</td><td>{r['recovered']}/{r['images']}</td><td>{cosine}</td>"
            f"<td>{_num(r['best_psnr'], 1)}</td><td>{_verdict_cell(r['verdict'])}</td><td>{_e(why)}</td></tr>"
        )
    figures = "".join(
        f"<figure><figcaption>{_e(key)}: originals (top), closest reconstruction (bottom)</figcaption>"
        f'<img src="{data_uri(originals[:32])}" alt="originals"><br>'
        f'<img src="{data_uri(recovered[:32])}" alt="reconstructions"></figure>'
        for key, (originals, recovered) in images.items()
    )
    return (
        "<h2>A server that deviates</h2>"
        '<p class="muted">The server sends each client a model of its choosing (model inconsistency: a '
        "suppressed model to all but a target; imprint bins or trap weights: one malicious model for all); "
        "clients train on what they received, the protocol runs unchanged, and the attacker reads what the "
        "party holding the output sees. Defences: <b>bind</b> (the protocol refuses an aggregate over "
        "clients whose model digests differ), <b>vet</b> (clients refuse models with imprint, trap or "
        "suppression structure). Neither stops a hidden decoder trained into an innocent-looking model "
        "(SEER), which is not implemented here.</p>"
        f"<table>{head}{''.join(body)}</table>{figures}"
    )


def write_report(
    path: Path,
    record: dict[str, Any],
    *,
    originals: torch.Tensor,
    reconstructions: Mapping[str, Mapping[int, torch.Tensor]],
    malicious_images: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    html = render(
        record, originals=originals, reconstructions=reconstructions, malicious_images=malicious_images or {}
    )
    path.write_text(html, encoding="utf-8")
    return path
