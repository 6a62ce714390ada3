"""Stage 1 of the validation pipeline: the inputs of :func:`~aseguide.analysis.analyze`.

Reading the structure sets, settling the objectives (given, or described in the run
configuration), comparing the guided run's settings with its unguided baseline, and
resolving the calculator and hull arguments.

Examples
--------
>>> compare_settings({"model": "chemical_system", "seed": 1}, {"model": "chemical_system", "seed": 2})
[]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from ase import Atoms

from aseguide.analysis.descriptors import hard_objective, objective_name
from aseguide.analysis.io import StructureSet, read_structures
from aseguide.analysis.results import SetResult
from aseguide.constraints.base import ObjectiveProtocol

__all__ = [
    "compare_settings",
    "read_inputs",
    "hull_system_of",
    "drop_empty_references",
    "choose_objectives",
    "check_baseline",
    "make_sets",
    "resolve_calculator",
    "resolve_hull",
]

#: Configuration keys allowed to differ between a guided run and its unguided baseline.
_GUIDANCE_KEYS = {
    "guidance", "guide", "objectives", "objective", "constraints", "seed", "output", "out", "out_dir",
    "output_dir", "outdir", "name", "resume", "strength", "strengths", "forward", "backward", "recurrence",
    "g", "k", "run_name", "tag", "notes", "device", "combine",
}


def _as_set(obj: Any, label: str) -> StructureSet:
    if obj is None:
        return StructureSet(label=label)
    if isinstance(obj, StructureSet):
        return obj
    if isinstance(obj, Atoms):
        return StructureSet([obj], label=label)
    if isinstance(obj, (str, os.PathLike)):
        return read_structures(obj)
    items = list(obj)
    if items and all(isinstance(a, Atoms) for a in items):
        return StructureSet(items, label=label)
    if items and all(isinstance(p, (str, os.PathLike)) for p in items):
        return read_structures(items)
    if not items:
        return StructureSet(label=label)
    raise TypeError(f"{label}: expected a path, a list of paths or a list of ase.Atoms, got {type(obj).__name__}")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = d
    return out


def compare_settings(guided: dict | None, unguided: dict | None) -> list[str]:
    """Differences between two run configurations outside the guidance settings.

    Returns one message per differing key (model, chemical system, atom counts,
    steps, ...); keys about guidance, objectives, seeds and output are ignored.

    Examples
    --------
    >>> compare_settings({"model": "chemical_system", "seed": 1, "num_atoms": 12},
    ...                  {"model": "chemical_system", "seed": 2, "num_atoms": 16})
    ["setting 'num_atoms' differs: 12 (guided) vs 16 (unguided)"]
    """
    if not guided or not unguided:
        return []
    a, b = _flatten(guided), _flatten(unguided)
    out = []
    for key in sorted(set(a) | set(b)):
        if key.split(".")[0].lower() in _GUIDANCE_KEYS:
            continue
        if a.get(key, "<missing>") != b.get(key, "<missing>"):
            out.append(f"setting {key!r} differs: {a.get(key, '<missing>')!r} (guided) vs "
                       f"{b.get(key, '<missing>')!r} (unguided)")
    return out


def _objectives_from_config(config: dict | None) -> list[Any]:
    if not config:
        return []
    raw = config.get("objectives") or config.get("objective") or config.get("constraints") or []
    if isinstance(raw, dict):
        raw = [dict(v, name=v.get("name", k)) if isinstance(v, dict) else {} for k, v in raw.items()] \
            if all(isinstance(v, dict) for v in raw.values()) else [raw]
    out = []
    for item in raw if isinstance(raw, list) else []:
        obj = hard_objective(item) if isinstance(item, dict) else None
        if obj is not None:
            out.append(obj)
    return out


def resolve_calculator(calculator: Any) -> tuple[Any, str | None]:
    """The calculator object and its name (a name is built with ``aseguide.calculators``)."""
    if calculator is None:
        return None, None
    if isinstance(calculator, str):
        try:
            from aseguide.calculators import get_calculator
        except ImportError as exc:
            raise RuntimeError(f"calculator {calculator!r} requested but aseguide.calculators is not available "
                               f"({exc}); pass an ASE calculator object instead") from None
        return get_calculator(calculator), calculator
    return calculator, type(calculator).__name__


def resolve_hull(hull: Any, hull_energy: str | None, system: str | None) -> tuple[Any, str | None]:
    """The hull object and where it comes from (a table file is read as a ``ReferenceHull``)."""
    if hull is None:
        return None, None
    if isinstance(hull, (str, os.PathLike)):
        if not os.path.exists(hull):
            raise FileNotFoundError(f"hull table not found: {os.fspath(hull)!r}")
        if hull_energy is None:
            raise ValueError(f"hull table {os.fspath(hull)!r} given without hull_energy= ('total', 'per_atom' or "
                             "'formation_per_atom'): a table cannot say which energies it holds")
        try:
            from aseguide.calculators import ReferenceHull
        except ImportError as exc:
            raise RuntimeError(f"hull table {os.fspath(hull)!r} needs aseguide.calculators.ReferenceHull, which is "
                               f"not available ({exc})") from None
        kwargs = {"chemical_system": system} if system else {}
        return ReferenceHull.from_table(os.fspath(hull), energy=hull_energy, **kwargs), os.fspath(hull)
    if not hasattr(hull, "e_above_hull"):
        raise TypeError(f"hull must have an e_above_hull(atoms, energy_per_atom) method, got {type(hull).__name__}")
    return hull, type(hull).__name__


def _path_of(value: Any) -> str:
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, StructureSet):
        return value.label
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, os.PathLike)) for v in value):
        return ", ".join(os.fspath(v) for v in value)
    return "<structures given in Python>"


# ---------------------------------------------------------------------------- step 1: inputs
def read_inputs(inputs: dict[str, Any], say: Callable[[str], None], notes: list[str]) -> dict[str, StructureSet]:
    """Step 1: read each given input (``guided``, ``unguided``, ``references``).

    Unreadable files become notes; a generated set without any structure raises
    ``ValueError``.

    Examples
    --------
    >>> from ase.build import bulk
    >>> sets = read_inputs({"guided": [bulk("Si")], "unguided": None}, print, [])
    [1/9] reading guided ...
    >>> len(sets["guided"])
    1
    """
    raw_sets: dict[str, StructureSet] = {}
    for label, value in inputs.items():
        if value is None:
            continue
        say(f"[1/9] reading {label} ...")
        s = _as_set(value, label)
        raw_sets[label] = s
        for source, message in s.errors:
            notes.append(f"{label}: could not read {source}: {message}")
        if len(s) == 0 and label != "references":
            problem = "; ".join(f"{src}: {msg}" for src, msg in s.errors[:3]) or "no structures"
            raise ValueError(f"{label} input {_path_of(value)!r} has no readable structure ({problem})")
    return raw_sets


def hull_system_of(raw_sets: dict[str, StructureSet], hull_system: str | None) -> str | None:
    """The chemical system of a hull table: ``"auto"`` means the generated elements."""
    if hull_system != "auto":
        return hull_system
    elements = sorted({s for lab in ("guided", "unguided") if lab in raw_sets
                       for a in raw_sets[lab] for s in a.get_chemical_symbols()})
    return "-".join(elements) or None


def drop_empty_references(raw_sets: dict[str, StructureSet], notes: list[str]) -> None:
    """Forget a references input without any readable structure (with a note)."""
    if "references" in raw_sets and len(raw_sets["references"]) == 0:
        notes.append("references: no readable structure; novelty and reference hull skipped")
        del raw_sets["references"]


def choose_objectives(objectives: Sequence[ObjectiveProtocol] | None, raw_sets: dict[str, StructureSet],
                      notes: list[str]) -> list[ObjectiveProtocol]:
    """The objectives given, else those described in the guided run's configuration."""
    objs = list(objectives) if objectives is not None else _objectives_from_config(raw_sets["guided"].config)
    if objectives is None and objs:
        notes.append("objectives taken from the run configuration: " + ", ".join(objective_name(o) for o in objs))
    return objs


def check_baseline(raw_sets: dict[str, StructureSet], notes: list[str]) -> None:
    """Notes on how the unguided baseline differs from the guided run besides guidance."""
    if "unguided" not in raw_sets:
        return
    for message in compare_settings(raw_sets["guided"].config, raw_sets["unguided"].config):
        notes.append("--compare: " + message)
    eg = {s for a in raw_sets["guided"] for s in a.get_chemical_symbols()}
    eu = {s for a in raw_sets["unguided"] for s in a.get_chemical_symbols()}
    if eg != eu:
        notes.append(f"--compare: the runs contain different elements: {sorted(eg)} (guided) vs "
                     f"{sorted(eu)} (unguided)")


def make_sets(raw_sets: dict[str, StructureSet], inputs: dict[str, Any]) -> dict[str, SetResult]:
    """One :class:`SetResult` per input read, with its ``read`` / ``unreadable`` counts."""
    sets: dict[str, SetResult] = {}
    for label, s in raw_sets.items():
        path = s.label if isinstance(inputs[label], StructureSet) else _path_of(inputs[label])
        sets[label] = SetResult(label=label, path=path, structures=list(s.structures), errors=list(s.errors),
                                config=s.config)
        sets[label].counts["read"] = len(s)
        sets[label].counts["unreadable"] = len(s.errors)
    return sets
