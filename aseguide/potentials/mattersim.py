"""MatterSim (the paper's guidance potential) as a batched potential."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator

from aseguide.potentials.base import TorchPotential, _freeze, _image_shift, _import_error, _resolve_device

__all__ = ["MATTERSIM_PRETRAINED", "MatterSimPotential", "mattersim_calculator"]


#: Pretrained MatterSim checkpoints that mattersim fetches by name.
MATTERSIM_PRETRAINED = ("mattersim-v1.0.0-1M", "mattersim-v1.0.0-5M")


class MatterSimPotential(TorchPotential):
    """MatterSim (M3GNet architecture) on a batch, from a ``mattersim`` ``Potential``.

    Parameters
    ----------
    potential:
        A loaded ``mattersim.forcefield.potential.Potential``.
    device:
        Defaults to the potential's device.

    Examples
    --------
    >>> pot = MatterSimPotential.from_checkpoint("mattersim-v1.0.0-1M")  # doctest: +SKIP
    """

    name = "mattersim"

    def __init__(self, potential: Any, device: str | torch.device | None = None) -> None:
        super().__init__(device if device is not None else getattr(potential, "device", None))
        self.potential = potential
        self.model = _freeze(potential.model.to(self.device))
        args = self.model.model_args
        self.cutoff = float(args["cutoff"])
        self.threebody_cutoff = float(args["threebody_cutoff"])
        self.max_z = int(args.get("max_z", 94))
        from mattersim.datasets.utils.convertor import GraphConvertor

        self._convertor = GraphConvertor("m3gnet", self.cutoff, True, self.threebody_cutoff)

    @staticmethod
    def load_potential(checkpoint: str | os.PathLike | None = None, device: str | torch.device | None = None) -> Any:
        """Load a mattersim ``Potential`` (pretrained name, or path in mattersim's format).

        Raises
        ------
        FileNotFoundError
            For a path that does not exist.
        RuntimeError
            When mattersim cannot fetch pretrained weights (e.g. no network).
        """
        try:
            from mattersim.forcefield.potential import Potential
        except ImportError as exc:
            raise _import_error("mattersim", exc) from exc
        dev = str(_resolve_device(device))
        name = None if checkpoint is None else str(checkpoint)
        is_pretrained = name is None or name.lower().removesuffix(".pth") in {
            p.lower() for p in MATTERSIM_PRETRAINED
        }
        if not is_pretrained and not Path(name).exists():
            raise FileNotFoundError(
                f"MatterSim checkpoint {name!r} not found (pretrained names: {MATTERSIM_PRETRAINED})"
            )
        try:
            return Potential.from_checkpoint(name, device=dev, load_training_state=False)
        except Exception as exc:
            if is_pretrained:
                raise RuntimeError(
                    f"could not load the pretrained MatterSim weights {name or MATTERSIM_PRETRAINED[0]!r}: "
                    f"mattersim downloads them at first use into ~/.local/mattersim/pretrained_models "
                    f"(no network here?). Pass checkpoint=<path to a .pth>. Cause: {type(exc).__name__}: {exc}"
                ) from exc
            raise

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | os.PathLike | None = None, device: str | torch.device | None = None
    ) -> MatterSimPotential:
        """Batched MatterSim from a pretrained name or a checkpoint path."""
        return cls(cls.load_potential(checkpoint, device), device=device)

    def _prepare(self, atoms: Atoms) -> Any:
        bad = sorted({int(z) for z in atoms.numbers if z > self.max_z})
        if bad:
            raise ValueError(f"MatterSim does not support atomic number(s) {bad}")
        graph = self._convertor.convert(atoms.copy())
        frac = atoms.get_scaled_positions(wrap=False)
        shift = _image_shift(graph.atom_pos.numpy(), frac, atoms.cell.array)
        return graph, shift

    def _energy_subset(self, prepared, frac, cell, num_atoms) -> torch.Tensor:
        from mattersim.forcefield.potential import batch_to_dict
        from torch_geometric.data import Batch

        graphs = [g for g, _ in prepared]
        shift = torch.as_tensor(np.concatenate([s for _, s in prepared]), device=self.device, dtype=self.model_dtype)
        gb = Batch.from_data_list(graphs)
        inputs = batch_to_dict(gb, device=self.device)
        f, c = self._inputs(frac, cell)
        owner = inputs["batch"]
        inputs["atom_pos"] = torch.einsum("ni,nij->nj", f + shift, c[owner])
        inputs["cell"] = c
        return self.model.forward(inputs)

    def as_calculator(self) -> Calculator:
        from mattersim.forcefield.potential import MatterSimCalculator

        return MatterSimCalculator(potential=self.potential, device=str(self.device))


def mattersim_calculator(
    model: str | os.PathLike | None = None, device: str | torch.device | None = None, **kwargs: Any
) -> Calculator:
    """mattersim's ASE calculator for a pretrained name or checkpoint (see :func:`~aseguide.potentials.get_calculator`)."""
    from mattersim.forcefield.potential import MatterSimCalculator

    potential = MatterSimPotential.load_potential(model, device)
    return MatterSimCalculator(potential=potential, device=str(_resolve_device(device)), **kwargs)
