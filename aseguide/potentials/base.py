"""Machine-learning interatomic potentials: ASE calculators by name, and batched torch energies.

Two faces of the same potentials:

* :func:`get_calculator` returns a plain ASE calculator (``atoms.calc = ...``) for a
  potential by name: ``"mattersim"`` (the paper's guidance potential), ``"chgnet"`` (the
  offline default: its weights ship in its wheel), ``"sevenn"`` (weights in the wheel
  too), ``"grace"`` (the paper's validation potential, tensorpotential's GRACE models
  on TensorFlow: a foundation model by name, fetched by tensorpotential at run time, or a
  local model folder), or any ASE calculator passed through.
* :func:`get_potential` returns a :class:`BatchedPotential`: the energies of a whole
  :class:`~aseguide.state.CrystalBatch` in one call, differentiable with respect to the
  batch's fractional coordinates and lattice. For the torch potentials (MatterSim,
  CHGNet, SevenNet) the graph is built once per call (neighbour lists on the CPU, as
  each package does), then one batched network call runs on the potential's device and
  autograd flows to ``batch.frac`` and ``batch.cell``. For any other ASE calculator
  (:class:`ASECalculatorPotential`, used for GRACE) the gradient is the chain rule from
  its forces and stress; the structures are evaluated one at a time, largest first.

GRACE runs on TensorFlow, next to torch in the same process. Its energies serve the
validation (``aseguide analyze --calculator grace``: generated and reference structures
with the same potential, then the hull), not guidance: TensorFlow gradients do not flow
into torch's autograd, so :class:`~aseguide.constraints.EnergyAboveHull` refuses it
(use ``"mattersim"``, ``"chgnet"`` or ``"sevenn"`` there).

A potential is loaded once, when the object is built, and kept by the object (no module
level cache, no reload per call). Model parameters are frozen (``requires_grad=False``)
by the batched wrappers: guidance needs gradients with respect to the structure only.

Robustness, as noisy diffusion states need it: a structure on which the potential fails
(graph building error, unsupported element, exception in the network) gets a ``nan``
energy and no gradient, without failing the rest of the batch; the failures of the last
call are in ``potential.last_failures``. Non-finite gradients are zeroed.

Units: eV for energies, Å for lengths; :meth:`BatchedPotential.energy` returns total
energies per structure, :meth:`BatchedPotential.energy_per_atom` per atom.

Example
-------
>>> from ase.build import bulk
>>> from aseguide.state import CrystalBatch
>>> from aseguide.calculators import get_potential
>>> pot = get_potential("chgnet")                                  # doctest: +SKIP
>>> batch = CrystalBatch.from_atoms([bulk("Si", cubic=True)])
>>> batch.frac.requires_grad_(True)                                 # doctest: +SKIP
>>> e = pot.energy_per_atom(batch)                                  # doctest: +SKIP
>>> e.sum().backward(); batch.frac.grad.shape                       # doctest: +SKIP
torch.Size([8, 3])
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator

from aseguide.state import CrystalBatch

__all__ = [
    "POTENTIALS",
    "BatchedPotential",
    "TorchPotential",
    "MatterSimPotential",
    "CHGNetPotential",
    "SevenNetPotential",
    "ASECalculatorPotential",
    "get_calculator",
    "get_potential",
    "grace_model_path",
]

#: Potential names understood by :func:`get_calculator` / :func:`get_potential`
#: (aliases map to the canonical name).
POTENTIALS: dict[str, str] = {
    "mattersim": "mattersim",
    "chgnet": "chgnet",
    "sevenn": "sevenn",
    "sevennet": "sevenn",
    "7net": "sevenn",
    "grace": "grace",
}

#: Pretrained MatterSim checkpoints that mattersim fetches by name.
MATTERSIM_PRETRAINED = ("mattersim-v1.0.0-1M", "mattersim-v1.0.0-5M")

#: Default GRACE model: the one the paper validates with.
GRACE_DEFAULT_MODEL = "GRACE-2L-OMAT-large-ft-AM"

_INSTALL_HINT = {
    "mattersim": "pip install 'aseguide[mattersim]'",
    "chgnet": "pip install 'aseguide[chgnet]'",
    "sevenn": "pip install 'aseguide[sevenn]'",
    "grace": "pip install 'aseguide[grace]'",
}


def _canonical(name: str) -> str:
    key = str(name).strip().lower()
    if key not in POTENTIALS:
        raise ValueError(
            f"unknown potential {name!r}: choose one of {sorted(set(POTENTIALS.values()))} "
            "or pass an ASE calculator"
        )
    return POTENTIALS[key]


def _import_error(name: str, exc: ImportError) -> ImportError:
    return ImportError(f"the {name!r} potential needs a package that is not installed ({exc}): {_INSTALL_HINT[name]}")


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _zero_nonfinite_grad(t: torch.Tensor) -> torch.Tensor:
    if t.requires_grad:
        t.register_hook(lambda g: torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0))
    return t


# --------------------------------------------------------------------------- base
class BatchedPotential:
    """Energies of a batch of crystals, differentiable w.r.t. fractional coordinates and lattice.

    Subclasses implement :meth:`_energy_subset` for structures that are known to be
    valid; the base class handles wrapping, device/dtype moves, failures and ``nan``.

    Attributes
    ----------
    name : str
        Short name (``"chgnet"``, ``"mattersim"``, ...).
    device : torch.device
        Where the network runs.
    last_failures : dict[int, str]
        Index -> reason for the structures that failed in the last call.
    """

    name: str = "potential"

    def __init__(self, device: str | torch.device | None = None) -> None:
        self.device = _resolve_device(device)
        self.last_failures: dict[int, str] = {}

    # --- to implement -------------------------------------------------------
    def _prepare(self, atoms: Atoms) -> Any:
        """Per-structure preprocessing (graph); raise to mark the structure as failed."""
        return None

    def _energy_subset(
        self, prepared: list[Any], frac: torch.Tensor, cell: torch.Tensor, num_atoms: torch.Tensor
    ) -> torch.Tensor:
        """Total energies (S,) of valid structures (frac wrapped into [0, 1))."""
        raise NotImplementedError

    def as_calculator(self) -> Calculator:
        """An ASE calculator sharing this potential's model (no reload)."""
        raise NotImplementedError

    # --- public -------------------------------------------------------------
    def energy(self, structures: Any, *, grad: bool = True) -> torch.Tensor:
        """Total energy of every structure (eV), shape ``(S,)``.

        Parameters
        ----------
        structures:
            A :class:`~aseguide.state.CrystalBatch` (its ``frac``/``cell`` may require
            grad), or ``Atoms`` / ``Structure`` objects.
        grad:
            Build the autograd graph (when the inputs require grad); ``False`` for a
            plain evaluation.

        Returns
        -------
        torch.Tensor
            ``(S,)`` in the batch's dtype and device; ``nan`` where the potential failed.
        """
        batch = CrystalBatch.from_any(structures)
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            return self._energy(batch)

    def energy_per_atom(self, structures: Any, *, grad: bool = True) -> torch.Tensor:
        """Energy per atom of every structure (eV/atom), shape ``(S,)``."""
        batch = CrystalBatch.from_any(structures)
        return self.energy(batch, grad=grad) / batch.num_atoms.to(batch.dtype)

    def _energy(self, batch: CrystalBatch) -> torch.Tensor:
        S = batch.n_structures
        # wrap into [0, 1): the shift is piecewise constant, so d(wrapped)/d(frac) = 1
        frac = batch.frac - torch.floor(batch.frac.detach())
        frac = torch.where(frac.detach() >= 1.0, frac - 1.0, frac)
        wrapped = batch.replace(frac=frac)
        atoms_list = wrapped.detach().to_atoms()
        self.last_failures = {}
        prepared, ok = [], []
        for i, atoms in enumerate(atoms_list):
            try:
                prepared.append(self._prepare(atoms))
                ok.append(i)
            except Exception as exc:  # noqa: BLE001 - a bad structure must not kill the batch
                self.last_failures[i] = f"{type(exc).__name__}: {exc}"
        out = torch.full((S,), float("nan"), dtype=batch.dtype, device=batch.device)
        if ok:
            idx = torch.as_tensor(ok, dtype=torch.long, device=batch.device)
            if len(ok) == S:
                f_sub, c_sub, n_sub = frac, batch.cell, batch.num_atoms
            else:
                mask = torch.isin(batch.batch, idx)
                f_sub, c_sub, n_sub = frac[mask], batch.cell[idx], batch.num_atoms[idx]
            energies = self._guarded(prepared, ok, f_sub, c_sub, n_sub)
            out = out.index_put((idx,), energies.to(device=batch.device, dtype=batch.dtype))
        if self.last_failures:
            first = next(iter(self.last_failures.items()))
            warnings.warn(
                f"{self.name}: the potential failed on {len(self.last_failures)} of {S} structure(s) "
                f"(energy set to nan); first: structure {first[0]}: {first[1]}",
                RuntimeWarning,
                stacklevel=3,
            )
        return out

    def _guarded(self, prepared, ok, frac, cell, num_atoms) -> torch.Tensor:
        try:
            return self._energy_subset(prepared, frac, cell, num_atoms)
        except Exception:  # noqa: BLE001 - isolate the failing structure(s)
            if len(ok) == 1:
                raise
        starts = torch.cumsum(num_atoms, 0) - num_atoms
        results = []
        for k, i in enumerate(ok):
            s, n = int(starts[k]), int(num_atoms[k])
            try:
                e = self._energy_subset([prepared[k]], frac[s:s + n], cell[k:k + 1], num_atoms[k:k + 1])
            except Exception as exc:  # noqa: BLE001
                self.last_failures[i] = f"{type(exc).__name__}: {exc}"
                e = torch.full((1,), float("nan"), dtype=frac.dtype, device=frac.device)
            results.append(e.reshape(1).to(frac.dtype).to(frac.device))
        return torch.cat(results)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(device={str(self.device)!r})"


class TorchPotential(BatchedPotential):
    """Base of the torch potentials: moves inputs to the model's device and dtype."""

    model_dtype = torch.float32

    def _inputs(self, frac: torch.Tensor, cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = _zero_nonfinite_grad(frac.to(device=self.device, dtype=self.model_dtype))
        c = _zero_nonfinite_grad(cell.to(device=self.device, dtype=self.model_dtype))
        return f, c


def _freeze(module: torch.nn.Module) -> torch.nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def _image_shift(stored_positions: np.ndarray, frac: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Integer lattice shifts k with stored_positions = (frac + k) @ cell (per atom)."""
    stored_frac = np.linalg.solve(cell.T, np.asarray(stored_positions, dtype=float).T).T
    return np.rint(stored_frac - frac)


# --------------------------------------------------------------------------- MatterSim
class MatterSimPotential(TorchPotential):
    """MatterSim (M3GNet architecture) on a batch, from a ``mattersim`` ``Potential``.

    Parameters
    ----------
    potential:
        A loaded ``mattersim.forcefield.potential.Potential``.
    device:
        Defaults to the potential's device.

    Example
    -------
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


# --------------------------------------------------------------------------- CHGNet
class CHGNetPotential(TorchPotential):
    """CHGNet on a batch (weights ship with the ``chgnet`` wheel: works offline).

    Parameters
    ----------
    model:
        A loaded ``chgnet.model.CHGNet``.

    Example
    -------
    >>> pot = CHGNetPotential.from_pretrained("0.3.0")  # doctest: +SKIP
    """

    name = "chgnet"

    def __init__(self, model: Any, device: str | torch.device | None = None) -> None:
        if device is None:
            try:
                device = next(model.parameters()).device
            except StopIteration:  # pragma: no cover
                device = None
        super().__init__(device)
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


# --------------------------------------------------------------------------- SevenNet
class SevenNetPotential(TorchPotential):
    """SevenNet on a batch (pretrained ``7net-0`` ships in the ``sevenn`` wheel).

    Parameters
    ----------
    model:
        A built ``sevenn`` ``AtomGraphSequential`` (it is copied: the copy runs in
        batch mode, the original is left as it is).
    modal:
        Fidelity of a multi-fidelity model (e.g. ``"mpa"`` for ``7net-mf-ompa``).

    Example
    -------
    >>> pot = SevenNetPotential.from_checkpoint("7net-0")  # doctest: +SKIP
    """

    name = "sevenn"

    def __init__(self, model: Any, modal: str | None = None, device: str | torch.device | None = None) -> None:
        if device is None:
            try:
                device = next(model.parameters()).device
            except StopIteration:  # pragma: no cover
                device = None
        super().__init__(device)
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


# --------------------------------------------------------------------------- any ASE calculator
class _ChainRuleEnergy(torch.autograd.Function):
    """Energies from an ASE calculator; backward by the chain rule from forces and stress."""

    @staticmethod
    def forward(ctx, frac, cell, energies, grad_frac, grad_cell, owner):  # noqa: D401
        ctx.save_for_backward(grad_frac, grad_cell, owner)
        return energies.clone()

    @staticmethod
    def backward(ctx, g):
        grad_frac, grad_cell, owner = ctx.saved_tensors
        g = torch.nan_to_num(g, nan=0.0)
        return g[owner][:, None] * grad_frac, g[:, None, None] * grad_cell, None, None, None, None


class ASECalculatorPotential(BatchedPotential):
    """Any ASE calculator as a batched, differentiable potential (chain rule, no autograd inside).

    For crystal ``r_i = f_i L`` (lattice vectors as rows of ``L``), with forces ``F_i``
    and the ASE stress ``sigma = (1/V) dE/d(strain)``:

    * ``dE/df_i = -F_i L^T``
    * ``dE/dL = V L^{-T} sigma`` (at fixed fractional coordinates)

    The structures are evaluated one by one (an ASE calculator takes one ``Atoms``),
    the largest first (results in the batch's order).

    Parameters
    ----------
    calculator:
        The ASE calculator; it must implement ``energy`` and ``forces``; without
        ``stress`` the lattice gradient is zero (with a warning).
    name:
        Label for logs.

    Example
    -------
    >>> from ase.calculators.emt import EMT
    >>> from ase.build import bulk
    >>> pot = ASECalculatorPotential(EMT())
    >>> round(float(pot.energy([bulk("Cu")])[0]), 4)
    -0.0057
    """

    def __init__(self, calculator: Calculator, name: str | None = None) -> None:
        super().__init__("cpu")
        if not isinstance(calculator, Calculator) and not hasattr(calculator, "get_potential_energy"):
            raise TypeError(f"{type(calculator).__name__} is not an ASE calculator")
        self.calculator = calculator
        self.name = name or type(calculator).__name__
        props = getattr(calculator, "implemented_properties", ("energy", "forces", "stress"))
        self.has_stress = "stress" in props
        if not self.has_stress:
            warnings.warn(f"{self.name} does not compute stress: the lattice gets no gradient", stacklevel=2)

    def _energy(self, batch: CrystalBatch) -> torch.Tensor:
        S = batch.n_structures
        frac = batch.frac.detach().cpu().double().numpy()
        cell = batch.cell.detach().cpu().double().numpy()
        numbers = batch.numbers.cpu().numpy()
        counts = batch.num_atoms.cpu().numpy()
        need_grad = torch.is_grad_enabled() and (batch.frac.requires_grad or batch.cell.requires_grad)
        energies = np.full(S, np.nan)
        g_frac = np.zeros_like(frac)
        g_cell = np.zeros_like(cell)
        self.last_failures = {}
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)
        # largest first: a calculator that compiles per shape (GRACE's XLA) compiles the
        # widest shape once and reuses it for the smaller ones; results keep their places
        for i in sorted(range(S), key=lambda k: -int(counts[k])):
            sl = slice(starts[i], starts[i] + counts[i])
            L = cell[i]
            atoms = Atoms(numbers=numbers[sl], positions=frac[sl] @ L, cell=L, pbc=True)
            atoms.calc = self.calculator
            try:
                e = float(atoms.get_potential_energy())
                if need_grad:
                    forces = np.asarray(atoms.get_forces())
                    gf = -forces @ L.T
                    if self.has_stress:
                        sigma = np.asarray(atoms.get_stress(voigt=False))
                        gc = abs(np.linalg.det(L)) * np.linalg.inv(L).T @ sigma
                    else:
                        gc = np.zeros((3, 3))
                    if not (np.isfinite(gf).all() and np.isfinite(gc).all()):
                        gf, gc = np.zeros_like(gf), np.zeros((3, 3))
                    g_frac[sl] = gf
                    g_cell[i] = gc
                energies[i] = e
            except Exception as exc:  # noqa: BLE001
                self.last_failures[i] = f"{type(exc).__name__}: {exc}"
            finally:
                atoms.calc = None
        if self.last_failures:
            warnings.warn(
                f"{self.name}: the calculator failed on {len(self.last_failures)} of {S} structure(s) (energy nan)",
                RuntimeWarning,
                stacklevel=3,
            )
        dt, dev = batch.dtype, batch.device
        e_t = torch.as_tensor(energies, dtype=dt, device=dev)
        if not need_grad:
            return e_t
        return _ChainRuleEnergy.apply(
            batch.frac, batch.cell, e_t,
            torch.as_tensor(g_frac, dtype=dt, device=dev),
            torch.as_tensor(g_cell, dtype=dt, device=dev),
            batch.batch,
        )

    def as_calculator(self) -> Calculator:
        return self.calculator

    def __repr__(self) -> str:
        return f"ASECalculatorPotential({self.name})"


# --------------------------------------------------------------------------- GRACE (TensorFlow)
#: Options of tensorpotential's ``grace_fm`` for foundation models, used for local folders too
#: (padding of the XLA-compiled shapes; uncertainty quantification off, as it slows the model).
GRACE_CALCULATOR_DEFAULTS: dict[str, Any] = {
    "pad_neighbors_fraction": 0.05,
    "pad_atoms_number": 10,
    "max_number_reduction_recompilation": 2,
    "enable_uq_if_available": False,
}


def _import_tensorpotential() -> Any:
    """Import tensorpotential (its start-up notes go to stderr, not stdout)."""
    # tensorpotential sets this itself (tf.keras must be Keras 2, i.e. tf_keras) and
    # prints a note when it has to; setting it first keeps stdout clean
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            import tensorpotential.calculator.asecalculator  # noqa: F401
            import tensorpotential.calculator.foundation_models as foundation_models
    except ImportError as exc:
        raise _import_error("grace", exc) from exc
    return foundation_models


def _tf_device(device: str | torch.device | None) -> str | None:
    """TensorFlow device string for a torch-style device (``None``: TensorFlow's own choice).

    ``None``/``"auto"`` lets TensorFlow place the model (a visible GPU first, as torch
    potentials pick CUDA when available); ``"cpu"``; ``"cuda"``/``"cuda:K"``/``"gpu:K"``.
    """
    if device is None or str(device) == "auto":
        return None
    kind, _, index = str(device).lower().partition(":")
    if kind == "cpu":
        return "/CPU:0"
    if kind not in ("cuda", "gpu"):
        raise ValueError(f"device {device!r} is not 'cpu', 'cuda', 'cuda:K' or 'auto'")
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    k = int(index or 0)
    if k >= len(gpus):
        raise RuntimeError(
            f"device {device!r} requested for GRACE, but TensorFlow sees {len(gpus)} GPU(s) "
            f"(tensorflow {tf.__version__}; install.sh installs the CPU build tensorflow-cpu: install "
            "'tensorflow[and-cuda]' of the same version for a GPU)"
        )
    return f"/GPU:{k}"


@functools.cache
def _grace_calculator_class() -> type:
    """tensorpotential's ``TPCalculator``, pinned to a TensorFlow device (class built on first use)."""
    _import_tensorpotential()
    from tensorpotential.calculator.asecalculator import TPCalculator

    class GraceCalculator(TPCalculator):
        """tensorpotential's ``TPCalculator`` whose model is loaded and run on ``tf_device``.

        ``tf_device=None`` leaves the placement to TensorFlow. ``model_path`` is the
        SavedModel folder that was loaded.
        """

        def __init__(self, model: str, *, tf_device: str | None = None, **kwargs: Any) -> None:
            self.tf_device = tf_device
            self.model_path = str(model)
            with self._device_scope():
                super().__init__(model=str(model), **kwargs)

        def _device_scope(self):
            if self.tf_device is None:
                return contextlib.nullcontext()
            import tensorflow as tf

            return tf.device(self.tf_device)

        def calculate(self, *args: Any, **kwargs: Any) -> None:
            with self._device_scope():
                super().calculate(*args, **kwargs)

    return GraceCalculator


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.startswith((".", "~"))


def grace_model_path(model: str | os.PathLike | None = None) -> Path:
    """The local SavedModel folder of a GRACE model name or folder.

    Parameters
    ----------
    model:
        A GRACE foundation model name known to tensorpotential (default
        ``"GRACE-2L-OMAT-large-ft-AM"``, the paper's; old and short aliases are
        accepted), fetched by tensorpotential into its cache (``$GRACE_CACHE``, default
        ``~/.cache/grace``) on first use; or the path of a model folder as
        tensorpotential writes it (``saved_model.pb``, ``variables/``,
        ``metadata.yaml``: a downloaded foundation model or your own fit).

    Returns
    -------
    pathlib.Path
        The folder to load.

    Raises
    ------
    FileNotFoundError
        For a path that does not exist.
    ValueError
        For a folder without ``saved_model.pb``, or a name that is neither a folder nor
        a model tensorpotential knows (the known names are listed).
    RuntimeError
        When a named model is not cached and cannot be downloaded (offline).
    ImportError
        When tensorpotential is not installed.
    """
    model = GRACE_DEFAULT_MODEL if model is None else model
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.exists() or isinstance(model, os.PathLike) or _looks_like_path(text):
        if not path.exists():
            raise FileNotFoundError(f"no such GRACE model folder: {text!r}")
        if not (path / "saved_model.pb").is_file():
            raise ValueError(f"{text!r} is not a GRACE model folder (no saved_model.pb): give the folder of a "
                             "model saved by tensorpotential (gracemaker's saved_model, or a downloaded one)")
        return path
    fm = _import_tensorpotential()
    name = fm.MODELS_ALIASES_DICT.get(text) or text
    if name not in fm.MODELS_NAME_LIST:
        raise ValueError(f"unknown GRACE model {text!r} (and no such folder): choose a model folder or one of "
                         f"{', '.join(fm.MODELS_NAME_LIST)}")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return Path(fm.get_or_download_model(name))
    except Exception as exc:  # noqa: BLE001 - network errors of any kind: say what to do
        cache = os.path.join(fm.FOUNDATION_CACHE_DIR, name)
        raise RuntimeError(
            f"GRACE model {name!r} is not in tensorpotential's cache ({cache}) and could not be downloaded "
            f"({type(exc).__name__}: {exc}). On a machine with internet run `grace_models download {name}` and "
            f"copy the folder to {cache} (or set GRACE_CACHE), or pass the folder itself as model="
        ) from exc


def _grace_calculator(
    model: str | os.PathLike | None = None, device: str | torch.device | None = None, **kwargs: Any
) -> Calculator:
    path = grace_model_path(model)
    options = {**GRACE_CALCULATOR_DEFAULTS, **kwargs}
    return _grace_calculator_class()(str(path), tf_device=_tf_device(device), **options)


# --------------------------------------------------------------------------- factories
def get_calculator(name: str | Calculator | BatchedPotential, **kwargs: Any) -> Calculator:
    """An ASE calculator for a potential by name, or the calculator passed in.

    Parameters
    ----------
    name:
        ``"mattersim"``, ``"chgnet"``, ``"sevenn"`` (aliases ``"sevennet"``, ``"7net"``),
        ``"grace"``; an ASE calculator (returned unchanged); a :class:`BatchedPotential`
        (its calculator, sharing the model).
    **kwargs:
        ``model=`` (alias ``checkpoint=``): pretrained name or checkpoint path —
        MatterSim ``"mattersim-v1.0.0-1M"`` (default) / ``"...-5M"`` / a ``.pth`` in
        mattersim's format; CHGNet ``"0.3.0"`` (default) / ``"0.2.0"`` / ``"r2scan"`` /
        a file; SevenNet ``"7net-0"`` (default) / a checkpoint; GRACE
        ``"GRACE-2L-OMAT-large-ft-AM"`` (default) or any name tensorpotential knows
        (downloaded into ``$GRACE_CACHE``, default ``~/.cache/grace``, on first use) /
        a local model folder (``saved_model.pb`` + ``variables/``, see
        :func:`grace_model_path`).
        ``device=`` (``"cpu"``, ``"cuda"``; default: CUDA when available; for GRACE,
        TensorFlow's device: a visible GPU when there is one).
        ``modal=`` for multi-fidelity SevenNet models. Other keywords go to the
        calculator's constructor (for GRACE, tensorpotential's ``TPCalculator``, with
        :data:`GRACE_CALCULATOR_DEFAULTS` unless given).

    Raises
    ------
    ValueError
        For an unknown potential name (named in the message), or an unknown GRACE
        model name.
    FileNotFoundError
        For a checkpoint or model folder that does not exist.
    RuntimeError
        For a GRACE model that is neither cached nor downloadable (offline), or
        ``device="cuda"`` when TensorFlow sees no GPU.
    ImportError
        When the potential's package is missing (with the ``pip install`` line).

    Example
    -------
    >>> from ase.build import bulk
    >>> atoms = bulk("Si")
    >>> atoms.calc = get_calculator("chgnet")  # doctest: +SKIP
    >>> atoms.get_potential_energy()           # doctest: +SKIP
    >>> atoms.calc = get_calculator("grace", model="path/to/GRACE-model-folder")  # doctest: +SKIP
    """
    if isinstance(name, BatchedPotential):
        return name.as_calculator()
    if isinstance(name, Calculator) or (not isinstance(name, str) and hasattr(name, "get_potential_energy")):
        return name
    if not isinstance(name, str):
        raise TypeError(f"expected a potential name or an ASE calculator, got {type(name).__name__}")
    canonical = _canonical(name)
    model = kwargs.pop("model", None)
    checkpoint = kwargs.pop("checkpoint", None)
    if model is not None and checkpoint is not None:
        raise ValueError("pass model= or checkpoint=, not both")
    model = model if model is not None else checkpoint
    device = kwargs.pop("device", None)
    if canonical == "mattersim":
        from mattersim.forcefield.potential import MatterSimCalculator

        potential = MatterSimPotential.load_potential(model, device)
        return MatterSimCalculator(potential=potential, device=str(_resolve_device(device)), **kwargs)
    if canonical == "chgnet":
        chgnet_model = CHGNetPotential.load_model("0.3.0" if model is None else model, device)
        from chgnet.model.dynamics import CHGNetCalculator

        return CHGNetCalculator(model=chgnet_model, use_device=str(_resolve_device(device)), **kwargs)
    if canonical == "sevenn":
        try:
            from sevenn.calculator import SevenNetCalculator
        except ImportError as exc:
            raise _import_error("sevenn", exc) from exc
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return SevenNetCalculator(str(model or "7net-0"), device=_resolve_device(device), **kwargs)
    return _grace_calculator(model, device, **kwargs)


def _is_instance_of(obj: Any, module: str, cls_name: str) -> bool:
    """isinstance without importing a heavy package that the user has not imported."""
    mod = sys.modules.get(module)
    cls = getattr(mod, cls_name, None) if mod is not None else None
    return cls is not None and isinstance(obj, cls)


def get_potential(calculator: str | Calculator | BatchedPotential, **kwargs: Any) -> BatchedPotential:
    """A :class:`BatchedPotential` for a potential name, an ASE calculator or a potential.

    Names load the torch model once (MatterSim, CHGNet, SevenNet: batched autograd path;
    GRACE: chain rule through its ASE calculator). A MatterSim, CHGNet or SevenNet ASE
    calculator is wrapped around its own model (no reload). Any other ASE calculator
    uses the chain rule (:class:`ASECalculatorPotential`).

    Parameters
    ----------
    calculator:
        Name, ASE calculator or :class:`BatchedPotential` (returned unchanged).
    **kwargs:
        As for :func:`get_calculator` (``model=``/``checkpoint=``, ``device=``, ``modal=``).

    Example
    -------
    >>> pot = get_potential("chgnet", device="cpu")  # doctest: +SKIP
    >>> from ase.calculators.emt import EMT
    >>> get_potential(EMT())
    ASECalculatorPotential(EMT)
    """
    if isinstance(calculator, BatchedPotential):
        return calculator
    if isinstance(calculator, str):
        canonical = _canonical(calculator)
        model = kwargs.pop("model", None)
        checkpoint = kwargs.pop("checkpoint", None)
        if model is not None and checkpoint is not None:
            raise ValueError("pass model= or checkpoint=, not both")
        model = model if model is not None else checkpoint
        device = kwargs.pop("device", None)
        modal = kwargs.pop("modal", None)
        if kwargs:
            raise TypeError(f"unexpected keyword(s) for get_potential({calculator!r}): {sorted(kwargs)}")
        if canonical == "mattersim":
            return MatterSimPotential.from_checkpoint(model, device=device)
        if canonical == "chgnet":
            return CHGNetPotential.from_pretrained("0.3.0" if model is None else model, device=device)
        if canonical == "sevenn":
            return SevenNetPotential.from_checkpoint(model or "7net-0", modal=modal, device=device)
        return ASECalculatorPotential(_grace_calculator(model, device), name="grace")
    if kwargs:
        raise TypeError(f"keywords {sorted(kwargs)} only apply to a potential given by name")
    if _is_instance_of(calculator, "mattersim.forcefield.potential", "MatterSimCalculator"):
        return MatterSimPotential(calculator.potential, device=getattr(calculator, "device", None))
    if _is_instance_of(calculator, "chgnet.model.dynamics", "CHGNetCalculator"):
        return CHGNetPotential(calculator.model, device=getattr(calculator, "device", None))
    if _is_instance_of(calculator, "sevenn.calculator", "SevenNetCalculator"):
        return SevenNetPotential(calculator.model, modal=getattr(calculator, "modal", None),
                                 device=getattr(calculator, "device", None))
    if isinstance(calculator, Calculator) or hasattr(calculator, "get_potential_energy"):
        return ASECalculatorPotential(calculator)
    raise TypeError(f"expected a potential name, an ASE calculator or a BatchedPotential, got {type(calculator).__name__}")


def compute_energies(structures: Sequence[Any], calculator: Any, *, batch_size: int = 64) -> np.ndarray:
    """Total energies (eV) of structures, in batches, without gradients (``nan`` on failure)."""
    pot = get_potential(calculator)
    structures = list(structures)
    out = []
    for s in range(0, len(structures), batch_size):
        out.append(pot.energy(structures[s:s + batch_size], grad=False).detach().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)
