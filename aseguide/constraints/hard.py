"""Hard (discrete) descriptors, computed with numpy: the definitions used for validation.

The objectives' losses use smooth, differentiable counts; the analysis measures
with plain definitions instead, offered by the objectives as
``hard_descriptor`` (:class:`~aseguide.constraints.Coordination`,
:class:`~aseguide.constraints.VolumePerAtom`):

* :func:`coordination_numbers` counts neighbours of species B within a cutoff of each
  atom of species A, over all periodic images, excluding the atom itself;
* :func:`volume_per_atom` is the cell volume divided by the number of atoms.

Examples
--------
>>> from ase.build import bulk
>>> mean_coordination([bulk("NaCl", "rocksalt", a=5.64)], "Na", "Cl", 3.0).tolist()
[6.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import covalent_radii

from aseguide.constraints._neighbor_pairs import neighbor_pairs
from aseguide.state import symbols_to_numbers

__all__ = [
    "COVALENT_RADIUS_MARGIN",
    "default_cutoff",
    "coordination_numbers",
    "mean_coordination",
    "volume_per_atom",
    "as_atoms_list",
]

#: Å added to the sum of covalent radii for the default cutoff.
COVALENT_RADIUS_MARGIN = 0.5

Species = str | int | Sequence[str | int]
CutoffLike = float | Mapping | Sequence | None


def default_cutoff(center: str | int, neighbor: str | int) -> float:
    """Sum of the covalent radii (Cordero 2008, ``ase.data``) plus 0.5 Å.

    Parameters
    ----------
    center, neighbor : str or int
        Element symbols or atomic numbers.

    Examples
    --------
    >>> round(default_cutoff("Co", "O"), 2)
    2.42
    """
    z_center, z_neighbor = symbols_to_numbers([center, neighbor])
    return float(covalent_radii[z_center] + covalent_radii[z_neighbor] + COVALENT_RADIUS_MARGIN)


def as_atoms_list(structures: Any) -> list[Atoms]:
    """A list of ``ase.Atoms`` from one Atoms, a sequence of them or a batch (``to_atoms``)."""
    if isinstance(structures, Atoms):
        return [structures]
    if hasattr(structures, "to_atoms"):  # a CrystalBatch
        return structures.to_atoms()
    return list(structures)


def _numbers(species: Species) -> list[int]:
    if isinstance(species, (str, int, np.integer)):
        return symbols_to_numbers([species])
    out = symbols_to_numbers(list(species))
    if not out:
        raise ValueError("empty species group")
    return out


def _cutoff_table(centers: list[int], neighbors: list[int], cutoff: CutoffLike) -> np.ndarray:
    """(Z, Z) table of cutoffs for the centre-neighbour pairs (0 elsewhere)."""
    table = np.zeros((len(covalent_radii), len(covalent_radii)))
    for zc in centers:
        for zn in neighbors:
            table[zc, zn] = default_cutoff(zc, zn)
    if isinstance(cutoff, Mapping):
        for (a, b), value in cutoff.items():
            table[_numbers(a)[0], _numbers(b)[0]] = float(value)
    elif isinstance(cutoff, (list, tuple)) and cutoff and isinstance(cutoff[0], (list, tuple)):
        for a, b, value in cutoff:
            table[_numbers(a)[0], _numbers(b)[0]] = float(value)
    elif cutoff is not None:
        value = float(cutoff)
        for zc in centers:
            for zn in neighbors:
                table[zc, zn] = value
    used = table[np.ix_(centers, neighbors)]
    if not (used > 0).all():
        raise ValueError(f"cutoff must be positive, got {cutoff!r}")
    return table


def coordination_numbers(atoms: Atoms, center: Species, neighbor: Species, cutoff: CutoffLike = None) -> np.ndarray:
    """Hard coordination number of every ``center`` atom by ``neighbor`` atoms.

    Counts atoms of the ``neighbor`` species (all periodic images, the atom itself
    excluded) within the cutoff (inclusive) of each atom of the ``center`` species.

    Parameters
    ----------
    atoms : ase.Atoms
        A crystal.
    center, neighbor : str, int or list of those
        Element symbols or atomic numbers, or lists of them (species groups).
    cutoff : float, mapping, list of (center, neighbor, r) or None
        Distance in Å for every pair, a mapping ``{(center, neighbor): r}``
        overriding the default for some pairs, or ``None``: the default
        :func:`default_cutoff` (covalent radii + 0.5 Å) of each pair.

    Returns
    -------
    numpy.ndarray
        One integer count per ``center`` atom, in atom order (empty when there is
        none).

    Examples
    --------
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


def mean_coordination(structures: Sequence[Atoms], center: Species, neighbor: Species,
                      cutoff: CutoffLike = None) -> np.ndarray:
    """Mean hard coordination number per structure (``nan`` without ``center`` atoms).

    Examples
    --------
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

    Examples
    --------
    >>> from ase.build import bulk
    >>> volume_per_atom([bulk("Cu", "sc", a=2.0)]).round(6).tolist()
    [8.0]
    """
    return np.array([abs(float(np.linalg.det(a.cell.array))) / len(a) for a in structures], dtype=float)
