"""Periodic neighbour search: against ASE's neighbour list on awkward cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.neighborlist import neighbor_list as ase_neighbor_list

from aseguide.neighbors import MAX_IMAGES_PER_AXIS, neighbor_list
from aseguide.state import CrystalBatch


def random_crystals(seed: int, count: int, frac_range=(-2.0, 3.0)) -> list[Atoms]:
    """Skewed cells of 1-11 atoms, some smaller than the cutoff, unwrapped coordinates."""
    rng = np.random.default_rng(seed)
    crystals = []
    while len(crystals) < count:
        n_atoms = int(rng.integers(1, 12))
        cell = np.diag(rng.uniform(1.8, 7.0, 3)) + rng.normal(0.0, 1.2, (3, 3))
        # reject nearly degenerate cells (plane spacing below 0.8 Å)
        if np.min(1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0)) < 0.8:
            continue
        frac = rng.uniform(*frac_range, (n_atoms, 3))
        crystals.append(Atoms(numbers=rng.integers(1, 10, n_atoms), positions=frac @ cell, cell=cell, pbc=True))
    return crystals


def pair_sets(pairs, batch: CrystalBatch, crystals: list[Atoms]):
    distances = pairs.distances(batch.frac, batch.cell).detach().numpy()
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in crystals])])
    ours = []
    for s in range(len(crystals)):
        in_s = pairs.structure.numpy() == s
        ours.append(sorted(zip(pairs.first.numpy()[in_s] - offsets[s], pairs.second.numpy()[in_s] - offsets[s],
                               np.round(distances[in_s], 7))))
    return ours


@pytest.mark.parametrize("cutoff", [1.0, 3.0, 5.5])
def test_matches_ase_on_skewed_small_unwrapped_cells(cutoff):
    crystals = random_crystals(seed=int(cutoff * 10), count=25)
    batch = CrystalBatch.from_atoms(crystals)
    pairs = neighbor_list(batch, cutoff)
    ours = pair_sets(pairs, batch, crystals)
    for s, atoms in enumerate(crystals):
        i, j, d = ase_neighbor_list("ijd", atoms, cutoff)
        reference = sorted(zip(i, j, np.round(d, 7)))
        assert len(ours[s]) == len(reference), f"structure {s}"
        assert ours[s] == reference, f"structure {s}"


def test_shifts_are_valid_for_unwrapped_coordinates():
    crystals = random_crystals(seed=3, count=10, frac_range=(-5.0, 6.0))
    batch = CrystalBatch.from_atoms(crystals)
    pairs = neighbor_list(batch, 4.0)
    assert pairs.shift.dtype == torch.long
    # vectors from the unwrapped coordinates and the returned shifts = positions difference + S @ cell
    positions = batch.positions
    expected = positions[pairs.second] - positions[pairs.first] + torch.einsum(
        "pi,pij->pj", pairs.shift.double(), batch.cell[pairs.structure]
    )
    assert torch.allclose(pairs.vectors(batch.frac, batch.cell), expected, atol=1e-9)
    assert float(pairs.distances(batch.frac, batch.cell).max()) <= 4.0 + 1e-9


def test_self_pair_excluded_but_own_images_kept():
    atoms = Atoms("C", cell=np.diag([2.0, 2.5, 3.0]), pbc=True)  # one atom, cell below the cutoff
    batch = CrystalBatch.from_atoms(atoms)
    pairs = neighbor_list(batch, 3.1)
    distances = sorted(np.round(pairs.distances(batch.frac, batch.cell).numpy(), 6).tolist())
    # images at 2 (x2), 2.5 (x2), 3 (x2), sqrt(2^2 + 2.5^2) = 3.2 is out
    assert distances == [2.0, 2.0, 2.5, 2.5, 3.0, 3.0]
    assert bool(((pairs.first == pairs.second) & (pairs.shift == 0).all(1)).any()) is False


def test_images_many_cells_away_in_a_tiny_cell():
    # 1 Å cubic cell, cutoff 3.5 Å: needs 4 images on each side along every axis
    atoms = Atoms("H", cell=np.eye(3), pbc=True)
    batch = CrystalBatch.from_atoms(atoms)
    pairs = neighbor_list(batch, 3.5)
    grid = np.arange(-4, 5)
    n = np.stack(np.meshgrid(grid, grid, grid), -1).reshape(-1, 3)
    expected = int(((np.linalg.norm(n, axis=1) <= 3.5) & (np.abs(n).sum(1) > 0)).sum())
    assert pairs.n_pairs == expected
    assert int(pairs.shift.abs().max()) == 3


def test_mixed_batch_uses_per_structure_image_ranges():
    small = Atoms("H", cell=np.eye(3) * 1.5, pbc=True)
    large = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(3)
    batch = CrystalBatch.from_atoms([small, large, small])
    pairs = neighbor_list(batch, 3.0)
    counts = torch.bincount(pairs.structure, minlength=3).tolist()
    # small: neighbours at 1.5 (6), 2.12 (12), 2.6 (8), 3.0 (6) -> 32; fcc a=3.6: 12 nearest per atom within 3.0
    assert counts == [32, 108 * 12, 32]


def test_masks_restrict_first_and_second():
    atoms = bulk("NaCl", "rocksalt", a=5.64).repeat((2, 1, 1))
    batch = CrystalBatch.from_atoms(atoms)
    is_na = batch.numbers == 11
    pairs = neighbor_list(batch, 3.0, centers=is_na, neighbors=~is_na)
    assert pairs.n_pairs == 2 * 6
    assert bool((batch.numbers[pairs.first] == 11).all())
    assert bool((batch.numbers[pairs.second] == 17).all())
    assert neighbor_list(batch, 3.0, centers=is_na, neighbors=torch.zeros_like(is_na)).n_pairs == 0


def test_gradients_flow_to_frac_and_cell():
    crystals = random_crystals(seed=7, count=2)
    batch = CrystalBatch.from_atoms(crystals)
    pairs = neighbor_list(batch, 2.5)
    assert pairs.n_pairs > 10

    def total_distance(frac, cell):
        return pairs.distances(frac, cell).sum()

    frac = batch.frac.clone().requires_grad_(True)
    cell = batch.cell.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(total_distance, (frac, cell))
    total_distance(frac, cell).backward()
    assert float(frac.grad.abs().sum()) > 0 and float(cell.grad.abs().sum()) > 0


def test_coincident_atoms_have_finite_gradient():
    atoms = Atoms("C2", positions=[[0, 0, 0], [0, 0, 0]], cell=np.eye(3) * 5, pbc=True)
    batch = CrystalBatch.from_atoms(atoms)
    pairs = neighbor_list(batch, 1.0)
    frac = batch.frac.clone().requires_grad_(True)
    pairs.distances(frac, batch.cell).sum().backward()
    assert torch.isfinite(frac.grad).all()


def test_bad_cutoff_and_degenerate_cell():
    batch = CrystalBatch.from_atoms(bulk("Si"))
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="cutoff must be positive"):
            neighbor_list(batch, bad)
    flat = Atoms("H", cell=[[5, 0, 0], [0, 5, 0], [0, 0, 0.1]], pbc=True)
    with pytest.warns(RuntimeWarning, match="degenerate cell"):
        neighbor_list(CrystalBatch.from_atoms(flat), 0.2 * (MAX_IMAGES_PER_AXIS + 2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_periodic_image_count_is_the_box_of_plane_spacings(seed):
    from aseguide.neighbors import periodic_image_count

    rng = np.random.default_rng(seed)
    cell = np.eye(3) * rng.uniform(2.0, 6.0, 3) + rng.normal(scale=1.5, size=(3, 3))
    cutoff = 5.0
    spacing = abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(np.roll(cell, -1, 0), np.roll(cell, -2, 0)), axis=1)
    expected = np.prod(2 * np.ceil(cutoff / spacing) + 1)
    assert periodic_image_count(cell, cutoff) == expected
    assert periodic_image_count(np.zeros((3, 3)), cutoff) == np.iinfo(np.int64).max


def test_skewed_basis_is_searched_reduced_without_truncation():
    """A lattice written in a basis with planes 0.05 Å apart: the same pairs as its plain basis."""
    import warnings

    diamond = bulk("C", "diamond", a=3.567, cubic=True)
    change = np.array([[1, 0, 0], [37, 1, 0], [-29, 41, 1]])  # integer, unimodular
    skewed = Atoms("C8", positions=diamond.positions, cell=change @ diamond.cell[:], pbc=True)
    spacing = 1.0 / np.linalg.norm(np.linalg.inv(skewed.cell[:]), axis=0)
    assert spacing.min() < 1.55 / MAX_IMAGES_PER_AXIS  # would be truncated without the reduction
    crystals = [bulk("Si"), skewed, diamond]
    batch = CrystalBatch.from_atoms(crystals)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        pairs = neighbor_list(batch, 1.6)
    ours = pair_sets(pairs, batch, crystals)
    assert len(ours[1]) == 8 * 4  # four C-C bonds of 1.545 Å per atom
    assert ours[1] == ours[2]
    # the shifts are in the batch's (skewed) basis, valid for its coordinates
    expected = batch.positions[pairs.second] - batch.positions[pairs.first] + torch.einsum(
        "pi,pij->pj", pairs.shift.double(), batch.cell[pairs.structure])
    assert torch.allclose(pairs.vectors(batch.frac, batch.cell), expected, atol=1e-8)
