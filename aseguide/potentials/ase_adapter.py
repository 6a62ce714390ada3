"""Any ASE calculator as a batched potential: gradients by the chain rule from forces and stress."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator

from aseguide.neighbors import check_neighbor_search
from aseguide.potentials.base import BatchedPotential
from aseguide.state import CrystalBatch

__all__ = ["ASECalculatorPotential"]


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

    Examples
    --------
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
                check_neighbor_search(L, len(atoms), self.neighbor_cutoff, self.max_periodic_images,
                                      self.max_neighbors_per_atom)
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
