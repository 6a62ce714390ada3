"""Step 7: descriptors of the objectives, with hard counts.

The guidance objectives (``aseguide.constraints``) use smooth, differentiable
counts. For validation we measure with plain, hard definitions computed
independently from the torch code:

* :func:`coordination_numbers` counts neighbours of species B within a cutoff of each
  atom of species A, over all periodic images, excluding the atom itself;
* :func:`volume_per_atom` is the cell volume divided by the number of atoms.

:class:`HardCoordination` and :class:`VolumePerAtomTarget` wrap them in the
objective protocol (``descriptor``, ``satisfied``, ``loss``, ``todict``), and
:func:`evaluate_objectives` evaluates any objects with that protocol, including
those of ``aseguide.constraints``.

Example
-------
>>> from ase.build import bulk
>>> from aseguide.analysis import HardCoordination
>>> cn = HardCoordination("Na", "Cl", target=6, cutoff=3.0)
>>> cn.descriptor([bulk("NaCl", "rocksalt", a=5.64)]).tolist()
[6.0]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols, covalent_radii

from aseguide.analysis.screening import _number
from aseguide.constraints._neighbor_pairs import neighbor_pairs

__all__ = [
    "coordination_numbers",
    "mean_coordination",
    "volume_per_atom",
    "default_cutoff",
    "HardCoordination",
    "VolumePerAtomTarget",
    "evaluate_objectives",
    "objective_name",
    "parse_objective",
    "objective_from_dict",
    "combined_loss",
    "target_spans",
]


def default_cutoff(center: str | int, neighbor: str | int) -> float:
    """Sum of covalent radii + 0.5 Å (the authors' default), e.g. Co–O 2.42 Å.

    Example
    -------
    >>> round(default_cutoff("Co", "O"), 2)
    2.42
    """
    return float(covalent_radii[_number(center)] + covalent_radii[_number(neighbor)] + 0.5)


Species = str | int | Sequence[str | int]


def _numbers(species: Species) -> list[int]:
    if isinstance(species, (str, int, np.integer)):
        return [_number(species)]
    out = [_number(s) for s in species]
    if not out:
        raise ValueError("empty species group")
    return out


def _cutoff_table(centers: list[int], neighbors: list[int], cutoff: float | Mapping | None) -> np.ndarray:
    """(Z, Z) table of cutoffs for the centre-neighbour pairs (0 elsewhere)."""
    table = np.zeros((len(covalent_radii), len(covalent_radii)))
    for zc in centers:
        for zn in neighbors:
            table[zc, zn] = default_cutoff(zc, zn)
    if isinstance(cutoff, Mapping):
        for key, value in cutoff.items():
            a, b = key
            table[_number(a), _number(b)] = float(value)
    elif isinstance(cutoff, (list, tuple)) and cutoff and isinstance(cutoff[0], (list, tuple)):
        for a, b, value in cutoff:
            table[_number(a), _number(b)] = float(value)
    elif cutoff is not None:
        value = float(cutoff)
        for zc in centers:
            for zn in neighbors:
                table[zc, zn] = value
    used = table[np.ix_(centers, neighbors)]
    if not (used > 0).all():
        raise ValueError(f"cutoff must be positive, got {cutoff!r}")
    return table


def coordination_numbers(
    atoms: Atoms,
    center: Species,
    neighbor: Species,
    cutoff: float | Mapping | None = None,
) -> np.ndarray:
    """Hard coordination number of every ``center`` atom by ``neighbor`` atoms.

    Counts atoms of the ``neighbor`` species (all periodic images, the atom itself
    excluded) within the cutoff (inclusive) of each atom of the ``center`` species.

    Parameters
    ----------
    atoms:
        A crystal.
    center, neighbor:
        Element symbols or atomic numbers, or lists of them (species groups).
    cutoff:
        Distance in Å for every pair, a mapping ``{(center, neighbor): r}``
        overriding the default for some pairs, or ``None``: the default
        :func:`default_cutoff` (covalent radii + 0.5 Å) of each pair.

    Returns
    -------
    numpy.ndarray
        One integer count per ``center`` atom, in atom order (empty when there is
        none).

    Example
    -------
    >>> from ase.build import bulk
    >>> coordination_numbers(bulk("C", "diamond", a=3.567), "C", "C", 1.8).tolist()
    [4, 4]
    """
    zc, zn = _numbers(center), _numbers(neighbor)
    table = _cutoff_table(zc, zn, cutoff)
    z = np.asarray(atoms.numbers)
    centers = np.flatnonzero(np.isin(z, zc))
    if len(centers) == 0:
        return np.zeros(0, dtype=np.int64)
    i, j, d = neighbor_pairs(atoms, float(table[np.ix_(zc, zn)].max()))
    hit = np.isin(z[i], zc) & np.isin(z[j], zn) & (d <= table[z[i], z[j]])
    counts = np.bincount(i[hit], minlength=len(atoms))
    return counts[centers].astype(np.int64)


def mean_coordination(
    structures: Sequence[Atoms], center: Species, neighbor: Species, cutoff: float | Mapping | None = None
) -> np.ndarray:
    """Mean hard coordination number per structure (``nan`` without ``center`` atoms).

    Example
    -------
    >>> from ase.build import bulk
    >>> mean_coordination([bulk("Cu", "fcc", a=3.6)], "Cu", "Cu", 2.6).tolist()
    [12.0]
    """
    out = np.full(len(structures), np.nan)
    for k, atoms in enumerate(structures):
        cn = coordination_numbers(atoms, center, neighbor, cutoff)
        if len(cn):
            out[k] = float(cn.mean())
    return out


def volume_per_atom(structures: Sequence[Atoms]) -> np.ndarray:
    """Cell volume per atom (Å^3) of each structure.

    Example
    -------
    >>> from ase.build import bulk
    >>> volume_per_atom([bulk("Cu", "sc", a=2.0)]).round(6).tolist()
    [8.0]
    """
    return np.array([abs(float(np.linalg.det(a.cell.array))) / len(a) for a in structures], dtype=float)


Target = float | tuple[float, float] | list


def _intervals(target: Any) -> list[tuple[float, float]]:
    """A target as a list of closed intervals: 4 -> [(4, 4)], (3, 5) -> [(3, 5)],
    [(3, 3), (6, 7)] -> both; objects with ``tolist()`` (``aseguide.constraints.Target``)
    are converted first."""
    if hasattr(target, "tolist") and not isinstance(target, (list, tuple)):
        target = target.tolist()
    if isinstance(target, (int, float, np.integer, np.floating)) and not isinstance(target, bool):
        value = float(target)
        if not math.isfinite(value):
            raise ValueError(f"target must be finite, got {target!r}")
        return [(value, value)]
    if isinstance(target, (list, tuple)) and len(target) == 2 and all(
            isinstance(v, (int, float, np.integer, np.floating)) for v in target):
        lo, hi = float(target[0]), float(target[1])
        if not lo <= hi:
            raise ValueError(f"target interval must be (low, high) with low <= high, got {target!r}")
        return [(lo, hi)]
    if isinstance(target, (list, tuple)) and target and all(isinstance(v, (list, tuple)) for v in target):
        return [iv for item in target for iv in _intervals(item)]
    raise ValueError(f"target must be a number, an interval (low, high) or a list of intervals, got {target!r}")


def _distance_to_target(values: np.ndarray, target: Any) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    out = np.full(values.shape, np.inf)
    for lo, hi in _intervals(target):
        out = np.minimum(out, np.maximum(np.maximum(lo - values, values - hi), 0.0))
    return np.where(np.isnan(values), np.nan, out)


def _check_target(target: Any) -> Target:
    """Validated target in its simplest form (number, interval tuple, or list of those)."""
    iv = _intervals(target)
    simple: list = [lo if lo == hi else (lo, hi) for lo, hi in iv]
    return simple[0] if len(simple) == 1 else simple


def target_spans(target: Any) -> list[tuple[float, float]] | None:
    """The intervals of a target (for plots), ``None`` when it cannot be read.

    Example
    -------
    >>> target_spans(4), target_spans((3, 5))
    ([(4.0, 4.0)], [(3.0, 5.0)])
    """
    try:
        return _intervals(target)
    except (ValueError, TypeError):
        return None


class _HardObjective:
    """Base of the hard analysis objectives: ``loss`` = distance of the descriptor to
    the target (0 inside an interval), ``satisfied`` = loss <= tolerance."""

    name = "objective"
    target: float | tuple[float, float]
    tolerance: float

    def descriptor(self, structures: Sequence[Atoms] | Atoms) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, structures: Sequence[Atoms] | Atoms) -> np.ndarray:
        return _distance_to_target(self.descriptor(structures), self.target)

    def satisfied(self, structures: Sequence[Atoms] | Atoms) -> np.ndarray:
        loss = self.loss(structures)
        return np.where(np.isnan(loss), False, loss <= self.tolerance + 1e-12)


def _as_list(structures: Sequence[Atoms] | Atoms) -> list[Atoms]:
    if isinstance(structures, Atoms):
        return [structures]
    if hasattr(structures, "to_atoms"):  # a CrystalBatch
        return structures.to_atoms()
    return list(structures)


def _label(species: Species) -> str:
    if isinstance(species, (str, int, np.integer)):
        return str(species) if isinstance(species, str) else chemical_symbols[int(species)]
    return "+".join(_label(s) for s in species)


class HardCoordination(_HardObjective):
    """Mean hard coordination number of ``center`` by ``neighbor`` as an objective.

    Parameters
    ----------
    center, neighbor:
        Element symbols (or lists of them: species groups).
    target:
        Desired mean coordination number, an interval ``(low, high)`` or a list of
        values and intervals (their union).
    cutoff:
        Distance in Å, a mapping ``{(center, neighbor): r}``, or ``None`` for the
        default of each pair (sum of covalent radii + 0.5 Å).
    tolerance:
        ``satisfied`` when the mean is within this distance of the target
        (default 0.5, i.e. the nearest integer is the target).

    Example
    -------
    >>> from ase.build import bulk
    >>> obj = HardCoordination("C", "C", target=4, cutoff=1.8)
    >>> d = bulk("C", "diamond", a=3.567)
    >>> obj.descriptor([d]).tolist(), obj.satisfied([d]).tolist(), obj.loss([d]).tolist()
    ([4.0], [True], [0.0])
    """

    def __init__(self, center: Species, neighbor: Species, target: Target,
                 cutoff: float | Mapping | None = None, tolerance: float = 0.5) -> None:
        self.center = center
        self.neighbor = neighbor
        zc, zn = _numbers(center), _numbers(neighbor)
        _cutoff_table(zc, zn, cutoff)  # validates
        if isinstance(cutoff, Mapping) or cutoff is None:
            self.cutoff = cutoff
            if cutoff is None and len(zc) == 1 and len(zn) == 1:
                self.cutoff = round(default_cutoff(zc[0], zn[0]), 6)
        else:
            self.cutoff = float(cutoff)
        self.target = _check_target(target)
        if not float(tolerance) >= 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
        self.tolerance = float(tolerance)
        self.name = f"CN({_label(center)}-{_label(neighbor)})"

    def descriptor(self, structures: Sequence[Atoms] | Atoms) -> np.ndarray:
        return mean_coordination(_as_list(structures), self.center, self.neighbor, self.cutoff)

    def todict(self) -> dict[str, Any]:
        return {"name": "HardCoordination", "center": self.center, "neighbor": self.neighbor,
                "target": self.target, "cutoff": self.cutoff, "tolerance": self.tolerance}

    def __repr__(self) -> str:
        cutoff = f"{self.cutoff:g}" if isinstance(self.cutoff, float) else repr(self.cutoff)
        return (f"HardCoordination({self.center!r}, {self.neighbor!r}, target={self.target!r}, "
                f"cutoff={cutoff}, tolerance={self.tolerance:g})")


class VolumePerAtomTarget(_HardObjective):
    """Volume per atom (Å^3) as an objective.

    Parameters
    ----------
    target:
        Desired volume per atom in Å^3, or an interval ``(low, high)``.
    tolerance:
        ``satisfied`` within this distance (Å^3) of the target set; default 0.5 Å^3
        (as ``aseguide.constraints.VolumePerAtom``).

    Example
    -------
    >>> from ase.build import bulk
    >>> obj = VolumePerAtomTarget(8.0, tolerance=0.5)
    >>> obj.satisfied([bulk("Cu", "sc", a=2.0), bulk("Cu", "sc", a=2.2)]).tolist()
    [True, False]
    """

    def __init__(self, target: Target, tolerance: float | None = None) -> None:
        from aseguide._validation import check_volume_target

        check_volume_target(target, _intervals(target))
        self.target = _check_target(target)
        if tolerance is None:
            tolerance = 0.5
        if not float(tolerance) >= 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
        self.tolerance = float(tolerance)
        self.name = "volume_per_atom"

    def descriptor(self, structures: Sequence[Atoms] | Atoms) -> np.ndarray:
        return volume_per_atom(_as_list(structures))

    def todict(self) -> dict[str, Any]:
        return {"name": "VolumePerAtomTarget", "target": self.target, "tolerance": self.tolerance}

    def __repr__(self) -> str:
        return f"VolumePerAtomTarget(target={self.target!r}, tolerance={self.tolerance:g})"


def objective_name(objective: Any) -> str:
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


def evaluate_objectives(structures: Sequence[Atoms], objectives: Sequence[Any]) -> dict[str, dict[str, np.ndarray]]:
    """Descriptor, loss and satisfaction of every objective on every structure.

    Works with any object having ``descriptor`` / ``satisfied`` / ``loss`` methods
    (the ``aseguide.constraints`` objectives return torch tensors and accept a
    ``CrystalBatch``; the hard ones of this module return arrays). A missing or
    failing method gives ``nan`` (``False`` for ``satisfied``) with a warning.

    Returns
    -------
    dict
        ``{name: {"descriptor": array, "loss": array, "satisfied": bool array}}``.

    Example
    -------
    >>> from ase.build import bulk
    >>> r = evaluate_objectives([bulk("Cu", "sc", a=2.0)], [VolumePerAtomTarget(8.0)])
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

    Example
    -------
    >>> combined_loss({"a": {"loss": np.array([3.0])}, "b": {"loss": np.array([4.0])}}).tolist()
    [5.0]
    """
    if not evaluated:
        raise ValueError("no objectives evaluated")
    losses = np.stack([v["loss"] for v in evaluated.values()], axis=1)
    return np.linalg.norm(losses, ord=ord, axis=1)


def _parse_target(text: str) -> float | tuple[float, float]:
    if ".." in text:
        lo, hi = text.split("..", 1)
        return (float(lo), float(hi))
    return float(text)


def parse_objective(spec: str):
    """Build a hard objective from a command-line specification.

    Forms (options after further colons, in any order):

    * ``coordination:Co-O:4`` (``:cutoff=2.42``, ``:tol=0.5``); a target interval
      is written ``3..6``;
    * ``volume_per_atom:7.0`` (``:tol=0.35``).

    Raises
    ------
    ValueError
        Naming the specification and what is wrong with it.

    Example
    -------
    >>> parse_objective("coordination:Co-O:4:cutoff=2.42")
    HardCoordination('Co', 'O', target=4.0, cutoff=2.42, tolerance=0.5)
    >>> parse_objective("volume_per_atom:7.0:tol=0.35")
    VolumePerAtomTarget(target=7.0, tolerance=0.35)
    """
    parts = [p.strip() for p in str(spec).split(":")]
    kind = parts[0].lower().replace("-", "_")
    options: dict[str, str] = {}
    positional: list[str] = []
    for p in parts[1:]:
        if "=" in p:
            key, value = p.split("=", 1)
            options[key.strip().lower()] = value.strip()
        else:
            positional.append(p)
    try:
        tol = options.pop("tol", options.pop("tolerance", None))
        if kind in ("coordination", "cn", "hardcoordination"):
            if len(positional) != 2 or "-" not in positional[0]:
                raise ValueError("expected coordination:CENTER-NEIGHBOR:TARGET")
            center, neighbor = positional[0].split("-", 1)
            cutoff = options.pop("cutoff", None)
            obj = HardCoordination(center, neighbor, _parse_target(positional[1]),
                                   cutoff=None if cutoff is None else float(cutoff),
                                   tolerance=0.5 if tol is None else float(tol))
        elif kind in ("volume_per_atom", "vpa", "volumeperatom"):
            if len(positional) != 1:
                raise ValueError("expected volume_per_atom:TARGET")
            obj = VolumePerAtomTarget(_parse_target(positional[0]), None if tol is None else float(tol))
        else:
            raise ValueError(f"unknown kind {parts[0]!r} (use coordination or volume_per_atom)")
        if options:
            raise ValueError(f"unknown option(s) {sorted(options)}")
    except ValueError as exc:
        raise ValueError(f"bad objective {spec!r}: {exc}") from None
    return obj


def objective_from_dict(d: dict[str, Any]):
    """Analysis objective for an objective description (``todict()`` output), or ``None``.

    Coordination objectives (keys ``center``, ``neighbor``, ``target``, optional
    ``cutoff``, ``tolerance``, at the top level or under ``kwargs`` as written by
    ``aseguide.constraints``) become :class:`HardCoordination`, volume per atom
    becomes :class:`VolumePerAtomTarget`; any other kind is rebuilt with
    ``aseguide.constraints.objective_from_dict`` when that is available (soft
    descriptors), else ``None``.

    Example
    -------
    >>> objective_from_dict({"name": "Coordination", "kwargs": {"center": "B", "neighbor": "Fe", "target": 6}})
    HardCoordination('B', 'Fe', target=6.0, cutoff=2.66, tolerance=0.5)
    """
    if not isinstance(d, dict):
        return None
    kind = str(d.get("name") or d.get("type") or d.get("kind") or d.get("class") or "").lower()
    params = {**{k: v for k, v in d.items() if k != "kwargs"}, **(d.get("kwargs") or {})}
    target = params.get("target")
    tolerance = params.get("tolerance")
    try:
        if "coordination" in kind and "distribution" not in kind and "center" in params and "neighbor" in params:
            return HardCoordination(params["center"], params["neighbor"], target, cutoff=params.get("cutoff"),
                                    tolerance=0.5 if tolerance is None else float(tolerance))
        if kind.replace("_", "") in ("volumeperatom", "volumeperatomtarget", "vpa"):
            return VolumePerAtomTarget(target, tolerance)
    except (ValueError, TypeError, KeyError):
        pass  # not expressible as a hard objective: try the soft one
    try:
        from aseguide.constraints import objective_from_dict as soft_from_dict

        return soft_from_dict(d)
    except Exception:  # noqa: BLE001 - unknown kinds are skipped by the caller
        return None
