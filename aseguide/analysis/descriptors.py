"""Step 7: descriptors of the objectives, by their hard (discrete) definitions.

The guidance objectives (:mod:`aseguide.constraints`) use smooth, differentiable
counts. For validation the analysis measures with their plain definitions
(``hard_descriptor``: hard coordination counts within a cutoff, volume per atom in
numpy), through :class:`HardView`; :func:`evaluate_objectives` evaluates any objects
with ``descriptor`` / ``loss`` / ``satisfied`` (hard views, or soft objectives as
they are).

Examples
--------
>>> from ase.build import bulk
>>> from aseguide.constraints import Coordination
>>> cn = HardView(Coordination("Na", "Cl", target=6, cutoff=3.0))
>>> cn.name, cn.descriptor([bulk("NaCl", "rocksalt", a=5.64)]).tolist()
('CN(Na-Cl)', [6.0])
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from ase import Atoms

from aseguide.constraints.base import ObjectiveProtocol, ScalarObjective, objective_from_dict
from aseguide.constraints.coordination import Coordination
from aseguide.constraints.hard import coordination_numbers, default_cutoff, mean_coordination, volume_per_atom
from aseguide.constraints.target import Target, TargetLike
from aseguide.constraints.volume import VolumePerAtom

__all__ = [
    "coordination_numbers",
    "mean_coordination",
    "volume_per_atom",
    "default_cutoff",
    "HardView",
    "HardCoordination",
    "VolumePerAtomTarget",
    "evaluate_objectives",
    "objective_name",
    "parse_objective",
    "hard_objective",
    "combined_loss",
    "target_spans",
]

Species = str | int | Sequence[str | int]


def target_spans(target: Any) -> list[tuple[float, float]] | None:
    """The intervals of a target (for plots), ``None`` when it cannot be read.

    Examples
    --------
    >>> target_spans(4), target_spans((3, 5))
    ([(4.0, 4.0)], [(3.0, 5.0)])
    """
    try:
        return Target(target, nonnegative=False).spans()
    except (ValueError, TypeError):
        return None


def _species_label(symbols: list[str]) -> str | list[str]:
    return symbols[0] if len(symbols) == 1 else symbols


class HardView:
    """An objective of :mod:`aseguide.constraints` measured by its hard descriptor.

    ``descriptor`` is the objective's :meth:`~aseguide.constraints.ScalarObjective.hard_descriptor`
    (numpy), ``loss`` its distance to the target set and ``satisfied`` that distance
    within the objective's ``tolerance``.

    Parameters
    ----------
    objective : Coordination or VolumePerAtom
        A scalar objective with a hard descriptor.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from aseguide.constraints import VolumePerAtom
    >>> view = HardView(VolumePerAtom(8.0))
    >>> view.name, view.satisfied([bulk("Cu", "sc", a=2.0), bulk("Cu", "sc", a=2.2)]).tolist()
    ('volume_per_atom', [True, False])
    """

    def __init__(self, objective: ScalarObjective) -> None:
        if not isinstance(objective, (Coordination, VolumePerAtom)):
            raise TypeError(f"no hard descriptor for {type(objective).__name__}")
        self.objective = objective
        if isinstance(objective, Coordination):
            kwargs = objective.todict()["kwargs"]
            self.center = _species_label(kwargs["center"])
            self.neighbor = _species_label(kwargs["neighbor"])
            self.name = f"CN({'+'.join(kwargs['center'])}-{'+'.join(kwargs['neighbor'])})"
        else:
            self.name = "volume_per_atom"

    @property
    def target(self) -> Target:
        return self.objective.target

    @property
    def tolerance(self) -> float:
        return self.objective.tolerance

    @property
    def cutoff(self) -> Any:
        """The cutoff argument of a coordination objective (``None``: default per pair)."""
        return self.objective.counter.cutoff_argument if isinstance(self.objective, Coordination) else None

    def descriptor(self, structures: Sequence[Atoms] | Atoms) -> np.ndarray:
        return self.objective.hard_descriptor(structures)

    def loss(self, structures: Sequence[Atoms] | Atoms) -> np.ndarray:
        return self.objective.hard_loss(structures)

    def satisfied(self, structures: Sequence[Atoms] | Atoms) -> np.ndarray:
        return self.objective.hard_satisfied(structures)

    def todict(self) -> dict[str, Any]:
        """Flat description: ``name`` (objective class), species, target, cutoff, tolerance."""
        out: dict[str, Any] = {"name": type(self.objective).__name__}
        if isinstance(self.objective, Coordination):
            out.update(center=self.center, neighbor=self.neighbor)
        out.update(target=self.target.tolist(), cutoff=self.cutoff, tolerance=self.tolerance)
        return out

    def __repr__(self) -> str:
        return f"HardView({self.objective!r})"


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"aseguide.analysis.{old} is deprecated; use {new}", DeprecationWarning, stacklevel=3)


def HardCoordination(center: Species, neighbor: Species, target: TargetLike,  # noqa: N802 - former class name
                     cutoff: float | Mapping | None = None, tolerance: float = 0.5) -> HardView:
    """Deprecated: ``HardView(Coordination(center, neighbor, target, cutoff, tolerance=tolerance))``."""
    _deprecated("HardCoordination", "HardView(aseguide.constraints.Coordination(...))")
    return HardView(Coordination(center, neighbor, target, cutoff, tolerance=tolerance))


def VolumePerAtomTarget(target: TargetLike, tolerance: float | None = None) -> HardView:  # noqa: N802
    """Deprecated: ``HardView(VolumePerAtom(target, tolerance=tolerance))``."""
    _deprecated("VolumePerAtomTarget", "HardView(aseguide.constraints.VolumePerAtom(...))")
    return HardView(VolumePerAtom(target, tolerance=tolerance))


def objective_name(objective: ObjectiveProtocol) -> str:
    """A short label for an objective (its ``name``, ``todict()['name']`` or class name)."""
    name = getattr(objective, "name", None)
    if isinstance(name, str) and name:
        return name
    try:
        d = objective.todict()
        if isinstance(d, dict) and d.get("name"):
            extra = [str(d[k]) for k in ("center", "neighbor") if k in d]
            return str(d["name"]) + (f"({'-'.join(extra)})" if extra else "")
    except Exception:  # noqa: BLE001
        pass
    return type(objective).__name__


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=float).reshape(-1)


def _call(method, structures: list[Atoms]) -> np.ndarray:
    """Call an objective method with a list of Atoms, falling back to a CrystalBatch."""
    try:
        return _to_numpy(method(structures))
    except Exception as first:  # noqa: BLE001
        try:
            from aseguide.state import CrystalBatch

            return _to_numpy(method(CrystalBatch.from_atoms(structures)))
        except Exception:  # noqa: BLE001
            raise first from None


def evaluate_objectives(structures: Sequence[Atoms], objectives: Sequence[ObjectiveProtocol]) -> dict[str, dict[str, np.ndarray]]:
    """Descriptor, loss and satisfaction of every objective on every structure.

    Works with any object having ``descriptor`` / ``satisfied`` / ``loss`` methods
    (the ``aseguide.constraints`` objectives return torch tensors and accept a
    ``CrystalBatch``; the hard ones of this module return arrays). A missing or
    failing method gives ``nan`` (``False`` for ``satisfied``) with a warning.

    Returns
    -------
    dict
        ``{name: {"descriptor": array, "loss": array, "satisfied": bool array}}``.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from aseguide.constraints import VolumePerAtom
    >>> r = evaluate_objectives([bulk("Cu", "sc", a=2.0)], [HardView(VolumePerAtom(8.0))])
    >>> r["volume_per_atom"]["satisfied"].tolist()
    [True]
    """
    structures = list(structures)
    n = len(structures)
    out: dict[str, dict[str, np.ndarray]] = {}
    for obj in objectives:
        name = objective_name(obj)
        base, k = name, 2
        while name in out:
            name, k = f"{base}#{k}", k + 1
        values: dict[str, np.ndarray] = {}
        for method in ("descriptor", "loss", "satisfied"):
            fn = getattr(obj, method, None)
            if fn is None or n == 0:
                arr = np.full(n, np.nan)
            else:
                try:
                    arr = _call(fn, structures)
                    if arr.shape != (n,):
                        raise ValueError(f"returned shape {arr.shape}, expected ({n},)")
                except Exception as exc:  # noqa: BLE001
                    warnings.warn(f"objective {name}.{method} failed: {type(exc).__name__}: {exc}", stacklevel=2)
                    arr = np.full(n, np.nan)
            values[method] = arr
        sat = values["satisfied"]
        values["satisfied"] = np.where(np.isnan(sat), False, sat > 0.5)
        out[name] = values
    return out


def combined_loss(evaluated: dict[str, dict[str, np.ndarray]], ord: float = 2) -> np.ndarray:
    """Norm (default Euclidean, as in the paper) of the per-objective losses.

    Examples
    --------
    >>> combined_loss({"a": {"loss": np.array([3.0])}, "b": {"loss": np.array([4.0])}}).tolist()
    [5.0]
    """
    if not evaluated:
        raise ValueError("no objectives evaluated")
    losses = np.stack([v["loss"] for v in evaluated.values()], axis=1)
    return np.linalg.norm(losses, ord=ord, axis=1)


def _options(parts: list[str]) -> tuple[list[str], dict[str, str]]:
    options: dict[str, str] = {}
    positional: list[str] = []
    for p in parts:
        if "=" in p:
            key, value = p.split("=", 1)
            options[key.strip().lower()] = value.strip()
        else:
            positional.append(p)
    return positional, options


def _coordination_spec(positional: list[str], options: dict[str, str], tol: str | None) -> HardView:
    if len(positional) != 2 or "-" not in positional[0]:
        raise ValueError("expected coordination:CENTER-NEIGHBOR:TARGET")
    center, neighbor = positional[0].split("-", 1)
    cutoff = options.pop("cutoff", None)
    return HardView(Coordination(center, neighbor, Target(positional[1]),
                                 cutoff=None if cutoff is None else float(cutoff),
                                 tolerance=0.5 if tol is None else float(tol)))


def _volume_spec(positional: list[str], options: dict[str, str], tol: str | None) -> HardView:
    if len(positional) != 1:
        raise ValueError("expected volume_per_atom:TARGET")
    return HardView(VolumePerAtom(Target(positional[0], nonnegative=False),
                                  tolerance=None if tol is None else float(tol)))


_SPECS: dict[str, Callable[[list[str], dict[str, str], str | None], HardView]] = {
    "coordination": _coordination_spec, "cn": _coordination_spec, "hardcoordination": _coordination_spec,
    "volume_per_atom": _volume_spec, "vpa": _volume_spec, "volumeperatom": _volume_spec,
}


def parse_objective(spec: str) -> HardView:
    """Build a hard objective from a command-line specification.

    Forms (options after further colons, in any order):

    * ``coordination:Co-O:4`` (``:cutoff=2.42``, ``:tol=0.5``); a target interval
      is written ``3..6`` (any :class:`~aseguide.constraints.Target` text);
    * ``volume_per_atom:7.0`` (``:tol=0.35``).

    Raises
    ------
    ValueError
        Naming the specification and what is wrong with it.

    Examples
    --------
    >>> parse_objective("coordination:Co-O:4:cutoff=2.42").todict()
    {'name': 'Coordination', 'center': 'Co', 'neighbor': 'O', 'target': 4.0, 'cutoff': 2.42, 'tolerance': 0.5}
    >>> parse_objective("volume_per_atom:7.0:tol=0.35").tolerance
    0.35
    """
    parts = [p.strip() for p in str(spec).split(":")]
    kind = parts[0].lower().replace("-", "_")
    positional, options = _options(parts[1:])
    try:
        tol = options.pop("tol", options.pop("tolerance", None))
        if kind not in _SPECS:
            raise ValueError(f"unknown kind {parts[0]!r} (use coordination or volume_per_atom)")
        obj = _SPECS[kind](positional, options, tol)
        if options:
            raise ValueError(f"unknown option(s) {sorted(options)}")
    except ValueError as exc:
        raise ValueError(f"bad objective {spec!r}: {exc}") from None
    return obj


def hard_objective(description: dict[str, Any]) -> ObjectiveProtocol | None:
    """Analysis objective for an objective description (run configuration or ``todict()``), or ``None``.

    Coordination objectives (keys ``center``, ``neighbor``, ``target``, optional
    ``cutoff``, ``tolerance``, at the top level or under ``kwargs``) and volume per
    atom become :class:`HardView` s of the :mod:`aseguide.constraints` objective; any
    other kind is rebuilt with :func:`aseguide.constraints.objective_from_dict`
    (soft descriptors) when it can be, else ``None``.

    Examples
    --------
    >>> hard_objective({"name": "Coordination", "kwargs": {"center": "B", "neighbor": "Fe", "target": 6}}).name
    'CN(B-Fe)'
    >>> hard_objective({"type": "VolumePerAtom", "target": 12.0}).tolerance
    0.5
    """
    if not isinstance(description, dict):
        return None
    d = description
    kind = str(d.get("name") or d.get("type") or d.get("kind") or d.get("class") or "").lower()
    params = {**{k: v for k, v in d.items() if k != "kwargs"}, **(d.get("kwargs") or {})}
    target = params.get("target")
    tolerance = params.get("tolerance")
    try:
        if "coordination" in kind and "distribution" not in kind and "center" in params and "neighbor" in params:
            return HardView(Coordination(params["center"], params["neighbor"], target, params.get("cutoff"),
                                         tolerance=0.5 if tolerance is None else float(tolerance)))
        if kind.replace("_", "") in ("volumeperatom", "volumeperatomtarget", "vpa"):
            return HardView(VolumePerAtom(target, tolerance=tolerance))
    except (ValueError, TypeError, KeyError):
        pass  # not expressible as a hard objective: try the soft one
    try:
        return objective_from_dict(d)
    except Exception:  # noqa: BLE001 - unknown kinds are skipped by the caller
        return None
