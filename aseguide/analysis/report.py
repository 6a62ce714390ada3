"""The report of an analysis: plots, tables, ``summary.json``, HTML and Markdown.

Files written into the report folder:

``summary.json``
    counts after each step, satisfaction fractions, p-values, Pareto summary, best
    candidates, warnings (``null`` for undefined numbers);
``report.html``
    one self-contained page (plots embedded) with all tables;
``report.md``
    the same tables in Markdown, linking the PNG files;
``counts.png``, ``dist_<descriptor>.png``, ``pareto.png``, ``kde2d.png``
    the plots (``kde2d.png`` when there are exactly two objectives);
``structures_<set>.csv``
    one row per structure with every measured value;
``final_<set>.extxyz``
    the structures that passed every step, values in ``atoms.info``.

Examples
--------
>>> from aseguide.analysis import analyze
>>> analyze("runs/boron").write_report("report")   # doctest: +SKIP
{'summary': 'report/summary.json', 'html': 'report/report.html', ...}
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from aseguide.analysis.descriptors import objective_name, target_spans
from aseguide.analysis.plots import plot_counts, plot_distributions, plot_kde2d, plot_pareto

__all__ = ["write_report", "headline"]


class ReportedResult(Protocol):
    """What the report reads of an :class:`aseguide.analysis.AnalysisResult`."""

    sets: dict[str, Any]
    summary: dict[str, Any]
    objectives: list[Any]
    pareto: dict[str, np.ndarray]

_STEP_NAMES = {
    "read": "read", "unreadable": "unreadable files", "symmetrised": "symmetrised",
    "symmetry_raised": "symmetry raised by symmetrisation", "distance_ok": "no short contact",
    "unique": "unique", "novel": "novel vs references", "final": "final (all steps passed)",
    "with_energy": "final with energy", "with_e_above_hull": "final with E_hull",
    "within_energy_cutoff": "within the energy cutoff",
}


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "descriptor"


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
            return f"{x:.2e}"
        return f"{x:.{digits}g}" if abs(x) < 1 else f"{x:.{digits + 1}g}"
    return str(x)


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def headline(summary: dict[str, Any]) -> list[str]:
    """Short sentences stating the outcome of a run (used at the top of the report).

    Examples
    --------
    >>> headline({"sets": {"guided": {"counts": {"read": 10, "distance_ok": 9, "unique": 8, "final": 8}}},
    ...           "satisfaction": {}, "tests": {}})
    ['guided: 10 read → 9 without short contacts → 8 unique → 8 final.']
    """
    lines = []
    for label, info in summary["sets"].items():
        c = info["counts"]
        if label == "references":
            kept = c.get("within_energy_cutoff")
            lines.append(f"references: {c.get('read', 0)} read" + (f", {kept} within the energy cutoff." if kept is not None else "."))
            continue
        parts = [f"{c.get('read', 0)} read", f"{c.get('distance_ok', 0)} without short contacts",
                 f"{c.get('unique', 0)} unique"]
        if "novel" in c:
            parts.append(f"{c['novel']} novel")
        parts.append(f"{c.get('final', 0)} final")
        lines.append(f"{label}: " + " → ".join(parts) + ".")
    for name, per_set in summary.get("satisfaction", {}).items():
        g = per_set.get("guided", {})
        text = f"{name}: {_pct(g.get('raw'))} of guided structures on target ({_pct(g.get('clean'))} on target and clean)"
        u = per_set.get("unguided")
        if u:
            text += f" vs {_pct(u.get('raw'))} ({_pct(u.get('clean'))}) unguided"
        t = summary.get("tests", {}).get(name, {})
        if t.get("raw", {}).get("p_value") is not None:
            text += (f"; one-sided p = {_fmt(t['raw']['p_value'])} (raw), "
                     f"{_fmt(t['clean']['p_value'])} (clean)")
            text += " — significant" if t["clean"]["significant"] else " — clean gain not significant"
        lines.append(text + ".")
    best = summary.get("best_candidates") or []
    if best and best[0].get("e_above_hull") is not None:
        b = best[0]
        lines.append(f"best candidate: {b['formula']} ({b['spacegroup']}), loss {_fmt(b['loss'])}, "
                     f"E_hull {_fmt(b['e_above_hull'])} eV/atom.")
    return lines


def _tables(summary: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    tables = []
    sets = list(summary["sets"])
    steps = list(dict.fromkeys(k for s in summary["sets"].values() for k in s["counts"]))
    tables.append(("Structures surviving each step", ["step", *sets],
                   [[_STEP_NAMES.get(st, st), *[_fmt(summary["sets"][s]["counts"].get(st)) for s in sets]]
                    for st in steps]))
    if summary.get("satisfaction"):
        rows = []
        for name, per_set in summary["satisfaction"].items():
            for label, f in per_set.items():
                rows.append([name, label, f"{f.get('k_raw')}/{f.get('n')}", _pct(f.get("raw")),
                             _pct(f.get("clean")) if "clean" in f else "–",
                             f"{f.get('k_final')}/{f.get('n_final')}" if "n_final" in f else "–",
                             _pct(f.get("final")) if "final" in f else "–"])
        tables.append(("Constraint satisfaction (raw: all read; clean: also no short contact, over all "
                       "read; final: among the final structures)",
                       ["objective", "set", "satisfied", "raw", "clean", "final count", "final"], rows))
    if summary.get("tests"):
        rows = []
        for name, kinds in summary["tests"].items():
            for kind, t in kinds.items():
                rows.append([name, kind, _fmt(t.get("z")), _fmt(t.get("p_value")), _fmt(t.get("significant"))])
        tables.append(("One-sided two-proportion z-test, guided > unguided",
                       ["objective", "fractions", "z", "p-value", "p < 0.05"], rows))
    if summary.get("best_candidates"):
        rows = [[str(k + 1), b["set"], b["formula"], b["spacegroup"], _fmt(b["loss"]), _fmt(b["e_above_hull"]),
                 _fmt(b["pareto_front"]), _fmt(b.get("reference_similarity")), os.path.basename(str(b["source"]))]
                for k, b in enumerate(summary["best_candidates"])]
        tables.append(("Best candidates (Pareto front, then loss, then E_hull)",
                       ["#", "set", "formula", "space group", "loss", "E_hull (eV/atom)", "front",
                        "max. similarity to a reference", "source"], rows))
    return tables


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if r.get(k) is None else r.get(k) for k in keys})


def _objective_target(result: ReportedResult, name: str) -> Any:
    for obj in result.objectives:
        if objective_name(obj) == name:
            return getattr(obj, "target", None)
    return None


def _make_plots(result: ReportedResult, out: Path) -> list[tuple[str, str]]:
    plots: list[tuple[str, str]] = []
    sets = result.sets
    counts = {label: {k: v for k, v in res.counts.items() if k not in ("unreadable", "symmetry_raised")}
              for label, res in sets.items() if label != "references"}
    if counts:
        plots.append((plot_counts(counts, out / "counts.png"), "Structures surviving each step."))
    obj_names = [r["name"] for r in result.summary.get("objectives", [])]
    descriptor_names = list(obj_names)
    if "volume_per_atom" not in descriptor_names:
        descriptor_names.append("volume_per_atom")
    for name in descriptor_names:
        data = {}
        for label, res in sets.items():
            values = np.asarray(res.columns.get(name, []), float)
            if label != "references":
                values = values[res.masks["distance_ok"]]
            elif "within_energy_cutoff" in res.masks:
                values = values[res.masks["within_energy_cutoff"]]
            data[label] = values
        unit = " (Å³)" if "volume" in name else ""
        path = plot_distributions(data, name + unit, out / f"dist_{_slug(name)}.png",
                                  target=_objective_target(result, name),
                                  title=f"{name}: structures without short contacts")
        plots.append((path, f"Distribution of {name} (histograms and Silverman-bandwidth gaussian KDE); "
                            "generated structures without short contacts."))
    p = result.pareto
    if len(p.get("front", [])):
        labels = []
        for label, k in zip(p["set"], p["index"]):
            a = sets[label].structures[int(k)]
            labels.append(f"{label[0]}{int(k)} {a.get_chemical_formula()}")
        plots.append((plot_pareto(p["loss"], p["e_above_hull"], p["front"], labels, p["set"], out / "pareto.png",
                                  loss_label=result.summary["pareto"]["loss"]),
                      "Pareto fronts of (loss, energy above hull), all sets ranked together; labels are "
                      "set initial + index and formula."))
    if len(obj_names) == 2:
        data = {}
        for label, res in sets.items():
            m = res.masks.get("distance_ok", np.ones(len(res), bool))
            data[label] = (np.asarray(res.columns[obj_names[0]], float)[m],
                           np.asarray(res.columns[obj_names[1]], float)[m])
        spans = [target_spans(_objective_target(result, n)) for n in obj_names]
        target = None
        if all(s is not None and len(s) == 1 and np.isfinite(s[0]).all() for s in spans):
            target = tuple(0.5 * (s[0][0] + s[0][1]) for s in spans)
        plots.append((plot_kde2d(data, obj_names[0], obj_names[1], out / "kde2d.png", target=target),
                      "Joint distribution of the two objectives' descriptors (2D gaussian KDE)."))
    return plots


def _markdown(summary: dict[str, Any], plots: list[tuple[str, str]]) -> str:
    lines = ["# aseguide analysis report", ""]
    lines += [f"- {h}" for h in headline(summary)]
    lines.append("")
    for title, header, rows in _tables(summary):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
    e = summary.get("energy", {})
    lines += ["## Energies", "", f"- energy source: {e.get('source') or 'none'}",
              f"- hull: {e.get('hull') or 'none'}", ""]
    if summary.get("pareto", {}).get("n_points"):
        pr = summary["pareto"]
        lines += [f"Pareto analysis: {pr['n_points']} points in {pr['n_fronts']} fronts "
                  f"(sizes {pr['front_sizes'][:10]}); loss = {pr['loss']}.", ""]
    lines += ["## Plots", ""]
    for path, caption in plots:
        lines += [f"![{caption}]({os.path.basename(path)})", "", f"*{caption}*", ""]
    if summary.get("warnings"):
        lines += ["## Warnings", ""] + [f"- {w}" for w in summary["warnings"]] + [""]
    lines += ["## Inputs and options", "", "```json",
              json.dumps({"sets": {k: v["path"] for k, v in summary["sets"].items()},
                          "options": summary["options"], "objectives": summary["objectives"]}, indent=1),
              "```", "", f"aseguide {summary.get('aseguide_version')}, {summary.get('created')}", ""]
    return "\n".join(lines)


def _html(summary: dict[str, Any], plots: list[tuple[str, str]]) -> str:
    esc = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>aseguide analysis report</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #bbb;padding:3px 8px;"
             "text-align:right}th{background:#eee}td:first-child,th:first-child{text-align:left}"
             ".head li{font-size:1.1em;margin:0.3em 0}figure{display:inline-block;margin:0.5em}"
             "img{max-width:520px}.warn{color:#a40}</style></head><body>",
             "<h1>aseguide analysis report</h1><ul class='head'>"]
    parts += [f"<li>{esc(h)}</li>" for h in headline(summary)]
    parts.append("</ul>")
    for title, header, rows in _tables(summary):
        parts.append(f"<h2>{esc(title)}</h2><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows]
        parts.append("</table>")
    e = summary.get("energy", {})
    parts.append(f"<h2>Energies</h2><p>energy source: {esc(str(e.get('source') or 'none'))}<br>"
                 f"hull: {esc(str(e.get('hull') or 'none'))}</p>")
    parts.append("<h2>Plots</h2>")
    for path, caption in plots:
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{esc(caption)}'>"
                     f"<figcaption>{esc(caption)}</figcaption></figure>")
    if summary.get("warnings"):
        parts.append("<h2>Warnings</h2><ul class='warn'>" +
                     "".join(f"<li>{esc(w)}</li>" for w in summary["warnings"]) + "</ul>")
    parts.append("<h2>Inputs and options</h2><pre>" + esc(json.dumps(
        {"sets": {k: v["path"] for k, v in summary["sets"].items()}, "options": summary["options"],
         "objectives": summary["objectives"]}, indent=1)) + "</pre>")
    parts.append(f"<p><small>aseguide {esc(str(summary.get('aseguide_version')))}, "
                 f"{esc(str(summary.get('created')))}</small></p></body></html>")
    return "\n".join(parts)


def write_report(result: ReportedResult, out_dir: str | os.PathLike,
                 formats: Sequence[str] = ("html", "md")) -> dict[str, str]:
    """Write the report of an :class:`~aseguide.analysis.AnalysisResult`.

    Parameters
    ----------
    result:
        From :func:`aseguide.analysis.analyze`.
    out_dir:
        Folder to write (created; existing files of the same names are replaced).
    formats:
        Any of ``"html"`` and ``"md"``.

    Returns
    -------
    dict
        Paths written: ``summary``, ``html``/``md``, ``plots`` (list), ``tables``
        (list), ``structures`` (list).

    Raises
    ------
    ValueError
        For an unknown format.
    """
    bad = sorted(set(formats) - {"html", "md"})
    if bad:
        raise ValueError(f"unknown report format(s) {bad}; use 'html' and/or 'md'")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {"plots": [], "tables": [], "structures": []}
    plots = _make_plots(result, out)
    written["plots"] = [p for p, _ in plots]
    for label, res in result.sets.items():
        path = out / f"structures_{label}.csv"
        _write_csv(path, res.rows())
        written["tables"].append(str(path))
        if label != "references":
            from ase.io import write

            final = res.final_structures()
            path = out / f"final_{label}.extxyz"
            if final:
                write(path, final, format="extxyz")
                written["structures"].append(str(path))
    summary = dict(result.summary)
    summary["plots"] = [os.path.basename(p) for p in written["plots"]]
    path = out / "summary.json"
    path.write_text(json.dumps(summary, indent=1, allow_nan=False))
    written["summary"] = str(path)
    if "html" in formats:
        path = out / "report.html"
        path.write_text(_html(summary, plots))
        written["html"] = str(path)
    if "md" in formats:
        path = out / "report.md"
        path.write_text(_markdown(summary, plots))
        written["md"] = str(path)
    return written
