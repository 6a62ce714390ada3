"""ASE calculators: guidance losses as energies, energy above hull; the public face of potentials and hulls.

* :class:`GuidanceCalculator` — any objective's loss as an ASE energy (forces and stress
  by autograd);
* :class:`EnergyAboveHull` — the calculator view of the energy-above-hull objective
  (:class:`aseguide.constraints.EnergyAboveHull`).

Re-exported here for the public face (their home is below the objectives):

* :class:`ReferenceHull` — reference convex hulls (tables, entries, structures + a
  potential, the Materials Project), from :mod:`aseguide.thermo`;
* :func:`get_calculator` / :func:`get_potential` — ML potentials by name (``"chgnet"``,
  ``"mattersim"``, ``"sevenn"``, ``"grace"``) or any ASE calculator, from
  :mod:`aseguide.potentials`.
"""

from aseguide.calculators.energy import EnergyAboveHull
from aseguide.calculators.guidance import GuidanceCalculator
from aseguide.potentials import (
    ASECalculatorPotential,
    BatchedPotential,
    CHGNetPotential,
    MatterSimPotential,
    SevenNetPotential,
    get_calculator,
    get_potential,
)
from aseguide.thermo import ReferenceHull

__all__ = [
    "GuidanceCalculator",
    "EnergyAboveHull",
    "ReferenceHull",
    "get_calculator",
    "get_potential",
    "BatchedPotential",
    "MatterSimPotential",
    "CHGNetPotential",
    "SevenNetPotential",
    "ASECalculatorPotential",
]
