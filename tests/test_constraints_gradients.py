"""torch.autograd.gradcheck of every objective w.r.t. positions, fractional coordinates and lattice."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms

from aseguide.constraints import (
    Combined,
    Coordination,
    CoordinationDistribution,
    MinDistance,
    Volume,
    VolumePerAtom,
)
from aseguide.state import CrystalBatch

pytestmark = pytest.mark.usefixtures("one_thread")


def random_batch(seed: int = 0) -> CrystalBatch:
    """Two small skewed cells with Cu/P/Si/Co/O atoms, no two atoms closer than 1.3 Å."""
    rng = np.random.default_rng(seed)
    crystals = []
    for n_atoms, symbols in ((5, ["Co", "O", "O", "Cu", "P"]), (6, ["Co", "Co", "O", "O", "Si", "Cu"])):
        cell = np.eye(3) * 3.6 + rng.normal(0.0, 0.3, (3, 3))
        while True:
            frac = rng.uniform(-0.5, 1.5, (n_atoms, 3))
            atoms = Atoms(symbols, positions=frac @ cell, cell=cell, pbc=True)
            distances = atoms.get_all_distances(mic=True)[np.triu_indices(n_atoms, 1)]
            if distances.min() > 1.3:
                break
        crystals.append(atoms)
    return CrystalBatch.from_atoms(crystals)


OBJECTIVES = [
    VolumePerAtom(10.0),
    Volume((20.0, 30.0), loss="l2"),
    Coordination("Co", "O", target=4.5, sharpness=3.0),
    Coordination("Co", ["O", "Co"], target=1.5, per_atom=True, loss="huber", delta=0.3, sharpness=3.0),
    Coordination("Cu", ["P", "Si"], target=0.5, kernel="gaussian", loss="l2"),
    CoordinationDistribution("Co", "O", {2: 0.5, 3: 0.5}, sharpness=3.0),
    CoordinationDistribution("Co", ["O", "Cu"], {1: 0.2, 3: 0.8}, divergence="wasserstein", sharpness=3.0),
    MinDistance(2.4),
    MinDistance({("Co", "O"): 2.6, ("Cu", "P"): 3.0}),
    Combined([Coordination("Co", "O", target=4.5, sharpness=3.0), VolumePerAtom(10.0), MinDistance(2.4)],
             weights=[1.0, 0.1, 2.0]),
    Combined([VolumePerAtom(10.0), MinDistance(2.4)], norm=math.inf),
]


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: o.name)
def test_gradcheck_positions_and_lattice(objective):
    batch = random_batch()
    losses = objective.loss(batch)
    assert bool((losses > 1e-6).all()), "test geometry must make every loss non-zero"
    positions = batch.positions.clone().requires_grad_(True)
    cell = batch.cell.clone().requires_grad_(True)

    def loss_of(positions: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        frac = torch.einsum("ni,nij->nj", positions, torch.linalg.inv(cell)[batch.batch])
        return objective.loss(batch.replace(frac=frac, cell=cell))

    assert torch.autograd.gradcheck(loss_of, (positions, cell), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("objective", [OBJECTIVES[i] for i in (3, 6, 7)], ids=lambda o: o.name)
def test_gradcheck_fractional_coordinates(objective):
    batch = random_batch(seed=1)
    frac = batch.frac.clone().requires_grad_(True)
    cell = batch.cell.clone().requires_grad_(True)

    def loss_of(frac: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        return objective.loss(batch.replace(frac=frac, cell=cell))

    assert torch.autograd.gradcheck(loss_of, (frac, cell), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_structures_do_not_couple():
    batch = random_batch()
    objective = OBJECTIVES[-2]
    frac = batch.frac.clone().requires_grad_(True)
    objective.loss(batch.replace(frac=frac))[0].backward()
    first = int(batch.num_atoms[0])
    assert float(frac.grad[:first].abs().sum()) > 0
    assert float(frac.grad[first:].abs().sum()) == 0.0


def test_float32_batch_gives_float32_loss():
    batch = random_batch().to(dtype=torch.float32)
    for objective in OBJECTIVES:
        loss = objective.loss(batch)
        assert loss.dtype == torch.float32 and loss.shape == (2,)
        assert torch.allclose(loss.double(), objective.loss(random_batch()), rtol=1e-4, atol=1e-5)
