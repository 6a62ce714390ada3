"""GuidanceCalculator: energy = loss, forces and stress against finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.calculators.mixing import LinearCombinationCalculator

from aseguide.calculators import GuidanceCalculator
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


def skewed_crystal() -> Atoms:
    rng = np.random.default_rng(4)
    cell = np.array([[3.9, 0.0, 0.0], [1.1, 3.7, 0.0], [-0.6, 0.8, 4.1]])
    frac = np.array([[0.0, 0.0, 0.0], [0.48, 0.52, 0.1], [0.1, 0.45, 0.55], [0.6, 0.05, 0.5], [1.3, -0.2, 0.8]])
    frac += rng.normal(0, 0.03, frac.shape)
    return Atoms("CoOOCuP", positions=frac @ cell, cell=cell, pbc=True)


OBJECTIVES = [
    VolumePerAtom(10.0, loss="l2"),
    Volume(50.0),
    Coordination("Co", ["O", "P"], target=5, sharpness=4.0, loss="huber", delta=0.5),
    Coordination("Cu", "O", target=3, kernel="gaussian", per_atom=True),
    CoordinationDistribution("Co", "O", {3: 1.0}, sharpness=4.0),
    MinDistance(2.3),
    Combined([Coordination("Co", "O", target=5, sharpness=4.0), MinDistance(2.3), VolumePerAtom(12.0)]),
]


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: o.name)
def test_energy_forces_stress_against_finite_differences(objective):
    atoms = skewed_crystal()
    atoms.calc = GuidanceCalculator(objective)
    energy = atoms.get_potential_energy()
    assert energy == pytest.approx(float(objective.loss(CrystalBatch.from_atoms(atoms))[0]), rel=1e-12)
    assert energy > 1e-3
    forces = atoms.get_forces()
    assert forces == pytest.approx(calculate_numerical_forces(atoms, eps=1e-5), abs=1e-6)
    stress = atoms.get_stress()
    assert stress == pytest.approx(calculate_numerical_stress(atoms, eps=1e-6), abs=1e-6)
    assert np.abs(forces.sum(axis=0)).max() < 1e-9  # translation invariance


def test_volume_stress_sign_and_value():
    # E = |V - V*| with V > V*: dE/d eps = V * identity, stress = identity (ASE: positive = wants to shrink)
    atoms = Atoms("C", cell=np.diag([2.0, 3.0, 4.0]), pbc=True)
    atoms.calc = GuidanceCalculator(Volume(10.0))
    assert atoms.get_potential_energy() == pytest.approx(14.0)
    assert atoms.get_stress() == pytest.approx([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    assert atoms.get_forces() == pytest.approx(np.zeros((1, 3)))
    atoms.calc = GuidanceCalculator(VolumePerAtom(30.0, loss="l2"))  # E = (V - 30)^2, V = 24
    assert atoms.get_stress()[:3] == pytest.approx([2 * (24 - 30.0) * 24 / 24] * 3)


def test_forces_of_a_dimer_point_along_the_bond():
    atoms = Atoms("CO", positions=[[0, 0, 0], [1.5, 0, 0]], cell=np.eye(3) * 12, pbc=True)
    atoms.calc = GuidanceCalculator(MinDistance(2.0))  # E = (2 - d)^2, pushes atoms apart
    forces = atoms.get_forces()
    assert forces[1] == pytest.approx([2 * 0.5, 0, 0])
    assert forces[0] == pytest.approx([-2 * 0.5, 0, 0])


def test_calculator_roundtrip_and_mixing():
    objective = Coordination("Co", "O", target=4)
    calc = GuidanceCalculator(objective.todict())
    assert calc.objective == objective
    assert calc.todict()["objective"] == objective.todict()
    atoms = skewed_crystal()
    atoms.calc = LinearCombinationCalculator([GuidanceCalculator(objective)], [0.25])
    expected = 0.25 * float(objective.loss(CrystalBatch.from_atoms(atoms))[0])
    assert atoms.get_potential_energy() == pytest.approx(expected)
    assert math.isfinite(atoms.get_stress().sum())
