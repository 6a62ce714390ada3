"""ASE calculators: guidance losses as energies, energy above hull, ML potentials."""

from aseguide.calculators.guidance import GuidanceCalculator

__all__ = ["GuidanceCalculator"]

# energy above hull, reference hulls, ML potentials (issue 5)
from aseguide.calculators.energy import EnergyAboveHull  # noqa: E402
from aseguide.calculators.hull import ReferenceHull  # noqa: E402
from aseguide.calculators.potentials import (  # noqa: E402
    ASECalculatorPotential,
    BatchedPotential,
    CHGNetPotential,
    MatterSimPotential,
    SevenNetPotential,
    get_calculator,
    get_potential,
)

__all__ += [
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
