"""Batched crystal state: a batch of periodic crystals as tensors on one device.

The state holds, for ``S`` structures with ``N`` atoms in total:

* ``frac``: fractional coordinates, shape ``(N, 3)`` (not necessarily wrapped);
* ``cell``: lattice vectors as rows (the ASE convention), shape ``(S, 3, 3)``, Å;
* ``numbers``: atomic numbers, shape ``(N,)``, ``torch.long``;
* ``num_atoms``: atoms per structure, shape ``(S,)``, ``torch.long``;
* ``batch``: structure index of every atom, shape ``(N,)`` (derived from
  ``num_atoms``).

Atoms of one structure are contiguous, in the order of ``num_atoms``. Conversions to
and from :class:`ase.Atoms` and :class:`pymatgen.core.Structure` are exact (the
Cartesian positions are rebuilt from the same fractional coordinates and cell).

Examples
--------
>>> from ase.build import bulk
>>> from aseguide.state import CrystalBatch
>>> batch = CrystalBatch.from_atoms([bulk("Si"), bulk("NaCl", "rocksalt", a=5.64)])
>>> batch.n_structures, batch.n_atoms
(2, 4)
>>> [a.get_chemical_formula() for a in batch.to_atoms()]
['Si2', 'ClNa']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols

if TYPE_CHECKING:  # pragma: no cover
    from pymatgen.core import Structure

__all__ = ["CrystalBatch", "symbols_to_numbers", "wrap_fractional", "MIN_CELL_VOLUME"]

#: Smallest accepted cell volume (Å^3) for structures converted into a batch.
MIN_CELL_VOLUME = 1e-6

_MAX_Z = len(chemical_symbols) - 1


def symbols_to_numbers(symbols: str | int | Iterable[str | int]) -> list[int]:
    """Convert element symbols (or atomic numbers) to a list of atomic numbers.

    Raises
    ------
    ValueError
        If a symbol is not a chemical element, naming it.

    Examples
    --------
    >>> symbols_to_numbers(["Co", "O"])
    [27, 8]
    """
    if isinstance(symbols, (str, int, np.integer)):
        symbols = [symbols]
    numbers = []
    for symbol in symbols:
        if isinstance(symbol, (int, np.integer)) and not isinstance(symbol, bool):
            if not 1 <= int(symbol) <= _MAX_Z:
                raise ValueError(f"unknown element: atomic number {symbol!r} is not in 1..{_MAX_Z}")
            numbers.append(int(symbol))
        elif isinstance(symbol, str) and symbol in atomic_numbers and symbol != "X":
            numbers.append(atomic_numbers[symbol])
        else:
            raise ValueError(f"unknown element {symbol!r}: not a chemical symbol")
    return numbers


def wrap_fractional(frac: torch.Tensor) -> torch.Tensor:
    """Wrap fractional coordinates into [0, 1).

    ``torch.remainder`` of a tiny negative number returns exactly 1.0 in floating point;
    such values are mapped to 0.0 so the result is always inside the half-open interval.

    Examples
    --------
    >>> wrap_fractional(torch.tensor([-1e-9, 1.25, 3.0]))
    tensor([0.0000, 0.2500, 0.0000])
    """
    wrapped = torch.remainder(frac, 1.0)
    return torch.where(wrapped >= 1.0, wrapped - 1.0, wrapped)


def _batch_index(num_atoms: torch.Tensor) -> torch.Tensor:
    return torch.repeat_interleave(
        torch.arange(num_atoms.shape[0], device=num_atoms.device), num_atoms
    )


@dataclass
class CrystalBatch:
    """A batch of periodic crystals as tensors on one device.

    Parameters
    ----------
    frac:
        Fractional coordinates, ``(n_atoms, 3)``.
    cell:
        Lattice vectors as rows, ``(n_structures, 3, 3)``, in Å.
    numbers:
        Atomic numbers, ``(n_atoms,)``.
    num_atoms:
        Number of atoms of each structure, ``(n_structures,)``.

    Examples
    --------
    >>> import torch
    >>> b = CrystalBatch(frac=torch.zeros(1, 3), cell=torch.eye(3)[None] * 3.0,
    ...                  numbers=torch.tensor([6]), num_atoms=torch.tensor([1]))
    >>> float(b.volume()[0])
    27.0
    """

    frac: torch.Tensor
    cell: torch.Tensor
    numbers: torch.Tensor
    num_atoms: torch.Tensor
    _batch: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.frac.ndim != 2 or self.frac.shape[-1] != 3:
            raise ValueError(f"frac must have shape (n_atoms, 3), got {tuple(self.frac.shape)}")
        if self.cell.ndim != 3 or self.cell.shape[-2:] != (3, 3):
            raise ValueError(f"cell must have shape (n_structures, 3, 3), got {tuple(self.cell.shape)}")
        if self.num_atoms.ndim != 1 or self.num_atoms.shape[0] != self.cell.shape[0]:
            raise ValueError(
                f"num_atoms has shape {tuple(self.num_atoms.shape)} but there are "
                f"{self.cell.shape[0]} cells"
            )
        if self.numbers.shape != self.frac.shape[:1]:
            raise ValueError(
                f"numbers has shape {tuple(self.numbers.shape)}, frac has {self.frac.shape[0]} atoms"
            )
        # This check syncs with the device once per construction only when sizes disagree
        # cheaply detectable on shapes; the sum check is skipped for speed on GPU tensors.
        if self.num_atoms.device.type == "cpu" and int(self.num_atoms.sum()) != self.frac.shape[0]:
            raise ValueError(
                f"num_atoms sums to {int(self.num_atoms.sum())} but frac has {self.frac.shape[0]} atoms"
            )

    # ------------------------------------------------------------------ basic views
    @property
    def batch(self) -> torch.Tensor:
        """Structure index of every atom, ``(n_atoms,)``."""
        if self._batch is None:
            self._batch = _batch_index(self.num_atoms)
        return self._batch

    @property
    def n_structures(self) -> int:
        return int(self.cell.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.frac.shape[0])

    @property
    def device(self) -> torch.device:
        return self.frac.device

    @property
    def dtype(self) -> torch.dtype:
        return self.frac.dtype

    def __len__(self) -> int:
        return self.n_structures

    @property
    def positions(self) -> torch.Tensor:
        """Cartesian positions ``frac @ cell`` of every atom, ``(n_atoms, 3)``, Å."""
        return torch.einsum("ni,nij->nj", self.frac, self.cell[self.batch])

    def volume(self) -> torch.Tensor:
        """Absolute cell volume of every structure, ``(n_structures,)``, Å^3."""
        return torch.linalg.det(self.cell).abs()

    def wrapped(self) -> "CrystalBatch":
        """Same crystals with fractional coordinates wrapped into [0, 1)."""
        return self.replace(frac=wrap_fractional(self.frac))

    def replace(self, **changes) -> "CrystalBatch":
        """A new batch with some tensors replaced (``batch`` is kept when sizes allow)."""
        keep_batch = "num_atoms" not in changes
        new = replace(self, **changes)
        if keep_batch:
            new._batch = self._batch
        return new

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "CrystalBatch":
        """Move to another device and/or cast the floating tensors to ``dtype``."""
        return CrystalBatch(
            frac=self.frac.to(device=device, dtype=dtype),
            cell=self.cell.to(device=device, dtype=dtype),
            numbers=self.numbers.to(device=device),
            num_atoms=self.num_atoms.to(device=device),
            _batch=None if self._batch is None else self._batch.to(device=device),
        )

    def detach(self) -> "CrystalBatch":
        return self.replace(frac=self.frac.detach(), cell=self.cell.detach())

    def select(self, indices: Sequence[int] | torch.Tensor) -> "CrystalBatch":
        """A batch made of the structures at ``indices`` (in that order)."""
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.device).reshape(-1)
        starts = (torch.cumsum(self.num_atoms, 0) - self.num_atoms)[idx]
        counts = self.num_atoms[idx]
        local_starts = torch.cumsum(counts, 0) - counts
        total = int(counts.sum())
        within = torch.arange(total, device=self.device) - torch.repeat_interleave(local_starts, counts)
        atom_idx = torch.repeat_interleave(starts, counts) + within
        return CrystalBatch(
            frac=self.frac[atom_idx],
            cell=self.cell[idx],
            numbers=self.numbers[atom_idx],
            num_atoms=self.num_atoms[idx],
        )

    @staticmethod
    def concatenate(batches: Sequence["CrystalBatch"]) -> "CrystalBatch":
        """Join several batches (same device and dtype) into one."""
        if not batches:
            raise ValueError("cannot concatenate an empty list of batches")
        return CrystalBatch(
            frac=torch.cat([b.frac for b in batches]),
            cell=torch.cat([b.cell for b in batches]),
            numbers=torch.cat([b.numbers for b in batches]),
            num_atoms=torch.cat([b.num_atoms for b in batches]),
        )

    # ------------------------------------------------------------------ ASE
    @classmethod
    def from_atoms(
        cls,
        atoms: Atoms | Sequence[Atoms],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> "CrystalBatch":
        """Build a batch from one or several :class:`ase.Atoms`.

        Every structure must be periodic in all three directions and have a cell of
        non-zero volume.

        Raises
        ------
        ValueError
            For mixed or missing periodicity, a zero-volume cell, an empty structure
            or an unknown element.
        """
        if isinstance(atoms, Atoms):
            atoms = [atoms]
        atoms = list(atoms)
        if not atoms:
            raise ValueError("no structures given")
        fracs, cells, numbers, counts = [], [], [], []
        for i, a in enumerate(atoms):
            if not isinstance(a, Atoms):
                raise TypeError(f"structure {i} is a {type(a).__name__}, not ase.Atoms")
            pbc = np.asarray(a.pbc, dtype=bool)
            if not pbc.all():
                kind = "mixed" if pbc.any() else "no"
                raise ValueError(
                    f"structure {i} ({a.get_chemical_formula()}) has {kind} periodicity pbc={pbc.tolist()}; "
                    "crystals must be periodic in all three directions"
                )
            if len(a) == 0:
                raise ValueError(f"structure {i} has no atoms")
            volume = abs(float(np.linalg.det(a.cell.array)))
            if volume < MIN_CELL_VOLUME:
                raise ValueError(f"structure {i} ({a.get_chemical_formula()}) has a zero-volume cell ({volume:g} Å^3)")
            z = a.numbers
            if (z < 1).any() or (z > _MAX_Z).any():
                bad = int(z[(z < 1) | (z > _MAX_Z)][0])
                raise ValueError(f"structure {i} has an unknown element (atomic number {bad})")
            fracs.append(np.linalg.solve(a.cell.array.T, a.positions.T).T)
            cells.append(a.cell.array)
            numbers.append(z)
            counts.append(len(a))
        return cls(
            frac=torch.as_tensor(np.concatenate(fracs), dtype=dtype, device=device),
            cell=torch.as_tensor(np.stack(cells), dtype=dtype, device=device),
            numbers=torch.as_tensor(np.concatenate(numbers), dtype=torch.long, device=device),
            num_atoms=torch.as_tensor(counts, dtype=torch.long, device=device),
        )

    def to_atoms(self, wrap: bool = False) -> list[Atoms]:
        """The structures as a list of :class:`ase.Atoms` (periodic in 3D).

        Cartesian positions are ``frac @ cell`` in float64 from this batch's values.
        """
        frac = self.frac.detach().to("cpu", torch.float64).numpy()
        cell = self.cell.detach().to("cpu", torch.float64).numpy()
        numbers = self.numbers.detach().cpu().numpy()
        counts = self.num_atoms.detach().cpu().numpy()
        out = []
        start = 0
        for i, n in enumerate(counts):
            f = frac[start:start + n]
            if wrap:
                f = np.mod(f, 1.0)
            a = Atoms(numbers=numbers[start:start + n], positions=f @ cell[i], cell=cell[i], pbc=True)
            out.append(a)
            start += n
        return out

    # ------------------------------------------------------------------ pymatgen
    @classmethod
    def from_structures(
        cls,
        structures: "Structure | Sequence[Structure]",
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> "CrystalBatch":
        """Build a batch from pymatgen ``Structure`` objects (ordered, elements only)."""
        from pymatgen.core import Structure

        if isinstance(structures, Structure):
            structures = [structures]
        structures = list(structures)
        if not structures:
            raise ValueError("no structures given")
        fracs, cells, numbers, counts = [], [], [], []
        for i, s in enumerate(structures):
            if not s.is_ordered:
                raise ValueError(f"structure {i} ({s.composition.reduced_formula}) is disordered")
            if len(s) == 0:
                raise ValueError(f"structure {i} has no atoms")
            volume = abs(float(np.linalg.det(s.lattice.matrix)))
            if volume < MIN_CELL_VOLUME:
                raise ValueError(f"structure {i} has a zero-volume cell ({volume:g} Å^3)")
            z = []
            for site in s:
                sp = site.specie
                number = getattr(sp, "Z", None)
                if number is None or not 1 <= number <= _MAX_Z:
                    raise ValueError(f"structure {i} has an unknown element {sp!s}")
                z.append(number)
            fracs.append(s.frac_coords)
            cells.append(s.lattice.matrix)
            numbers.append(z)
            counts.append(len(s))
        return cls(
            frac=torch.as_tensor(np.concatenate(fracs), dtype=dtype, device=device),
            cell=torch.as_tensor(np.stack(cells), dtype=dtype, device=device),
            numbers=torch.as_tensor(np.concatenate(numbers), dtype=torch.long, device=device),
            num_atoms=torch.as_tensor(counts, dtype=torch.long, device=device),
        )

    def to_structures(self) -> "list[Structure]":
        """The structures as pymatgen ``Structure`` objects (fractional coordinates kept)."""
        from pymatgen.core import Lattice, Structure

        frac = self.frac.detach().to("cpu", torch.float64).numpy()
        cell = self.cell.detach().to("cpu", torch.float64).numpy()
        numbers = self.numbers.detach().cpu().numpy()
        out, start = [], 0
        for i, n in enumerate(self.num_atoms.detach().cpu().numpy()):
            species = [chemical_symbols[z] for z in numbers[start:start + n]]
            out.append(Structure(Lattice(cell[i]), species, frac[start:start + n], coords_are_cartesian=False))
            start += n
        return out

    @classmethod
    def from_any(
        cls,
        structures,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> "CrystalBatch":
        """Accept a batch, one or several ``Atoms`` or pymatgen ``Structure`` objects."""
        if isinstance(structures, CrystalBatch):
            if device is None and dtype is None:
                return structures
            return structures.to(device=device, dtype=dtype)
        if isinstance(structures, Atoms):
            return cls.from_atoms(structures, device=device, dtype=dtype)
        items = [structures] if not isinstance(structures, (list, tuple)) else list(structures)
        if items and all(isinstance(s, Atoms) for s in items):
            return cls.from_atoms(items, device=device, dtype=dtype)
        return cls.from_structures(items, device=device, dtype=dtype)
