"""Periodic neighbour pairs of one structure (pymatgen's compiled cell-list search)."""

from __future__ import annotations

import numpy as np
from ase import Atoms

__all__ = ["neighbor_pairs"]

#: Cells larger than this many cutoff cubes use ASE's neighbour search (see below).
_MAX_BINS = 1e6


def neighbor_pairs(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All ordered pairs ``(i, j, d_ij)`` with ``d_ij <= cutoff`` over periodic images.

    Every periodic image is included (skewed cells and cutoffs larger than the cell
    are handled); only the atom itself at zero offset is excluded, so two distinct
    atoms on top of each other give a pair at distance 0.

    Examples
    --------
    >>> from ase.build import bulk
    >>> i, j, d = neighbor_pairs(bulk("Cu", "fcc", a=3.6), 2.6)
    >>> len(d), round(float(d.min()), 3)
    (12, 2.546)
    """
    if cutoff <= 0:
        raise ValueError(f"cutoff must be positive, got {cutoff!r}")
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    if abs(float(np.linalg.det(cell))) > 0:
        # The same lattice in its shortest basis: the pairs and distances are the same, but
        # the search visits a few images instead of ~(cutoff / plane spacing)^3 in a skewed
        # basis (a sampled cell with planes 0.007 Å apart took the screen tens of minutes).
        from ase.geometry import minkowski_reduce

        cell = minkowski_reduce(cell)[0]
    cell = np.ascontiguousarray(cell)
    frac = np.linalg.solve(cell.T, np.asarray(atoms.positions, dtype=np.float64).T).T
    pos = np.ascontiguousarray(np.mod(frac, 1.0) @ cell)
    # pymatgen's cell list allocates memory in proportion to the cell volume (in units of
    # the cutoff cube); absurd cells (e.g. from an untrained model: 1e5 Å^3 per atom and
    # more) would need terabytes, so they go through ASE's search, which bins atoms only.
    huge_cell = abs(float(np.linalg.det(cell))) > _MAX_BINS * float(cutoff) ** 3
    try:
        from pymatgen.optimization.neighbors import find_points_in_spheres
    except ImportError:  # pragma: no cover - pymatgen always ships the extension
        huge_cell = True
    if huge_cell:
        from ase.neighborlist import primitive_neighbor_list

        i, j, d = primitive_neighbor_list("ijd", np.ones(3, bool), cell, pos, float(cutoff), self_interaction=False)
        return i.astype(np.int64), j.astype(np.int64), d
    i, j, offsets, d = find_points_in_spheres(
        pos, pos, r=float(cutoff), pbc=np.ones(3, dtype=np.int64), lattice=cell, tol=1e-8
    )
    keep = (i != j) | np.any(offsets != 0, axis=1)
    keep &= d <= cutoff
    return i[keep].astype(np.int64), j[keep].astype(np.int64), d[keep]
