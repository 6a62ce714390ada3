"""Plots of the analysis, written as PNG files with matplotlib's Agg canvas.

No pyplot state is touched (figures are built with :class:`matplotlib.figure.Figure`),
so these functions are safe in scripts, notebooks and servers alike.

Examples
--------
>>> import numpy as np
>>> from aseguide.analysis.plots import plot_distributions
>>> rng = np.random.default_rng(0)
>>> plot_distributions({"guided": rng.normal(7, .3, 200), "unguided": rng.normal(8, .5, 200)},
...                    "volume per atom (Å³)", "vpa.png", target=7.0)   # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from aseguide.analysis.stats import histogram, kde

__all__ = ["plot_distributions", "plot_pareto", "plot_kde2d", "plot_counts", "SET_COLORS"]

#: Colours of the data sets in every plot.
SET_COLORS = {"guided": "tab:blue", "unguided": "tab:orange", "references": "tab:gray"}
_MARKERS = {"guided": "o", "unguided": "s", "references": "^"}


def _save(fig: Figure, path: str | os.PathLike) -> str:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=110)
    return os.fspath(path)


def _color(label: str, k: int) -> str:
    return SET_COLORS.get(label, f"C{k + 3}")


def plot_distributions(
    data: Mapping[str, Sequence[float]],
    xlabel: str,
    path: str | os.PathLike,
    target: float | tuple[float, float] | Sequence[tuple[float, float]] | None = None,
    integer: bool | None = None,
    title: str | None = None,
) -> str:
    """Overlaid histograms and Silverman-bandwidth KDEs of a descriptor per data set.

    Parameters
    ----------
    data:
        ``{set label: values}``, e.g. ``{"guided": ..., "unguided": ..., "references": ...}``.
    xlabel:
        Axis label (the descriptor and its unit).
    path:
        PNG file to write.
    target:
        A value, an interval or a list of intervals to mark.
    integer:
        Integer-centred histogram bins (default: when all values are integers).

    Returns
    -------
    str
        The path written.
    """
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    finite = {k: np.asarray(v, float)[np.isfinite(np.asarray(v, float))] for k, v in data.items()}
    allv = np.concatenate([v for v in finite.values()] or [np.zeros(0)])
    if integer is None:
        # one bin per integer only for genuinely small integer ranges (counts): huge floats
        # are "integers" to allclose and would ask for billions of bins
        integer = (len(allv) > 0 and float(np.ptp(allv)) <= 200 and bool(np.all(allv == np.round(allv))))
    if len(allv):
        lo, hi = float(allv.min()), float(allv.max())
        pad = 0.1 * (hi - lo) if hi > lo else 1.0
        grid = np.linspace(lo - pad, hi + pad, 400)
        shared_bins = None if integer else np.linspace(lo, hi if hi > lo else lo + 1, 31)
        for k, (label, v) in enumerate(finite.items()):
            if len(v) == 0:
                continue
            color = _color(label, k)
            h, edges = histogram(v, bins=shared_bins if shared_bins is not None else 30, integer=integer)
            ax.stairs(h, edges, fill=True, alpha=0.25, color=color)
            est = kde(v, grid=grid)
            ax.plot(est.grid, est.density, color=color, lw=2,
                    label=f"{label} (n={len(v)}, mean {v.mean():.3g})")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    from aseguide.analysis.descriptors import target_spans

    for k, (lo, hi) in enumerate(target_spans(target) or [] if target is not None else []):
        label = "target" if k == 0 else None
        if lo == hi:
            ax.axvline(lo, color="green", ls="--", lw=1.5, label=f"target {lo:g}" if label else None)
        else:
            ax.axvspan(lo, min(hi, ax.get_xlim()[1]), color="green", alpha=0.12, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    if title:
        ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_pareto(
    loss: Sequence[float],
    e_hull: Sequence[float],
    fronts: Sequence[int],
    labels: Sequence[str],
    sets: Sequence[str],
    path: str | os.PathLike,
    max_fronts: int = 5,
    annotate: int = 12,
    loss_label: str = "objective loss",
) -> str:
    """Energy above hull against loss, Pareto fronts drawn and their members labelled.

    Parameters
    ----------
    loss, e_hull, fronts:
        One value per point (``fronts`` from :func:`aseguide.analysis.pareto_fronts`,
        0 for unranked points, which are not drawn).
    labels:
        Short text per point (e.g. ``"g12 B28"``); the points of the first fronts are
        labelled, at most ``annotate`` of them.
    sets:
        Data set of each point (``"guided"``, ``"unguided"``, ``"references"``).
    path:
        PNG file to write.
    max_fronts:
        Fronts joined by lines and coloured; later fronts are drawn in light grey.
    """
    loss = np.asarray(loss, float)
    e_hull = np.asarray(e_hull, float)
    fronts = np.asarray(fronts, int)
    sets = np.asarray(sets, dtype=object)
    fig = Figure(figsize=(7.0, 5.0))
    ax = fig.add_subplot()
    ranked = fronts > 0
    if not ranked.any():
        ax.text(0.5, 0.5, "no structure with both a loss and an energy above hull",
                ha="center", va="center", transform=ax.transAxes)
    palette = ["tab:red", "tab:purple", "tab:green", "tab:brown", "tab:cyan", "tab:olive", "tab:pink"]
    for name in dict.fromkeys(sets[ranked].tolist()):
        m = ranked & (sets == name)
        colors = [palette[(f - 1) % len(palette)] if f <= max_fronts else "lightgray" for f in fronts[m]]
        ax.scatter(loss[m], e_hull[m], c=colors, marker=_MARKERS.get(name, "D"), s=28,
                   edgecolors="k", linewidths=0.3, label=name, zorder=3)
    for f in range(1, max_fronts + 1):
        m = fronts == f
        if m.sum() >= 1:
            order = np.argsort(loss[m], kind="stable")
            ax.step(loss[m][order], e_hull[m][order], where="post", color=palette[(f - 1) % len(palette)],
                    lw=1.2, alpha=0.8, label=f"front {f}", zorder=2)
    shown = 0
    for f in range(1, max_fronts + 1):
        for i in np.flatnonzero(fronts == f):
            if shown >= annotate:
                break
            ax.annotate(str(labels[i]), (loss[i], e_hull[i]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
            shown += 1
    ax.set_xlabel(loss_label)
    ax.set_ylabel("energy above hull (eV/atom)")
    ax.set_title("Pareto fronts (minimising both)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, ncol=2)
    return _save(fig, path)


def plot_kde2d(
    data: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    path: str | os.PathLike,
    target: tuple[float, float] | None = None,
) -> str:
    """2D gaussian KDE contours (Silverman bandwidth) of two descriptors per data set.

    Parameters
    ----------
    data:
        ``{set label: (x values, y values)}``.
    target:
        The ``(x, y)`` target to mark.
    """
    from scipy.stats import gaussian_kde

    fig = Figure(figsize=(6.0, 5.0))
    ax = fig.add_subplot()
    pts = {}
    for label, (x, y) in data.items():
        x, y = np.asarray(x, float), np.asarray(y, float)
        m = np.isfinite(x) & np.isfinite(y)
        pts[label] = (x[m], y[m])
    allx = np.concatenate([p[0] for p in pts.values()] or [np.zeros(0)])
    ally = np.concatenate([p[1] for p in pts.values()] or [np.zeros(0)])
    if len(allx):
        xs = np.linspace(allx.min() - 1, allx.max() + 1, 120)
        ys = np.linspace(ally.min() - 1, ally.max() + 1, 120)
        gx, gy = np.meshgrid(xs, ys)
        for k, (label, (x, y)) in enumerate(pts.items()):
            color = _color(label, k)
            ax.scatter(x, y, s=6, color=color, alpha=0.3)
            try:
                est = gaussian_kde(np.vstack([x, y]), bw_method="silverman")
                z = est(np.vstack([gx.ravel(), gy.ravel()])).reshape(gx.shape)
                ax.contour(gx, gy, z, levels=5, colors=color, linewidths=1.2)
            except (np.linalg.LinAlgError, ValueError):
                pass  # too few or degenerate points: the scatter is shown alone
            ax.plot([], [], color=color, label=f"{label} (n={len(x)})")
    if target is not None:
        ax.plot([target[0]], [target[1]], marker="*", ms=16, color="green", ls="", label="target")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("joint distribution of the two objectives (KDE)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_counts(counts: Mapping[str, Mapping[str, int]], path: str | os.PathLike) -> str:
    """Bar chart of the structures surviving each pipeline step, per data set."""
    fig = Figure(figsize=(7.0, 3.8))
    ax = fig.add_subplot()
    sets = list(counts)
    steps = list(dict.fromkeys(s for c in counts.values() for s in c))
    width = 0.8 / max(len(sets), 1)
    x = np.arange(len(steps))
    for k, name in enumerate(sets):
        values = [counts[name].get(s, 0) for s in steps]
        bars = ax.bar(x + k * width, values, width, label=name, color=_color(name, k))
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(x + width * (len(sets) - 1) / 2, steps, rotation=20, fontsize=8)
    ax.set_ylabel("structures")
    ax.set_title("structures surviving each step")
    ax.legend(fontsize=8)
    return _save(fig, path)
