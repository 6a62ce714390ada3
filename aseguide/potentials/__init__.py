"""ML interatomic potentials as batched, differentiable torch energies, and their registry."""

from aseguide.potentials.base import (
    ASECalculatorPotential,
    BatchedPotential,
    CHGNetPotential,
    MatterSimPotential,
    SevenNetPotential,
    get_calculator,
    get_potential,
)

__all__ = [
    "BatchedPotential",
    "MatterSimPotential",
    "CHGNetPotential",
    "SevenNetPotential",
    "ASECalculatorPotential",
    "get_calculator",
    "get_potential",
]
