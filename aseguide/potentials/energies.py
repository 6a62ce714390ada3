"""Energies of many structures: per atom with any ASE calculator, or batched totals with a potential.

Examples
--------
>>> from ase.build import bulk
>>> from ase.calculators.emt import EMT
>>> round(float(compute_energies([bulk("Cu", "fcc", a=3.6)], EMT())[0]), 4)
-0.0067
>>> round(float(total_energies([bulk("Cu")], EMT())[0]), 4)
-0.0057
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from ase import Atoms

from aseguide.neighbors import MAX_NEIGHBORS_PER_ATOM, MAX_PERIODIC_IMAGES, check_neighbor_search
from aseguide.potentials.registry import get_potential

__all__ = ["compute_energies", "total_energies"]


def compute_energies(
    structures: Sequence[Atoms],
    calculator: Any,
    relax: bool = False,
    fmax: float = 0.05,
    steps: int = 200,
    optimizer: Callable | None = None,
    progress: Callable[[int, int], None] | None = None,
    cell_filter: Callable | str | None = "frechet",
    neighbor_cutoff: float = 6.0,
    max_periodic_images: int = MAX_PERIODIC_IMAGES,
    max_neighbors_per_atom: float = MAX_NEIGHBORS_PER_ATOM,
) -> np.ndarray:
    """Potential energy per atom (eV/atom) of each structure, with any ASE calculator.

    The structures are not modified: each is copied, given ``calculator`` and, when
    ``relax`` is set, relaxed (positions and cell, ``FrechetCellFilter``). A failure
    gives ``nan`` for that structure with a warning naming it. They are evaluated
    largest first (fewer recompilations for GRACE), the results in the input order.

    Parameters
    ----------
    structures : sequence of ase.Atoms
        Crystals.
    calculator : ase.calculators.calculator.Calculator or callable
        An ASE calculator, or a factory called with no argument returning one.
    relax : bool
        Relax before taking the energy (off by default, as in the paper: relaxation
        would undo geometric constraints).
    fmax, steps : float, int
        Relaxation convergence (eV/Å) and step limit.
    optimizer : type, optional
        ASE optimizer class for the relaxation (default ``ase.optimize.FIRE``).
    progress : callable, optional
        Called as ``progress(done, total)`` after each structure.
    cell_filter : {"frechet"} or type or None
        ``"frechet"`` (``ase.filters.FrechetCellFilter``, default), another ASE
        filter class (e.g. ``ase.filters.UnitCellFilter``), or ``None`` to relax the
        positions only.
    neighbor_cutoff, max_periodic_images, max_neighbors_per_atom : float, int, float
        A structure whose neighbour search within ``neighbor_cutoff`` (Å) would visit
        more than ``max_periodic_images`` periodic images (a degenerate cell: lattice
        planes a fraction of an Å apart) or find more than ``max_neighbors_per_atom``
        neighbours per atom (a collapsed cell) gets ``nan`` and a warning instead of
        being handed to the calculator, whose neighbour list could exhaust the memory.

    Returns
    -------
    numpy.ndarray
        Energy per atom, ``nan`` where the calculation failed.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from ase.calculators.emt import EMT
    >>> round(float(compute_energies([bulk("Cu", "fcc", a=3.6)], EMT())[0]), 4)
    -0.0067
    """
    if calculator is None:
        raise ValueError("calculator is None: give an ASE calculator")
    is_factory = isinstance(calculator, type) or (callable(calculator) and not hasattr(calculator, "calculate"))
    calc = calculator() if is_factory else calculator
    out = np.full(len(structures), np.nan)
    # largest first: a calculator that compiles one kernel per input shape (GRACE's XLA
    # models) compiles the widest shape once and reuses it (padded) for the smaller ones
    order = sorted(range(len(structures)), key=lambda i: -len(structures[i]))
    for done, k in enumerate(order, start=1):
        atoms = structures[k]
        work = atoms.copy()
        work.calc = calc
        try:
            check_neighbor_search(work.cell.array, len(work), neighbor_cutoff, max_periodic_images, max_neighbors_per_atom)
            if relax:
                from ase.filters import FrechetCellFilter
                from ase.optimize import FIRE

                opt_cls = optimizer or FIRE
                flt = FrechetCellFilter if cell_filter == "frechet" else cell_filter
                target = work if flt is None else flt(work)
                opt_cls(target, logfile=None).run(fmax=fmax, steps=steps)
            out[k] = float(work.get_potential_energy()) / len(work)
        except Exception as exc:  # noqa: BLE001 - one failure must not stop the batch
            warnings.warn(f"energy of structure {k} ({atoms.info.get('source', atoms.get_chemical_formula())}) "
                          f"failed: {type(exc).__name__}: {exc}", stacklevel=2)
        if progress is not None:
            progress(done, len(structures))
    return out


def total_energies(structures: Sequence[Any], calculator: Any, *, batch_size: int = 64) -> np.ndarray:
    """Total energies (eV) of structures with a batched potential, without gradients.

    Parameters
    ----------
    structures : sequence of ase.Atoms or Structure
        Crystals.
    calculator : str, ASE calculator or BatchedPotential
        The potential (see :func:`~aseguide.potentials.get_potential`).
    batch_size : int
        Structures per batched call.

    Returns
    -------
    numpy.ndarray
        Total energy of each structure, ``nan`` where the potential failed.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from ase.calculators.emt import EMT
    >>> total_energies([bulk("Cu"), bulk("Cu", a=3.7)], EMT(), batch_size=1).round(4).tolist()
    [-0.0057, 0.0303]
    """
    pot = get_potential(calculator)
    structures = list(structures)
    out = []
    for s in range(0, len(structures), batch_size):
        out.append(pot.energy(structures[s:s + batch_size], grad=False).detach().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)
