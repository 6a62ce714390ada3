"""Coordination objectives: hand counts on real crystals, invariances, formulas."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, make_supercell
from ase.io import read
from ase.lattice.hexagonal import Graphite
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from aseguide.constraints import (
    WEIGHT_FLOOR,
    Coordination,
    CoordinationDistribution,
    default_cutoff,
    jensen_shannon_divergence,
    wasserstein_distance_1d,
)
from aseguide.state import CrystalBatch

STRUCTURES = Path(__file__).parents[1].parent / "shared" / "data" / "structures"
LICOO2 = STRUCTURES / "LiCoO2_R-3m_primitive_from_tchen0965_structural_descriptors_repo.cif"
ND2FE14B = STRUCTURES / "Nd2Fe14B_reconstructed_Herbst1984.cif"
HARD = 100.0  # sigmoid sharpness (1/Å) giving hard counts


def structure_file(path: Path) -> Atoms:
    if not path.exists():
        pytest.skip(f"reference structure {path.name} not found under {STRUCTURES} (shared data absent)")
    return read(path)


def diamond() -> Atoms:
    return bulk("C", "diamond", a=3.567)


def graphite() -> Atoms:
    return Graphite(symbol="C", latticeconstant={"a": 2.46, "c": 6.70})


def rocksalt() -> Atoms:
    return bulk("NaCl", "rocksalt", a=5.64)


def mean_count(objective: Coordination, atoms: Atoms) -> float:
    return float(objective.descriptor(atoms)[0])


# ---------------------------------------------------------------------------- hand counts
@pytest.mark.parametrize(
    ("build", "center", "neighbor", "expected"),
    [
        (diamond, "C", "C", 4.0),
        (graphite, "C", "C", 3.0),
        (rocksalt, "Na", "Cl", 6.0),
        (rocksalt, "Cl", "Na", 6.0),
        (rocksalt, "Na", "Na", 0.0),
    ],
)
def test_hard_counts_built_crystals(build, center, neighbor, expected):
    objective = Coordination(center, neighbor, target=expected, sharpness=HARD)
    assert mean_count(objective, build()) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("path", "center", "neighbor", "expected"),
    [(LICOO2, "Co", "O", 6.0), (LICOO2, "Li", "O", 6.0), (ND2FE14B, "B", "Fe", 6.0)],
)
def test_hard_counts_reference_files(path, center, neighbor, expected):
    atoms = structure_file(path)
    objective = Coordination(center, neighbor, target=expected, sharpness=HARD)
    counts = objective.counts(atoms).numpy()
    is_center = np.array(atoms.get_chemical_symbols()) == center
    assert counts[is_center] == pytest.approx(expected, abs=1e-6)  # every centre atom, not only the mean
    assert (counts[~is_center] == 0).all()
    assert bool(objective.satisfied(atoms)[0])


def test_default_cutoff_uses_covalent_radii_plus_half_angstrom():
    assert default_cutoff("Co", "O") == pytest.approx(1.26 + 0.66 + 0.5)
    assert default_cutoff("B", "Fe") == pytest.approx(0.84 + 1.32 + 0.5)
    objective = Coordination(["Cu"], ["P", "Si"], target=4)
    assert objective.counter.cutoffs == {(29, 15): pytest.approx(1.32 + 1.07 + 0.5),
                                         (29, 14): pytest.approx(1.32 + 1.11 + 0.5)}


# ---------------------------------------------------------------------------- kernel formulas
def dimer(distance: float) -> Atoms:
    return Atoms("CO", positions=[[0, 0, 0], [distance, 0, 0]], cell=np.eye(3) * 12.0, pbc=True)


@pytest.mark.parametrize("distance", [1.6, 2.0, 2.3])
def test_sigmoid_weight_value(distance):
    cutoff, sharpness = 2.0, 5.0
    objective = Coordination("C", "O", target=1, cutoff=cutoff, sharpness=sharpness)
    raw = 1.0 / (1.0 + math.exp(-sharpness * (cutoff - distance)))
    expected = (raw - WEIGHT_FLOOR) / (1.0 - WEIGHT_FLOOR)
    assert mean_count(objective, dimer(distance)) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("distance", [1.0, 2.0, 3.5])
def test_gaussian_weight_is_half_at_cutoff(distance):
    cutoff = 2.0
    objective = Coordination("C", "O", target=1, cutoff=cutoff, kernel="gaussian")
    raw = math.exp(-math.log(2.0) * (distance / cutoff) ** 2)
    expected = max(0.0, (raw - WEIGHT_FLOOR) / (1.0 - WEIGHT_FLOOR))
    assert mean_count(objective, dimer(distance)) == pytest.approx(expected, rel=1e-10)


def test_weight_reaches_zero_at_search_radius():
    objective = Coordination("C", "O", target=1, cutoff=2.0, sharpness=5.0)
    radius = objective.counter.search_radius
    assert radius == pytest.approx(2.0 + math.log((1 - WEIGHT_FLOOR) / WEIGHT_FLOOR) / 5.0)
    assert mean_count(objective, dimer(radius - 1e-6)) == pytest.approx(0.0, abs=1e-8)
    assert mean_count(objective, dimer(radius - 0.05)) > 0.0


def test_images_of_the_centre_itself_are_counted():
    # simple cubic, one atom, a = 2.0: six images at 2.0 Å
    atoms = Atoms("C", cell=np.eye(3) * 2.0, pbc=True)
    assert mean_count(Coordination("C", "C", target=6, cutoff=2.3, sharpness=HARD), atoms) == pytest.approx(6.0)


def test_species_groups_add_up():
    atoms = rocksalt().repeat(2)
    symbols = atoms.get_chemical_symbols()
    for index in [1, 5, 9]:  # some Cl -> Br
        assert symbols[index] == "Cl"
        symbols[index] = "Br"
    atoms.set_chemical_symbols(symbols)
    group = Coordination("Na", ["Cl", "Br"], target=6, sharpness=HARD)
    chlorine = Coordination("Na", "Cl", target=6, sharpness=HARD)
    bromine = Coordination("Na", "Br", target=6, sharpness=HARD)
    assert mean_count(group, atoms) == pytest.approx(6.0)
    assert mean_count(chlorine, atoms) + mean_count(bromine, atoms) == pytest.approx(6.0)
    assert mean_count(bromine, atoms) == pytest.approx(6 * 3 / 8)  # 3 of 8 anions are Br


# ---------------------------------------------------------------------------- invariances
def soft_objective() -> Coordination:
    return Coordination("Co", "O", target=4, sharpness=4.0)  # soft: every distance matters


def test_invariant_to_supercells_translations_wrapping_and_cell_choice():
    atoms = structure_file(LICOO2)
    objective = soft_objective()
    reference = mean_count(objective, atoms)
    assert 5.0 < reference < 6.0

    supercell = make_supercell(atoms, [[2, 0, 0], [0, 1, 1], [0, 0, 3]])
    translated = atoms.copy()
    translated.translate([0.37, -1.2, 2.9])
    rewrapped = atoms.copy()
    rng = np.random.default_rng(0)
    rewrapped.set_scaled_positions(atoms.get_scaled_positions() + rng.integers(-3, 4, (len(atoms), 3)))
    skewed = make_supercell(atoms, [[1, 2, 0], [0, 1, 0], [-1, 1, 1]])  # unimodular: same crystal, skewed cell
    assert len(skewed) == len(atoms)
    rotated_order = atoms[[3, 1, 0, 2]]
    batch = CrystalBatch.from_atoms([atoms, supercell, translated, rewrapped, skewed, rotated_order])
    values = objective.descriptor(batch)
    assert values.numpy() == pytest.approx(reference, abs=1e-9)
    assert objective.loss(batch).numpy() == pytest.approx(float(objective.loss(batch)[0]), abs=1e-9)


def test_per_atom_loss_formula_on_inequivalent_sites():
    atoms = structure_file(ND2FE14B)
    plain = Coordination("Fe", "Fe", target=9, sharpness=HARD, loss="l2")
    per_atom = Coordination("Fe", "Fe", target=9, sharpness=HARD, loss="l2", per_atom=True)
    counts = plain.counts(atoms).numpy()[np.array(atoms.get_chemical_symbols()) == "Fe"]
    assert len(set(np.round(counts, 6))) > 1  # Fe sites differ
    batch = CrystalBatch.from_atoms(atoms)
    assert float(plain.loss(batch)[0]) == pytest.approx((counts.mean() - 9) ** 2)
    assert float(per_atom.loss(batch)[0]) == pytest.approx(((counts - 9) ** 2).mean())
    # satisfied: the mean may be within tolerance while single atoms are not
    wide = Coordination("Fe", "Fe", target=round(counts.mean()), sharpness=HARD, tolerance=0.5)
    strict = Coordination("Fe", "Fe", target=round(counts.mean()), sharpness=HARD, tolerance=0.5, per_atom=True)
    assert bool(wide.satisfied(atoms)[0]) is True
    assert bool(strict.satisfied(atoms)[0]) is False


def test_interval_and_set_targets_have_zero_loss_inside():
    batch = CrystalBatch.from_atoms([diamond(), graphite()])
    inside_both = Coordination("C", "C", target=(2.5, 4.5), sharpness=HARD)
    assert inside_both.loss(batch).tolist() == pytest.approx([0.0, 0.0], abs=1e-9)
    only_four = Coordination("C", "C", target=[(4, 4), (6, 8)], sharpness=HARD, loss="l2")
    assert only_four.loss(batch).tolist() == pytest.approx([0.0, 1.0], abs=1e-6)
    at_least_five = Coordination("C", "C", target=(5, math.inf), sharpness=HARD)
    assert at_least_five.loss(batch).tolist() == pytest.approx([1.0, 2.0], abs=1e-6)


def test_absent_centre_species_gives_zero_loss_and_no_nan():
    batch = CrystalBatch.from_atoms([diamond(), rocksalt()])
    frac = batch.frac.clone().requires_grad_(True)
    cell = batch.cell.clone().requires_grad_(True)
    for objective in (
        Coordination("Na", "Cl", target=4, per_atom=False),
        Coordination("Na", "Cl", target=4, per_atom=True),
        CoordinationDistribution("Na", "Cl", {4: 1.0}),
    ):
        loss = objective.loss(batch.replace(frac=frac, cell=cell))
        assert float(loss[0].detach()) == 0.0 and float(loss[1].detach()) > 0.0
        frac.grad = cell.grad = None
        loss.sum().backward()
        assert torch.isfinite(frac.grad).all() and torch.isfinite(cell.grad).all()
        assert float(frac.grad[:2].abs().sum()) == 0.0  # no gradient on the structure without Na
        assert float(objective.descriptor(batch)[0]) == 0.0
        assert bool(objective.satisfied(batch)[0]) is False


# ---------------------------------------------------------------------------- distributions
@pytest.mark.parametrize("seed", range(4))
def test_divergences_match_scipy(seed):
    rng = np.random.default_rng(seed)
    p = rng.random(9) * (rng.random(9) > 0.3)
    q = rng.random(9) * (rng.random(9) > 0.3)
    p[0] += 0.1
    q[-1] += 0.1
    p, q = p / p.sum(), q / q.sum()
    js = float(jensen_shannon_divergence(torch.tensor(p), torch.tensor(q)))
    assert js == pytest.approx(jensenshannon(p, q) ** 2, rel=1e-10)
    bins = np.arange(9)
    w1 = float(wasserstein_distance_1d(torch.tensor(p), torch.tensor(q)))
    assert w1 == pytest.approx(wasserstein_distance(bins, bins, p, q), rel=1e-10)


def test_divergence_gradient_finite_on_empty_bins():
    p = torch.tensor([0.0, 0.5, 0.5, 0.0], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    jensen_shannon_divergence(p, q).backward()
    assert torch.isfinite(p.grad).all()


def test_distribution_histogram_matches_hard_counts():
    atoms = structure_file(ND2FE14B)
    # Fe-Fe distances: ... 2.79, 3.11 Å; a cutoff in the gap gives integer counts
    objective = CoordinationDistribution("Fe", "Fe", {9: 1.0}, cutoff=2.95, sharpness=HARD)
    counts = Coordination("Fe", "Fe", target=9, cutoff=2.95, sharpness=HARD).counts(atoms).numpy()
    fe_counts = np.rint(counts[np.array(atoms.get_chemical_symbols()) == "Fe"]).astype(int)
    expected = np.bincount(fe_counts, minlength=objective.max_count + 1) / len(fe_counts)
    histogram = objective.histogram(atoms)[0].numpy()
    assert histogram == pytest.approx(expected, abs=1e-6)
    target = np.zeros_like(expected)
    target[9] = 1.0
    assert float(objective.descriptor(atoms)[0]) == pytest.approx(jensenshannon(expected, target) ** 2, abs=1e-6)


def test_distribution_objective_values():
    batch = CrystalBatch.from_atoms([diamond(), graphite()])
    js = CoordinationDistribution("C", "C", {4: 1.0}, sharpness=HARD)
    wasserstein = CoordinationDistribution("C", "C", [0, 0, 0, 0, 1.0], divergence="wasserstein", sharpness=HARD)
    assert js.loss(batch).tolist() == pytest.approx([0.0, math.log(2.0)], abs=1e-6)  # disjoint supports
    assert wasserstein.loss(batch).tolist() == pytest.approx([0.0, 1.0], abs=1e-6)  # 3 -> 4: one unit
    half = CoordinationDistribution("C", "C", {3: 0.5, 4: 0.5}, divergence="wasserstein", sharpness=HARD)
    assert half.loss(batch).tolist() == pytest.approx([0.5, 0.5], abs=1e-6)
    assert js.satisfied(batch).tolist() == [True, False]


def test_mean_target_vs_distribution_target():
    # one Co 3-fold and one Co 5-fold: a mean of 4 is met, a distribution at 4 is not
    arms = np.array([[1.5, 0, 0], [0, 1.5, 0], [0, 0, 1.5], [-1.5, 0, 0], [0, -1.5, 0]])
    first, second = np.zeros(3), np.full(3, 7.0)
    positions = [first, *(first + arms[:3]), second, *(second + arms)]
    atoms = Atoms("CoO3CoO5", positions=positions, cell=np.eye(3) * 15.0, pbc=True)
    mean = Coordination("Co", "O", target=4, cutoff=2.0, sharpness=HARD)
    distribution = CoordinationDistribution("Co", "O", {4: 1.0}, cutoff=2.0, sharpness=HARD)
    assert mean.counts(atoms)[[0, 4]].tolist() == pytest.approx([3.0, 5.0])
    assert float(mean.loss(CrystalBatch.from_atoms(atoms))[0]) == pytest.approx(0.0, abs=1e-9)
    assert float(distribution.descriptor(atoms)[0]) == pytest.approx(math.log(2.0), abs=1e-6)
