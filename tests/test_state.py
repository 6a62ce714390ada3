"""Batched crystal state: exact round trips, device/dtype moves, bad input."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.io import read
from conftest import shared_data

from aseguide.state import CrystalBatch, symbols_to_numbers


def _real_structures():
    folder = shared_data("structures")
    return [read(path) for path in sorted(folder.glob("*.cif"))]


def test_round_trip_atoms_batch_atoms_is_exact_on_real_structures():
    structures = _real_structures()
    assert len(structures) >= 8
    batch = CrystalBatch.from_atoms(structures)
    assert batch.n_structures == len(structures)
    assert batch.n_atoms == sum(len(a) for a in structures)
    for original, back in zip(structures, batch.to_atoms()):
        assert back.get_chemical_symbols() == original.get_chemical_symbols()
        np.testing.assert_allclose(back.cell.array, original.cell.array, rtol=0, atol=1e-12)
        np.testing.assert_allclose(back.positions, original.positions, rtol=0, atol=1e-10)
        assert back.pbc.all()


def test_round_trip_structure_batch_structure_and_cross_formats():
    from pymatgen.io.ase import AseAtomsAdaptor

    structures = [AseAtomsAdaptor.get_structure(a) for a in _real_structures()]
    batch = CrystalBatch.from_structures(structures)
    for original, back in zip(structures, batch.to_structures()):
        assert back.species == original.species
        np.testing.assert_allclose(back.frac_coords, original.frac_coords, atol=1e-12)
        np.testing.assert_allclose(back.lattice.matrix, original.lattice.matrix, atol=1e-12)
    # Atoms -> batch -> Structure agrees with pymatgen's own adaptor
    atoms = _real_structures()
    via_batch = CrystalBatch.from_atoms(atoms).to_structures()
    for a, s in zip(atoms, via_batch):
        np.testing.assert_allclose(s.cart_coords, a.positions, atol=1e-10)


def test_batch_index_volume_positions_and_select():
    si, nacl = bulk("Si"), bulk("NaCl", "rocksalt", a=5.64)
    cu = bulk("Cu", cubic=True)
    batch = CrystalBatch.from_atoms([si, nacl, cu])
    assert batch.batch.tolist() == [0, 0, 1, 1, 2, 2, 2, 2]
    np.testing.assert_allclose(batch.volume().numpy(), [si.get_volume(), nacl.get_volume(), cu.get_volume()])
    np.testing.assert_allclose(batch.positions.numpy(), np.concatenate([si.positions, nacl.positions, cu.positions]),
                               atol=1e-12)
    picked = batch.select([2, 0])
    assert picked.num_atoms.tolist() == [4, 2]
    assert picked.numbers.tolist() == [29] * 4 + [14] * 2
    joined = CrystalBatch.concatenate([batch.select([0]), batch.select([1, 2])])
    assert torch.equal(joined.frac, batch.frac) and torch.equal(joined.numbers, batch.numbers)


def test_dtype_and_device_moves_keep_values():
    batch = CrystalBatch.from_atoms(bulk("Si"))
    single = batch.to(dtype=torch.float32)
    assert single.frac.dtype == torch.float32 and single.numbers.dtype == torch.long
    assert torch.allclose(single.to(dtype=torch.float64).cell, batch.cell, atol=1e-6)
    if torch.cuda.is_available():  # pragma: no cover - GPU machines only
        moved = batch.to("cuda")
        assert moved.frac.device.type == "cuda" and moved.batch.device.type == "cuda"


def test_wrapped_keeps_cartesian_images():
    atoms = bulk("Si")
    atoms.positions += 7.3  # unwrap
    batch = CrystalBatch.from_atoms(atoms)
    assert (batch.frac > 1).any()
    wrapped = batch.wrapped()
    assert ((wrapped.frac >= 0) & (wrapped.frac < 1)).all()
    diff = (batch.frac - wrapped.frac).numpy()
    np.testing.assert_allclose(diff, np.round(diff), atol=1e-12)


@pytest.mark.parametrize("pbc, word", [([True, True, False], "mixed"), (False, "no")])
def test_bad_periodicity_is_named(pbc, word):
    atoms = bulk("Si")
    atoms.pbc = pbc
    with pytest.raises(ValueError, match=f"{word} periodicity"):
        CrystalBatch.from_atoms(atoms)


def test_zero_volume_and_empty_structures_fail_clearly():
    flat = Atoms("C2", positions=[[0, 0, 0], [1, 0, 0]], cell=[[2, 0, 0], [0, 2, 0], [0, 0, 0]], pbc=True)
    with pytest.raises(ValueError, match="zero-volume"):
        CrystalBatch.from_atoms(flat)
    with pytest.raises(ValueError, match="no atoms"):
        CrystalBatch.from_atoms(Atoms(cell=np.eye(3), pbc=True))
    with pytest.raises(ValueError, match="no structures"):
        CrystalBatch.from_atoms([])


def test_unknown_elements_are_named():
    atoms = bulk("Si")
    atoms.numbers[0] = 0
    with pytest.raises(ValueError, match="unknown element"):
        CrystalBatch.from_atoms(atoms)
    with pytest.raises(ValueError, match="'Xx'"):
        symbols_to_numbers(["Co", "Xx"])
    assert symbols_to_numbers("O") == [8]


def test_inconsistent_tensors_are_rejected():
    with pytest.raises(ValueError, match="num_atoms sums to"):
        CrystalBatch(frac=torch.zeros(3, 3), cell=torch.eye(3)[None], numbers=torch.ones(3, dtype=torch.long),
                     num_atoms=torch.tensor([2]))
    with pytest.raises(ValueError, match="cell must have shape"):
        CrystalBatch(frac=torch.zeros(1, 3), cell=torch.eye(3), numbers=torch.ones(1, dtype=torch.long),
                     num_atoms=torch.tensor([1]))
