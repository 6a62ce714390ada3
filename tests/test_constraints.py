"""Targets, penalties, volume, minimum distance, combination, bad input, serialisation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.io.jsonio import decode, encode

from aseguide.constraints import (
    Combined,
    Coordination,
    CoordinationDistribution,
    MinDistance,
    Target,
    Volume,
    VolumePerAtom,
    distance_to_target,
    objective_from_dict,
    penalty,
)
from aseguide.state import CrystalBatch


def cube(edge: float, symbols: str = "C") -> Atoms:
    atoms = Atoms(symbols, cell=np.eye(3) * edge, pbc=True)
    atoms.set_scaled_positions(np.linspace(0.0, 0.5, len(atoms))[:, None] * np.ones(3))
    return atoms


def all_objectives():
    return [
        VolumePerAtom(10.0),
        Volume((30.0, math.inf), loss="l2"),
        Coordination("Co", "O", target=[(4, 4), (6, 6)], per_atom=True, loss="huber", delta=0.5),
        Coordination(["Cu"], ["P", "Si"], target=4, cutoff={("Cu", "P"): 2.5}, kernel="gaussian"),
        CoordinationDistribution("Co", "O", {4: 0.7, 6: 0.3}, divergence="wasserstein", max_count=9),
        MinDistance(1.2),
        MinDistance({("Cu", "P"): 2.0, ("Cu", "Cu"): 2.2}),
        MinDistance(1.5, pairs=[("Cu", "Cu")]),
        Combined([VolumePerAtom(10.0), MinDistance(1.0)], weights=[2.0, 0.5], norm=math.inf, strength=0.1),
    ]


# ---------------------------------------------------------------------------- targets
def test_target_forms_and_distance():
    values = torch.tensor([0.0, 3.0, 4.2, 5.5, 9.0], dtype=torch.float64)
    assert Target(4).distance(values).tolist() == pytest.approx([4.0, 1.0, 0.2, 1.5, 5.0])
    assert Target((3.5, 5)).distance(values).tolist() == pytest.approx([3.5, 0.5, 0.0, 0.5, 4.0])
    assert Target([(3, 3), (5, 6)]).distance(values).tolist() == pytest.approx([3.0, 0.0, 0.8, 0.0, 3.0])
    assert Target([3, (8, math.inf)]).distance(values).tolist() == pytest.approx([3.0, 0.0, 1.2, 2.5, 0.0])
    assert distance_to_target(values, [[1.0, 2.0]]).tolist() == pytest.approx([1.0, 1.0, 2.2, 3.5, 7.0])


@pytest.mark.parametrize(("text", "value"), [("4", 4.0), ("3..5", (3.0, 5.0)), (" 3 , 6..7", [(3, 3), (6, 7)]),
                                             ("2..", (2.0, math.inf)), ("..0.1", (None, 0.1))])
def test_target_from_text(text, value):
    assert Target(text, nonnegative=False) == Target(value, nonnegative=False)


@pytest.mark.parametrize("value", [4.0, (3.0, 5.0), [(3.0, 3.0), (6.0, 7.0)], (2.0, math.inf)])
def test_target_json_roundtrip(value):
    target = Target(value)
    assert Target(json.loads(json.dumps(target.tolist()))) == target


@pytest.mark.parametrize(
    ("value", "message"),
    [(-1, "negative target -1"), ((5, 3), "lo > hi"), ([3, 4, 6], "ambiguous target"), ("four", "target must be"), ("3..x", "target must be"),
     ("..", "target must be"),
     ([], "target must be"), ([(1, 2), "x"], "neither a number")],
)
def test_target_errors(value, message):
    with pytest.raises(ValueError, match=message):
        Target(value)


def test_penalties():
    x = torch.tensor([0.0, 0.5, 2.0], dtype=torch.float64)
    assert penalty(x, "l1").tolist() == [0.0, 0.5, 2.0]
    assert penalty(x, "l2").tolist() == [0.0, 0.25, 4.0]
    assert penalty(x, "huber", delta=1.0).tolist() == [0.0, 0.125, 1.5]
    with pytest.raises(ValueError, match="unknown loss 'l3'"):
        penalty(x, "l3")


# ---------------------------------------------------------------------------- volume
def test_volume_descriptors_and_losses():
    atoms = [bulk("Si"), bulk("NaCl", "rocksalt", a=5.64).repeat((1, 2, 1)), cube(3.0)]
    batch = CrystalBatch.from_atoms(atoms)
    volumes = np.array([a.get_volume() for a in atoms])
    per_atom = volumes / np.array([len(a) for a in atoms])
    assert Volume(10.0).descriptor(batch).numpy() == pytest.approx(volumes)
    assert VolumePerAtom(10.0).descriptor(atoms).numpy() == pytest.approx(per_atom)
    assert VolumePerAtom(10.0).loss(batch).numpy() == pytest.approx(np.abs(per_atom - 10.0))
    assert VolumePerAtom(10.0, loss="l2").loss(batch).numpy() == pytest.approx((per_atom - 10.0) ** 2)
    # 20.02, 22.43 and 27 Å³/atom against [20.5, 25] with tolerance 0.5
    assert VolumePerAtom((20.5, 25.0), tolerance=0.5).satisfied(batch).tolist() == [True, True, False]
    assert VolumePerAtom(27.4, tolerance=0.5).satisfied(cube(3.0)).tolist() == [True]
    assert VolumePerAtom(27.6, tolerance=0.5).satisfied(cube(3.0)).tolist() == [False]


# ---------------------------------------------------------------------------- min distance
def test_min_distance_loss_counts_each_contact_once():
    # one atom in a 1.5 Å cube: 6 images at 1.5, 12 at 2.12 (unordered contacts: 3 and 6)
    batch = CrystalBatch.from_atoms(cube(1.5))
    assert float(MinDistance(2.0).loss(batch)[0]) == pytest.approx(3 * 0.5**2)
    assert float(MinDistance(2.2).loss(batch)[0]) == pytest.approx(3 * 0.7**2 + 6 * (2.2 - 1.5 * 2**0.5) ** 2)
    assert float(MinDistance(1.4).loss(batch)[0]) == 0.0
    assert float(MinDistance(2.0).descriptor(batch)[0]) == pytest.approx(1.5)


def test_min_distance_per_pair_and_restricted():
    atoms = Atoms("CuPCu", positions=[[0, 0, 0], [1.8, 0, 0], [0, 2.1, 0]], cell=np.eye(3) * 10, pbc=True)
    batch = CrystalBatch.from_atoms(atoms)
    per_pair = MinDistance({("P", "Cu"): 2.0, ("Cu", "Cu"): 2.5})
    assert float(per_pair.loss(batch)[0]) == pytest.approx(0.2**2 + 0.4**2)
    only_cu = MinDistance(2.0, pairs=[("Cu", "Cu")])
    assert float(only_cu.loss(batch)[0]) == 0.0
    assert float(only_cu.descriptor(batch)[0]) == pytest.approx(2.1)
    assert only_cu.satisfied(batch).tolist() == [True]
    assert per_pair.satisfied(batch).tolist() == [False]
    assert MinDistance(2.0, tolerance=0.25).satisfied(batch).tolist() == [True]  # worst: 0.2 short
    lonely = MinDistance(1.0, pairs=[("Cu", "Cu")])
    assert float(lonely.descriptor(cube(10.0, "Cu"))[0]) == math.inf  # nothing within 2 r_min


# ---------------------------------------------------------------------------- combined
def test_combined_norms_and_parts():
    atoms = cube(2.0)  # 8 Å³, one atom; min distance 2.0
    batch = CrystalBatch.from_atoms(atoms)
    volume, contact = VolumePerAtom(5.0), MinDistance(2.5)  # losses 3 and 3 * 0.25 = 0.75
    l1, l2 = 3.0, 0.75
    assert float(Combined([volume, contact]).loss(batch)[0]) == pytest.approx(math.hypot(l1, l2))
    weighted = Combined([volume, contact], weights=[2.0, 4.0], norm=1)
    assert float(weighted.loss(batch)[0]) == pytest.approx(2 * l1 + 4 * l2)
    assert float(Combined([volume, contact], norm=3).loss(batch)[0]) == pytest.approx((l1**3 + l2**3) ** (1 / 3))
    assert float(Combined([volume, contact], weights=[0.1, 1.0], norm=math.inf).loss(batch)[0]) == pytest.approx(l2)
    parts = Combined([volume, contact, VolumePerAtom(8.0)]).parts(batch)
    assert list(parts) == ["VolumePerAtom", "MinDistance", "VolumePerAtom#2"]
    assert [float(v[0]) for v in parts.values()] == pytest.approx([l1, l2, 0.0])
    assert Combined([volume, VolumePerAtom(8.0)]).satisfied(batch).tolist() == [False]
    assert Combined([VolumePerAtom(8.0), MinDistance(1.9)]).satisfied(batch).tolist() == [True]


def test_combined_gradient_is_finite_when_all_parts_vanish():
    batch = CrystalBatch.from_atoms(cube(2.0))
    cell = batch.cell.clone().requires_grad_(True)
    Combined([VolumePerAtom(8.0), MinDistance(1.0)]).loss(batch.replace(cell=cell)).sum().backward()
    assert torch.isfinite(cell.grad).all()


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Coordination("Xx", "O", target=4), "unknown element 'Xx'"),
        (lambda: Coordination("Co", ["O", "Qq"], target=4), "unknown element 'Qq'"),
        (lambda: Coordination("Co", [], target=4), "neighbor species list is empty"),
        (lambda: Coordination("Co", "O", target=4, cutoff=0.0), "cutoff must be positive, got 0.0"),
        (lambda: Coordination("Co", "O", target=4, cutoff=-2), "cutoff must be positive, got -2"),
        (lambda: Coordination("Co", "O", target=4, cutoff={("Co", "O"): -1.0}), "cutoff must be positive"),
        (lambda: Coordination("Co", "O", target=4, cutoff={("O", "Co"): 2.0}), "not a center-neighbor pair"),
        (lambda: Coordination("Co", "O", target=-1), "negative target -1"),
        (lambda: Coordination("Co", "O", target=(-1, 3)), "negative target -1"),
        (lambda: Coordination("Co", "O", target=4, kernel="box"), "unknown kernel 'box'"),
        (lambda: Coordination("Co", "O", target=4, loss="l3"), "unknown loss 'l3'"),
        (lambda: Coordination("Co", "O", target=4, kernel="gaussian", sharpness=3.0), "sigmoid kernel only"),
        (lambda: Coordination("Co", "O", target=4, sharpness=0), "sharpness must be positive"),
        (lambda: CoordinationDistribution("Co", "O", {4: 1}, divergence="kl"), "unknown divergence 'kl'"),
        (lambda: CoordinationDistribution("Co", "O", {4: -1}), "non-negative weights"),
        (lambda: CoordinationDistribution("Co", "O", [0, 0]), "not all zero"),
        (lambda: CoordinationDistribution("Co", "O", {"four": 1}), "not an integer count"),
        (lambda: CoordinationDistribution("Co", "O", {8: 1}, max_count=5), "max_count=5"),
        (lambda: VolumePerAtom(-3.0), "volume target -3.0 is not positive"),
        (lambda: VolumePerAtom(3.0, tolerance=-1), "tolerance must be non-negative"),
        (lambda: VolumePerAtom(3.0, strength=-1), "strength must be non-negative"),
        (lambda: MinDistance(0.0), "r_min must be positive, got 0.0"),
        (lambda: MinDistance({("Cu", "P"): -1.0}), "r_min must be positive, got -1.0 for Cu-P"),
        (lambda: MinDistance(1.0, pairs=[("Cu", "Zz")]), "unknown element 'Zz'"),
        (lambda: Combined([]), "at least one objective, got an empty list"),
        (lambda: Combined([VolumePerAtom(3.0)], weights=[1.0, 2.0]), "2 weights for 1 objectives"),
        (lambda: Combined([VolumePerAtom(3.0)], norm=0.5), "norm must be >= 1"),
    ],
)
def test_bad_input_raises_clear_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()


# ---------------------------------------------------------------------------- serialisation
@pytest.mark.parametrize("objective", all_objectives(), ids=lambda o: o.name)
def test_todict_roundtrip_through_json(objective):
    description = objective.todict()
    assert description["name"] == type(objective).__name__
    rebuilt = objective_from_dict(decode(encode(description)))
    assert rebuilt == objective
    assert rebuilt.todict() == description
    assert objective.copy() == objective and objective.copy() is not objective
    batch = CrystalBatch.from_atoms([bulk("Cu", "fcc", a=3.0), cube(2.5, "CoO")])
    assert torch.equal(rebuilt.loss(batch), objective.loss(batch))


def test_objective_from_dict_rejects_foreign_names():
    with pytest.raises(ValueError, match="not an aseguide objective"):
        objective_from_dict({"name": "FixAtoms", "kwargs": {}})


def test_descriptor_accepts_atoms_structures_and_batches():
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = [bulk("NaCl", "rocksalt", a=5.64), cube(2.0)]
    objective = Coordination("Na", "Cl", target=6, sharpness=100.0)
    from_atoms = objective.descriptor(atoms)
    from_structures = objective.descriptor([AseAtomsAdaptor.get_structure(a) for a in atoms])
    from_batch = objective.descriptor(CrystalBatch.from_atoms(atoms))
    assert from_atoms.dtype == torch.float64
    assert from_atoms.tolist() == pytest.approx([6.0, 0.0])
    assert torch.allclose(from_atoms, from_structures) and torch.allclose(from_atoms, from_batch)
    assert objective.satisfied(atoms).tolist() == [True, False]  # no Na in the second: never satisfied
