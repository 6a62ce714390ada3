"""Training data of ``aseguide train``: reading, the held-out split, ChemGraphs, density.

Examples
--------
>>> train_rows, held_rows = split_indices(10, 3, seed=0)
>>> len(train_rows), len(held_rows)
(7, 3)
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CARBON_AVERAGE_DENSITY", "read_dataset", "split_indices", "atoms_from_cif", "average_density",
           "to_chemgraphs", "chemgraph_to_atoms", "TrainingData", "prepare_data"]

#: Mean atomic density (atoms/Å^3) of carbon_24, measured on a training split of it.
CARBON_AVERAGE_DENSITY = 0.1587


def read_dataset(paths: Sequence[str | os.PathLike]):
    """Concatenate CSV files of structures into one table with a ``row`` column (0, 1, ...).

    Parameters
    ----------
    paths : sequence of path
        CSV files with at least ``material_id`` and ``cif`` columns.

    Returns
    -------
    pandas.DataFrame

    Examples
    --------
    >>> table = read_dataset(DEFAULT_DATA)  # doctest: +SKIP
    >>> len(table)                          # doctest: +SKIP
    4062
    """
    import pandas as pd

    frames = []
    for path in paths:
        frame = pd.read_csv(path)
        missing = {"material_id", "cif"} - set(frame.columns)
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        frame = frame[[c for c in ("material_id", "cif", "energy_per_atom") if c in frame.columns]]
        frames.append(frame.assign(source=os.path.basename(str(path))))
    table = pd.concat(frames, ignore_index=True)
    if table["material_id"].duplicated().any():
        raise ValueError("material_id is not unique across the data files")
    return table.assign(row=np.arange(len(table)))


def split_indices(n: int, held_out: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, disjoint (training rows, held-out rows), each sorted.

    Examples
    --------
    >>> train_rows, test_rows = split_indices(10, 3, seed=0)
    >>> len(train_rows), len(test_rows), len(set(train_rows) & set(test_rows))
    (7, 3, 0)
    """
    if not 0 < held_out < n:
        raise ValueError(f"held_out must be between 1 and {n - 1}, got {held_out}")
    permutation = np.random.default_rng(seed).permutation(n)
    return np.sort(permutation[held_out:]), np.sort(permutation[:held_out])


def atoms_from_cif(text: str):
    """Read one structure from the text of a CIF.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from ase.io import write
    >>> import io
    >>> buffer = io.BytesIO(); write(buffer, bulk("C", "diamond", a=3.567), format="cif")
    >>> len(atoms_from_cif(buffer.getvalue().decode()))
    2
    """
    import io

    from ase.io import read

    return read(io.StringIO(text), format="cif")


def average_density(cifs: Sequence[str]) -> float:
    """Mean number density (atoms/Å^3) over structures given as CIF texts.

    Examples
    --------
    >>> from ase.build import bulk
    >>> import io
    >>> from ase.io import write
    >>> buffer = io.BytesIO(); write(buffer, bulk("C", "diamond", a=3.567), format="cif")
    >>> round(average_density([buffer.getvalue().decode()]), 3)
    0.176
    """
    densities = []
    for text in cifs:
        atoms = atoms_from_cif(text)
        densities.append(len(atoms) / atoms.get_volume())
    return float(np.mean(densities))


def to_chemgraphs(table, cache_dir: str | os.PathLike) -> list:
    """Convert rows to MatterGen ChemGraphs with MatterGen's own data pipeline.

    Writes the rows as a CSV and builds :class:`mattergen.common.data.dataset.CrystalDataset`
    with ``from_csv`` (pymatgen primitive cell, Niggli reduction, numpy cache in
    ``cache_dir``) and MatterGen's lattice transform ``symmetrize_lattice``, applied
    here once. (``set_chemical_system`` is left out: the model is unconditional, and a
    multi-hot ``chemical_system`` field breaks MatterGen's element mask in eval mode.)

    Examples
    --------
    >>> graphs = to_chemgraphs(read_dataset(DEFAULT_DATA).head(2), "cache")  # doctest: +SKIP
    """
    from aseguide.models._mattergen_compat import prepare_mattergen

    prepare_mattergen()
    import contextlib
    import io

    from mattergen.common.data.dataset import CrystalDataset
    from mattergen.common.data.transform import symmetrize_lattice

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    csv = cache_dir / "structures.csv"
    table[["material_id", "cif"]].to_csv(csv, index=False)
    with contextlib.redirect_stdout(io.StringIO()):
        dataset = CrystalDataset.from_csv(str(csv), str(cache_dir / "numpy"),
                                          transforms=[symmetrize_lattice])
    order = {mid: i for i, mid in enumerate(dataset.structure_id)}
    return [dataset[order[mid]] for mid in table["material_id"]]


def chemgraph_to_atoms(graph):
    """An :class:`ase.Atoms` of one (unbatched) ChemGraph (fractional positions, cell in Å).

    Examples
    --------
    >>> atoms = chemgraph_to_atoms(to_chemgraphs(table.head(1), "cache")[0])  # doctest: +SKIP
    """
    from ase import Atoms

    return Atoms(numbers=graph.atomic_numbers.detach().cpu().numpy(),
                 scaled_positions=graph.pos.detach().cpu().numpy() % 1.0,
                 cell=graph.cell.detach().cpu().numpy().reshape(3, 3), pbc=True)


@dataclasses.dataclass
class TrainingData:
    """The ChemGraphs of a training run, on its device.

    Attributes
    ----------
    train_graphs, held_graphs : list of mattergen.common.data.chemgraph.ChemGraph
        Training and held-out structures after MatterGen's data pipeline.
    density : float
        Mean atomic density (atoms/Å^3) of the training structures (the lattice prior's).
    conversion_seconds : float
        Wall time of the conversion to ChemGraphs.
    """

    train_graphs: list
    held_graphs: list
    density: float
    conversion_seconds: float


def prepare_data(paths: Sequence[str | os.PathLike], output: Path, device: Any, *, held_out: int,
                 split_seed: int, subset: int | None) -> TrainingData:
    """Read, split (recorded in ``output/split.json``) and convert the training data.

    Parameters
    ----------
    paths : sequence of path
        Data CSV files (see :func:`read_dataset`).
    output : pathlib.Path
        Run folder; ``split.json`` is written there.
    device : torch.device
        Where the ChemGraphs are kept.
    held_out, split_seed : int
        Size and seed of the held-out set (:func:`split_indices`).
    subset : int or None
        Keep only this many of the training rows (a seeded choice).

    Returns
    -------
    TrainingData

    Examples
    --------
    >>> data = prepare_data(DEFAULT_DATA, Path("runs/x"), "cpu", held_out=8, split_seed=0, subset=32)  # doctest: +SKIP
    """
    table = read_dataset(paths)
    train_rows, held_rows = split_indices(len(table), held_out, split_seed)
    if subset is not None:
        permuted = np.random.default_rng(split_seed + 1).permutation(train_rows)
        train_rows = np.sort(permuted[:subset])
    train_table, held_table = table.iloc[train_rows], table.iloc[held_rows]
    (output / "split.json").write_text(json.dumps({
        "data": [str(p) for p in paths], "seed": split_seed, "subset": subset,
        "held_out_rows": held_rows.tolist(), "held_out_ids": held_table["material_id"].tolist(),
        "train_rows": train_rows.tolist(), "train_ids": train_table["material_id"].tolist(),
    }, indent=1))
    density = average_density(train_table["cif"])

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        train_graphs = [g.to(device) for g in to_chemgraphs(train_table, Path(tmp) / "train")]
        held_graphs = [g.to(device) for g in to_chemgraphs(held_table, Path(tmp) / "held_out")]
    return TrainingData(train_graphs, held_graphs, density, time.perf_counter() - start)
