"""Step 2: symmetrise structures with spglib and record their space groups.

Generated crystals are often slightly distorted versions of a more symmetric
structure. :func:`symmetrize` replaces each one by spglib's idealised standard cell
found at a loose tolerance, and records the space group before (at a tight
tolerance) and after.

Examples
--------
>>> from ase.build import bulk
>>> from aseguide.analysis import symmetrize
>>> atoms = bulk("Si", cubic=True)
>>> atoms.rattle(0.01, seed=1)
>>> out = symmetrize([atoms], symprec=0.1)[0]
>>> out.info["spacegroup_before"], out.info["spacegroup_after"]
(1, 227)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from ase import Atoms

__all__ = ["spacegroup_number", "spacegroup_symbol", "symmetrize", "degenerate_cell"]


def _cell(atoms: Atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.asarray(atoms.cell.array, dtype=float), atoms.get_scaled_positions(wrap=True),
            np.asarray(atoms.numbers, dtype=int))


#: Cells thinner than this (smallest distance between lattice planes, Å) or with less
#: volume per atom (Å^3) are not passed to spglib: no crystal is like that, and spglib
#: can crash the interpreter (segmentation fault in ``cel_trim_cell``) on such cells.
MIN_CELL_HEIGHT = 0.5
MIN_VOLUME_PER_ATOM = 1.0


def degenerate_cell(atoms: Atoms, symprec: float = 0.0) -> str | None:
    """Why a cell is too degenerate for a symmetry search, or ``None`` when it is fine.

    Examples
    --------
    >>> from ase import Atoms
    >>> degenerate_cell(Atoms("C", cell=[[3, 0, 0], [3, 0.01, 0], [0, 0, 3]], pbc=True))
    'cell height 0.0100 Å below 0.5 Å'
    """
    cell = np.asarray(atoms.cell.array, dtype=float)
    volume = abs(float(np.linalg.det(cell)))
    if not np.isfinite(cell).all() or volume == 0.0:
        return "singular or non-finite cell"
    areas = [np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])) for k in range(3)]
    height = volume / max(areas)
    limit = max(MIN_CELL_HEIGHT, 2.0 * symprec)
    if height < limit:
        return f"cell height {height:.4f} Å below {limit:g} Å"
    if volume / max(len(atoms), 1) < MIN_VOLUME_PER_ATOM:
        return f"volume per atom {volume / max(len(atoms), 1):.4f} Å^3 below {MIN_VOLUME_PER_ATOM:g} Å^3"
    return None


def _dataset(atoms: Atoms, symprec: float, angle_tolerance: float):
    import spglib

    if degenerate_cell(atoms, symprec) is not None:
        return None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return spglib.get_symmetry_dataset(_cell(atoms), symprec=symprec, angle_tolerance=angle_tolerance)
        except Exception:  # noqa: BLE001 - spglib >= 2.5 may raise instead of returning None
            return None


def spacegroup_number(atoms: Atoms, symprec: float = 1e-3, angle_tolerance: float = -1.0) -> int:
    """International space-group number (1–230) of a structure, 0 when spglib fails.

    Examples
    --------
    >>> from ase.build import bulk
    >>> spacegroup_number(bulk("Cu", "fcc", a=3.6))
    225
    """
    data = _dataset(atoms, symprec, angle_tolerance)
    return 0 if data is None else int(data.number)


def spacegroup_symbol(atoms: Atoms, symprec: float = 1e-3, angle_tolerance: float = -1.0) -> str:
    """Hermann–Mauguin symbol of a structure's space group (``"?"`` when spglib fails).

    Examples
    --------
    >>> from ase.build import bulk
    >>> spacegroup_symbol(bulk("Cu", "fcc", a=3.6))
    'Fm-3m'
    """
    data = _dataset(atoms, symprec, angle_tolerance)
    return "?" if data is None else str(data.international)


def symmetrize(
    structures: Sequence[Atoms],
    symprec: float = 0.1,
    angle_tolerance: float = -1.0,
    primitive: bool = True,
    tight_symprec: float = 1e-3,
) -> list[Atoms]:
    """Symmetrise structures with spglib (pipeline step 2).

    Each structure is replaced by spglib's standardised, idealised cell found with
    tolerance ``symprec``. The result is a new list of new ``Atoms``; their ``info``
    is copied from the input and gains:

    ``spacegroup_before``
        space-group number of the input at ``tight_symprec``;
    ``spacegroup_after``
        space-group number of the symmetrised structure (at ``tight_symprec``);
    ``spacegroup_symbol``
        its Hermann–Mauguin symbol;
    ``symmetrize_error``
        only when spglib failed; the structure is then returned unchanged.

    Parameters
    ----------
    structures:
        Crystals (periodic in 3D).
    symprec:
        Distance tolerance in Å for the symmetry search (spglib's ``symprec``).
    angle_tolerance:
        Angle tolerance in degrees (spglib's default when negative).
    primitive:
        Return the standardised primitive cell (default; keeps the atom count of a
        primitive input) instead of the conventional cell.
    tight_symprec:
        Tolerance used to report the space groups before and after.

    Returns
    -------
    list of ase.Atoms

    Raises
    ------
    ValueError
        If ``symprec`` or ``tight_symprec`` is not positive.

    Examples
    --------
    >>> from ase.build import bulk
    >>> symmetrize([bulk("NaCl", "rocksalt", a=5.64)])[0].info["spacegroup_after"]
    225
    """
    import spglib

    if not symprec > 0:
        raise ValueError(f"symprec must be positive, got {symprec!r}")
    if not tight_symprec > 0:
        raise ValueError(f"tight_symprec must be positive, got {tight_symprec!r}")
    out = []
    for atoms in structures:
        before = spacegroup_number(atoms, tight_symprec, angle_tolerance)
        reason = degenerate_cell(atoms, symprec)
        if reason is not None:
            new = atoms.copy()
            new.info = dict(atoms.info)
            new.info.update(symmetrize_error=f"degenerate cell ({reason}): not symmetrised",
                            spacegroup_before=before, spacegroup_after=0, spacegroup_symbol="?")
            out.append(new)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                std = spglib.standardize_cell(
                    _cell(atoms), to_primitive=primitive, no_idealize=False,
                    symprec=symprec, angle_tolerance=angle_tolerance,
                )
            except Exception:  # noqa: BLE001
                std = None
        info = dict(atoms.info)
        if std is None:
            new = atoms.copy()
            new.info = info
            new.info["symmetrize_error"] = f"spglib found no symmetry at symprec={symprec}"
        else:
            lattice, scaled, numbers = std
            new = Atoms(numbers=numbers, scaled_positions=scaled, cell=lattice, pbc=True)
            new.info = info
        data = _dataset(new, tight_symprec, angle_tolerance)
        new.info["spacegroup_before"] = before
        new.info["spacegroup_after"] = 0 if data is None else int(data.number)
        new.info["spacegroup_symbol"] = "?" if data is None else str(data.international)
        out.append(new)
    return out
