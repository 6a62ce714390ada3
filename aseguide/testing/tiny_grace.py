"""A tiny GRACE model built with tensorpotential's own API and saved as a model folder.

GRACE foundation models (``GRACE-2L-OMAT-large-ft-AM``, ...) are downloaded by
tensorpotential at run time, which is not possible offline. This builds the same
two-layer GRACE architecture (tensorpotential's ``GRACE_2LAYER_v2_25`` preset), small,
with random weights (seeded), optionally shifted by per-element reference energies fitted
by least squares to the DFT energies of a few structures, and saves it with
``TensorPotential.save_model_with_aux_computes``: the SavedModel folder
(``saved_model.pb``, ``variables/``, ``metadata.yaml``) that gracemaker writes and that a
downloaded foundation model is, so the real loading path
(:func:`aseguide.calculators.get_calculator` with ``model=<folder>``) is used.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms

__all__ = ["make_tiny_grace", "TINY_GRACE_ARGS", "element_shifts"]

#: Sizes of the tiny GRACE-2L model (tensorpotential's ``GRACE_2LAYER_v2_25`` keywords);
#: a few thousand parameters instead of the foundation models' millions.
TINY_GRACE_ARGS = dict(rcut=5.0, avg_n_neigh=20.0, lmax=(2, 2), n_rad_base=4, n_rad_max=(8, 8),
                       prod_func_n_max=(8, 8), embedding_size=8, n_mlp_dens=4, max_order=2,
                       indicator_lmax=1)


def _total_energy(atoms: Atoms) -> float | None:
    if atoms.calc is not None:
        try:
            return float(atoms.get_potential_energy())
        except Exception:  # noqa: BLE001 - a calculator without a stored energy
            pass
    value = atoms.info.get("energy_per_atom")
    return None if value is None else float(value) * len(atoms)


def element_shifts(structures: Sequence[Atoms], elements: Sequence[str]) -> dict[str, float]:
    """Per-element energies (eV/atom) fitted by least squares to the structures' total energies.

    The energy of a structure is taken from its calculator (an extxyz file's DFT energy)
    or ``atoms.info["energy_per_atom"]``; structures without one are skipped. With
    fewer structures than elements the minimum-norm solution is returned.

    Examples
    --------
    >>> from ase.build import bulk
    >>> a, b = bulk("Cu"), bulk("Au")
    >>> a.info["energy_per_atom"], b.info["energy_per_atom"] = -3.5, -3.2
    >>> {k: round(v, 6) for k, v in element_shifts([a, b], ["Au", "Cu"]).items()}
    {'Au': -3.2, 'Cu': -3.5}
    """
    index = {e: i for i, e in enumerate(elements)}
    rows, energies = [], []
    for atoms in structures:
        energy = _total_energy(atoms)
        if energy is None or not np.isfinite(energy):
            continue
        row = np.zeros(len(elements))
        for symbol in atoms.get_chemical_symbols():
            if symbol not in index:
                raise ValueError(f"element {symbol} of {atoms.get_chemical_formula()} is not in {list(elements)}")
            row[index[symbol]] += 1
        rows.append(row)
        energies.append(energy)
    if not rows:
        return {e: 0.0 for e in elements}
    solution = np.linalg.lstsq(np.array(rows), np.array(energies), rcond=None)[0]
    return {e: float(solution[i]) for e, i in index.items()}


def make_tiny_grace(
    directory: str | os.PathLike,
    structures: Sequence[Atoms] = (),
    elements: Sequence[str] | None = None,
    *,
    seed: int = 0,
    jit_compile: bool = False,
    **sizes: float,
) -> Path:
    """Build a tiny random GRACE-2L model with tensorpotential and save it as a model folder.

    Parameters
    ----------
    directory:
        The model folder to write (``saved_model.pb``, ``variables/``,
        ``metadata.yaml``); its parent is created if needed.
    structures:
        Structures whose elements the model covers and whose energies (extxyz DFT
        energies or ``info["energy_per_atom"]``) give the per-element energy shifts, so
        that the model's energies are on a DFT-like scale; the network on top is random.
    elements:
        Chemical symbols covered (default: those of ``structures``).
    seed:
        TensorFlow seed of the random weights (the same seed gives the same model).
    jit_compile:
        Save XLA-compiled functions, as the released models are. Off by default: on a
        CPU, XLA compiles each new padded input shape for seconds.
    **sizes:
        Overrides of :data:`TINY_GRACE_ARGS`.

    Returns
    -------
    pathlib.Path
        ``directory``, to pass as ``model=`` to ``get_calculator("grace", ...)``.

    Examples
    --------
    >>> from ase.io import read
    >>> frames = read("../shared/data/dft-benchmarks/mptrj-random-1k.xyz", index=":5")  # doctest: +SKIP
    >>> folder = make_tiny_grace(tmp_path / "grace", frames)                          # doctest: +SKIP
    >>> calc = get_calculator("grace", model=folder)                                  # doctest: +SKIP
    """
    from aseguide.potentials.grace import _import_tensorpotential

    _import_tensorpotential()
    import tensorflow as tf
    from tensorpotential.potentials.presets import GRACE_2LAYER_v2_25
    from tensorpotential.tensorpot import TensorPotential

    structures = list(structures)
    if elements is None:
        elements = sorted({s for atoms in structures for s in atoms.get_chemical_symbols()})
    elements = list(elements)
    if not elements:
        raise ValueError("no elements: give structures or elements=")
    element_map = {symbol: i for i, symbol in enumerate(elements)}
    shifts = element_shifts(structures, elements)
    args = {**TINY_GRACE_ARGS, **sizes}
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tf.random.set_seed(seed)
    instructions = GRACE_2LAYER_v2_25(
        element_map, atomic_shift_map={element_map[e]: shifts[e] for e in elements}, **args
    )
    potential = TensorPotential(instructions.get_instructions(), fit_config={}, jit_compile=jit_compile)
    potential.save_model_with_aux_computes(exact_path=str(directory), jit_compile=jit_compile)
    return directory
