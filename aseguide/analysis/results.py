"""Results of the validation pipeline: :class:`SetResult` and :class:`AnalysisResult`.

Examples
--------
>>> import numpy as np
>>> from ase.build import bulk
>>> s = SetResult(label="guided", path="-", structures=[bulk("Si")], masks={"final": np.array([True])},
...               columns={"loss": np.array([np.nan])})
>>> s.rows()[0]["loss"], len(s.final_structures())
(None, 1)
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms

from aseguide.constraints.base import ObjectiveProtocol

__all__ = ["SetResult", "AnalysisResult"]


@dataclass
class SetResult:
    """Everything measured on one set of structures (guided, unguided or references).

    Attributes
    ----------
    label, path:
        Name of the set and where it was read from.
    structures:
        The structures after symmetrisation (all of them; masks select subsets).
    errors:
        ``(file, message)`` for unreadable inputs.
    masks:
        Boolean arrays over ``structures``: ``distance_ok``, ``unique``, ``novel``,
        ``final`` (all steps passed).
    columns:
        Per-structure values: descriptors, losses, energies, fronts, ... (arrays).
    counts:
        Structures surviving each step.
    config:
        The run configuration found in the run folder, if any.
    """

    label: str
    path: str
    structures: list[Atoms]
    errors: list[tuple[str, str]] = field(default_factory=list)
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    columns: dict[str, np.ndarray | list] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    config: dict | None = None

    def __len__(self) -> int:
        return len(self.structures)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per structure with every column and mask (for CSV / JSON)."""
        out = []
        for k, atoms in enumerate(self.structures):
            row: dict[str, Any] = {"index": k, "source": atoms.info.get("source", ""),
                                   "formula": atoms.get_chemical_formula(), "n_atoms": len(atoms)}
            for name, col in self.columns.items():
                row[name] = _plain(col[k])
            for name, mask in self.masks.items():
                row[name] = bool(mask[k])
            out.append(row)
        return out

    def final_structures(self) -> list[Atoms]:
        """The structures that passed every step, with their columns in ``info``."""
        rows = self.rows()
        out = []
        for k in np.flatnonzero(self.masks.get("final", np.ones(len(self), bool))):
            atoms = self.structures[k].copy()
            for key, value in rows[k].items():
                if value is not None and key not in ("formula",):
                    # extxyz-safe keys: "loss:CN(Co-O)" -> "loss_CN_Co-O"
                    atoms.info[re.sub(r"[^A-Za-z0-9_-]+", "_", key).strip("_")] = value
            out.append(atoms)
        return out


def _plain(value: Any) -> Any:
    """JSON-friendly scalar (``None`` for nan)."""
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    return value


@dataclass
class AnalysisResult:
    """Result of :func:`analyze`.

    Attributes
    ----------
    sets:
        ``{"guided": SetResult, "unguided": ..., "references": ...}`` (those given).
    summary:
        The JSON-ready summary (counts per step, satisfaction fractions, p-values,
        Pareto fronts, best candidates, warnings).
    objectives:
        The objectives used for steps 7–9.
    pareto:
        Points of the Pareto analysis: ``set``, ``index``, ``loss``, ``e_above_hull``,
        ``front`` arrays.
    """

    sets: dict[str, SetResult]
    summary: dict[str, Any]
    objectives: list[ObjectiveProtocol]
    pareto: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        return list(self.summary.get("warnings", []))

    def write_report(self, out_dir: str | os.PathLike, formats: Sequence[str] = ("html", "md")) -> dict[str, str]:
        """Write plots, tables, ``summary.json`` and the report; returns the paths.

        See :func:`aseguide.analysis.report.write_report`.
        """
        from aseguide.analysis.report import write_report

        return write_report(self, out_dir, formats=formats)


def _plain_tree(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain_tree(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain_tree(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_plain_tree(v) for v in x.tolist()]
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        try:
            value = x.tolist()
        except Exception:  # noqa: BLE001
            return str(x)
        return _plain_tree(value) if isinstance(value, (list, tuple, dict)) else _plain(value)
    return _plain(x)
