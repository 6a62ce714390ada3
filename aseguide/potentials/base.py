"""The batched potential: energies of a :class:`~aseguide.state.CrystalBatch`.

Energies are differentiable in the fractional coordinates and the lattice, and robust
to structures on which the network fails.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator

from aseguide.neighbors import MAX_NEIGHBORS_PER_ATOM, MAX_PERIODIC_IMAGES, check_neighbor_search
from aseguide.state import CrystalBatch

__all__ = ["BatchedPotential", "TorchPotential"]


_INSTALL_HINT = {
    "mattersim": "pip install 'aseguide[mattersim]'",
    "chgnet": "pip install 'aseguide[chgnet]'",
    "sevenn": "pip install 'aseguide[sevenn]'",
    "grace": "pip install 'aseguide[grace]'",
}


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
        Index -> reason for the structures that failed in the last call. A degenerate
        cell (more than ``max_periodic_images`` images within ``neighbor_cutoff``) or a
        collapsed one (more than ``max_neighbors_per_atom`` expected neighbours) fails
        before the potential sees it (:func:`aseguide.neighbors.check_neighbor_search`).
    """

    name: str = "potential"
    #: Radius (Å) of the potential's neighbour search, used to refuse degenerate cells
    #: before the search (a subclass with a known graph cutoff sets its own).
    neighbor_cutoff: float = 6.0
    #: Most periodic images a structure may need (:func:`aseguide.neighbors.check_periodic_images`).
    max_periodic_images: int = MAX_PERIODIC_IMAGES
    #: Most expected neighbours per atom within ``neighbor_cutoff`` (a collapsed cell beyond).
    max_neighbors_per_atom: float = MAX_NEIGHBORS_PER_ATOM

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
                check_neighbor_search(atoms.cell.array, len(atoms), self.neighbor_cutoff, self.max_periodic_images,
                                      self.max_neighbors_per_atom)
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


def _parameter_device(model: Any) -> torch.device | None:
    """Device of a model's first parameter (``None`` for a model without parameters)."""
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover
        return None


def _freeze(module: torch.nn.Module) -> torch.nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def _image_shift(stored_positions: np.ndarray, frac: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Integer lattice shifts k with stored_positions = (frac + k) @ cell (per atom)."""
    stored_frac = np.linalg.solve(cell.T, np.asarray(stored_positions, dtype=float).T).T
    return np.rint(stored_frac - frac)
