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

Examples
--------
>>> from ase.build import bulk
>>> from aseguide.state import CrystalBatch
>>> from aseguide.potentials import get_potential
>>> pot = get_potential("chgnet")                                  # doctest: +SKIP
>>> batch = CrystalBatch.from_atoms([bulk("Si", cubic=True)])
>>> batch.frac.requires_grad_(True)                                 # doctest: +SKIP
>>> e = pot.energy_per_atom(batch)                                  # doctest: +SKIP
>>> e.sum().backward(); batch.frac.grad.shape                       # doctest: +SKIP
torch.Size([8, 3])
"""

from aseguide.potentials.ase_adapter import ASECalculatorPotential
from aseguide.potentials.base import BatchedPotential, TorchPotential
from aseguide.potentials.chgnet import CHGNetPotential
from aseguide.potentials.energies import compute_energies, total_energies
from aseguide.potentials.grace import grace_model_path
from aseguide.potentials.mattersim import MatterSimPotential
from aseguide.potentials.registry import POTENTIALS, canonical_name, get_calculator, get_potential
from aseguide.potentials.sevenn import SevenNetPotential

__all__ = [
    "POTENTIALS",
    "BatchedPotential",
    "TorchPotential",
    "MatterSimPotential",
    "CHGNetPotential",
    "SevenNetPotential",
    "ASECalculatorPotential",
    "canonical_name",
    "compute_energies",
    "get_calculator",
    "get_potential",
    "grace_model_path",
    "total_energies",
]
