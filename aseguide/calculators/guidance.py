"""An ASE calculator whose energy is a guidance objective's loss."""

from __future__ import annotations

from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from aseguide.constraints.base import ObjectiveProtocol, energy_forces_stress, objective_from_dict

__all__ = ["GuidanceCalculator"]


class GuidanceCalculator(Calculator):
    """Loss of an objective as an ASE potential energy.

    ``energy = loss`` (the objective's value for the structure, without its
    ``strength``), ``forces = -dloss/dpositions`` (fixed cell) and
    ``stress = (1/V) dloss/dstrain`` (Voigt order ``xx, yy, zz, yz, xz, xy``, the ASE
    sign convention: cell and positions deformed together). Computed in float64 by
    autograd of the same batched loss used for guidance. Mix it with a physical
    potential through :class:`ase.calculators.mixing.LinearCombinationCalculator`
    to weight it.

    Parameters
    ----------
    objective:
        An :class:`~aseguide.constraints.Objective` (or its ``todict()``).

    Examples
    --------
    >>> from ase.build import bulk
    >>> from aseguide.constraints import VolumePerAtom
    >>> atoms = bulk("Si", "sc", a=3.0)  # 27 Å³/atom
    >>> atoms.calc = GuidanceCalculator(VolumePerAtom(target=25.0, loss="l2"))
    >>> round(atoms.get_potential_energy(), 6)  # (27 - 25)^2
    4.0
    >>> round(float(atoms.get_stress()[0]), 6)  # (1/V) dE/d eps_xx = 2 (27 - 25) 27 / 27
    4.0
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, objective: ObjectiveProtocol | dict[str, Any], **kwargs: Any) -> None:
        objective = objective_from_dict(objective)
        super().__init__(**kwargs)
        self.objective = objective
        self.parameters["objective"] = objective.todict()

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties or ["energy"], system_changes)
        energy, forces, stress = energy_forces_stress(self.objective, self.atoms)
        value = float(energy[0])
        self.results = {
            "energy": value,
            "free_energy": value,
            "forces": forces.cpu().numpy().astype(np.float64),
            "stress": stress[0].cpu().numpy().astype(np.float64),
        }
