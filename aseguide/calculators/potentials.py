"""Old path of :mod:`aseguide.potentials` (ML potentials as batched torch energies), kept for compatibility."""

from aseguide.potentials import (
    POTENTIALS,
    ASECalculatorPotential,
    BatchedPotential,
    CHGNetPotential,
    MatterSimPotential,
    SevenNetPotential,
    TorchPotential,
    get_calculator,
    get_potential,
    grace_model_path,
)

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
