"""CHGNet (weights in its wheel: the offline default) as a batched potential."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from ase import Atoms
from ase.calculators.calculator import Calculator

from aseguide.potentials.base import (
    TorchPotential,
    _freeze,
    _image_shift,
    _import_error,
    _parameter_device,
    _resolve_device,
)

__all__ = ["CHGNetPotential", "chgnet_calculator"]


class CHGNetPotential(TorchPotential):
    """CHGNet on a batch (weights ship with the ``chgnet`` wheel: works offline).

    Parameters
    ----------
    model:
        A loaded ``chgnet.model.CHGNet``.

    Examples
    --------
    >>> pot = CHGNetPotential.from_pretrained("0.3.0")  # doctest: +SKIP
    """

    name = "chgnet"

    def __init__(self, model: Any, device: str | torch.device | None = None) -> None:
        super().__init__(_parameter_device(model) if device is None else device)
        self.model = _freeze(model.to(self.device))
        from chgnet.graph import CrystalGraphConverter

        conv = model.graph_converter
        # own converter: isolated atoms (frequent in noisy states) are allowed
        self._converter = CrystalGraphConverter(
            atom_graph_cutoff=conv.atom_graph_cutoff,
            bond_graph_cutoff=conv.bond_graph_cutoff,
            algorithm=getattr(conv, "algorithm", "fast"),
            on_isolated_atoms="ignore",
        )
        self.neighbor_cutoff = float(conv.atom_graph_cutoff)

    @staticmethod
    def load_model(model: str | os.PathLike = "0.3.0", device: str | torch.device | None = None) -> Any:
        """Load a CHGNet model: a released version (``"0.3.0"``, ``"0.2.0"``, ``"r2scan"``) or a file."""
        try:
            from chgnet.model import CHGNet
        except ImportError as exc:
            raise _import_error("chgnet", exc) from exc
        dev = str(_resolve_device(device))
        name = str(model)
        if Path(name).is_file():
            return CHGNet.from_file(name).to(dev)
        if name not in ("0.3.0", "0.2.0", "r2scan"):
            raise ValueError(f"unknown CHGNet model {model!r}: use '0.3.0', '0.2.0', 'r2scan' or a file path")
        return CHGNet.load(model_name=name, use_device=dev, verbose=False)

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike = "0.3.0", device: str | torch.device | None = None) -> CHGNetPotential:
        """Batched CHGNet from a released version or a model file."""
        return cls(cls.load_model(model, device), device=device)

    def _prepare(self, atoms: Atoms) -> Any:
        from pymatgen.core import Lattice, Structure

        bad = sorted({int(z) for z in atoms.numbers if not 1 <= z <= 94})
        if bad:
            raise ValueError(f"CHGNet does not support atomic number(s) {bad}")
        structure = Structure(
            Lattice(atoms.cell.array), atoms.numbers, atoms.get_scaled_positions(wrap=False),
            coords_are_cartesian=False,
        )
        graph = self._converter(structure)
        shift = _image_shift(graph.atom_frac_coord.detach().numpy() @ atoms.cell.array,
                             atoms.get_scaled_positions(wrap=False), atoms.cell.array)
        return graph, shift

    def _energy_subset(self, prepared, frac, cell, num_atoms) -> torch.Tensor:
        f, c = self._inputs(frac, cell)
        starts = (torch.cumsum(num_atoms, 0) - num_atoms).tolist()
        graphs = []
        for k, (graph, shift) in enumerate(prepared):
            n = int(num_atoms[k])
            g = graph.to(self.device)
            g.atom_frac_coord = f[starts[k]:starts[k] + n] + torch.as_tensor(shift, dtype=f.dtype, device=f.device)
            g.lattice = c[k]
            graphs.append(g)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            pred = self.model(graphs, task="e")
        energy = pred["e"].reshape(-1)
        if getattr(self.model, "is_intensive", True):
            energy = energy * num_atoms.to(device=energy.device, dtype=energy.dtype)
        return energy

    def as_calculator(self) -> Calculator:
        from chgnet.model.dynamics import CHGNetCalculator

        return CHGNetCalculator(model=self.model, use_device=str(self.device))



def chgnet_calculator(
    model: str | os.PathLike | None = None, device: str | torch.device | None = None, **kwargs: Any
) -> Calculator:
    """CHGNet's ASE calculator (default model ``"0.3.0"``; see :func:`~aseguide.potentials.get_calculator`)."""
    chgnet_model = CHGNetPotential.load_model("0.3.0" if model is None else model, device)
    from chgnet.model.dynamics import CHGNetCalculator

    return CHGNetCalculator(model=chgnet_model, use_device=str(_resolve_device(device)), **kwargs)
