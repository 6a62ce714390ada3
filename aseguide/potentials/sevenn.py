"""SevenNet (``7net-0`` in its wheel) as a batched potential."""

from __future__ import annotations

import copy
import os
import warnings
from typing import Any

import torch
from ase import Atoms
from ase.calculators.calculator import Calculator

from aseguide.potentials.base import (
    TorchPotential,
    _freeze,
    _import_error,
    _parameter_device,
    _resolve_device,
)

__all__ = ["SevenNetPotential", "sevenn_calculator"]


class SevenNetPotential(TorchPotential):
    """SevenNet on a batch (pretrained ``7net-0`` ships in the ``sevenn`` wheel).

    Parameters
    ----------
    model:
        A built ``sevenn`` ``AtomGraphSequential`` (it is copied: the copy runs in
        batch mode, the original is left as it is).
    modal:
        Fidelity of a multi-fidelity model (e.g. ``"mpa"`` for ``7net-mf-ompa``).

    Examples
    --------
    >>> pot = SevenNetPotential.from_checkpoint("7net-0")  # doctest: +SKIP
    """

    name = "sevenn"

    def __init__(self, model: Any, modal: str | None = None, device: str | torch.device | None = None) -> None:
        super().__init__(_parameter_device(model) if device is None else device)
        model = copy.deepcopy(model)
        model.set_is_batch_data(True)
        model.eval_type_map = torch.tensor(True)
        if model.type_map is None:
            raise ValueError("the SevenNet model has no type_map")
        modal_map = getattr(model, "modal_map", None)
        if modal_map and modal not in modal_map:
            raise ValueError(f"modal={modal!r} is not one of {list(modal_map)} for this multi-fidelity SevenNet model")
        self.modal = modal if modal_map else None
        self.model = _freeze(model.to(self.device))
        self.cutoff = float(model.cutoff)
        self.type_map = dict(model.type_map)

    @staticmethod
    def load_model(model: str | os.PathLike = "7net-0") -> Any:
        """Build a SevenNet model from a pretrained name (``"7net-0"``...) or a checkpoint path."""
        try:
            from sevenn.util import load_checkpoint
        except ImportError as exc:
            raise _import_error("sevenn", exc) from exc
        try:
            cp = load_checkpoint(str(model))
        except Exception as exc:
            raise ValueError(f"cannot load SevenNet model {model!r}: {exc}") from exc
        return cp.build_model()

    @classmethod
    def from_checkpoint(
        cls, model: str | os.PathLike = "7net-0", modal: str | None = None, device: str | torch.device | None = None
    ) -> SevenNetPotential:
        """Batched SevenNet from a pretrained name or a checkpoint path."""
        built = cls.load_model(model)
        return cls(built, modal=modal, device=_resolve_device(device))

    def _prepare(self, atoms: Atoms) -> Any:
        import sevenn._keys as KEY
        from sevenn.atom_graph_data import AtomGraphData
        from sevenn.train.dataload import unlabeled_atoms_to_graph

        bad = sorted({int(z) for z in atoms.numbers if int(z) not in self.type_map})
        if bad:
            raise ValueError(f"SevenNet model does not know atomic number(s) {bad}")
        data = AtomGraphData.from_numpy_dict(unlabeled_atoms_to_graph(atoms, self.cutoff, with_shift=True))
        if self.modal:
            data[KEY.DATA_MODALITY] = self.modal
        return data

    def _energy_subset(self, prepared, frac, cell, num_atoms) -> torch.Tensor:
        import sevenn._keys as KEY
        from torch_geometric.loader.dataloader import Collater

        data = Collater([], follow_batch=None, exclude_keys=None)(list(prepared)).to(self.device)
        f, c = self._inputs(frac, cell)
        owner = data[KEY.BATCH]
        pos = torch.einsum("ni,nij->nj", f, c[owner])
        src, dst = data[KEY.EDGE_IDX][0], data[KEY.EDGE_IDX][1]
        shift = data[KEY.CELL_SHIFT].to(self.model_dtype)
        data[KEY.POS] = pos
        data[KEY.CELL] = c
        data[KEY.EDGE_VEC] = pos[dst] - pos[src] + torch.einsum("ni,nij->nj", shift, c[owner[src]])
        data = self.model._preprocess(data)
        for key, module in self.model._modules.items():
            if key == "force_output":  # forces/stress by autograd inside: not needed here
                continue
            data = module(data)
        return data[KEY.PRED_TOTAL_ENERGY].reshape(-1)

    def as_calculator(self) -> Calculator:
        from sevenn.calculator import SevenNetCalculator

        return SevenNetCalculator(copy.deepcopy(self.model), file_type="model_instance",
                                  device=self.device, modal=self.modal)



def sevenn_calculator(
    model: str | os.PathLike | None = None, device: str | torch.device | None = None, **kwargs: Any
) -> Calculator:
    """SevenNet's ASE calculator (default ``"7net-0"``; see :func:`~aseguide.potentials.get_calculator`)."""
    try:
        from sevenn.calculator import SevenNetCalculator
    except ImportError as exc:
        raise _import_error("sevenn", exc) from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SevenNetCalculator(str(model or "7net-0"), device=_resolve_device(device), **kwargs)
