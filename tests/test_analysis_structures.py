"""Reading, symmetry, screening, fingerprints, dedup, novelty and descriptors on real crystals."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import read, write
from ase.spacegroup import crystal

from aseguide.analysis import (
    DEFAULT_SIMILARITY_THRESHOLD,
    HardCoordination,
    HardView,
    VolumePerAtomTarget,
    coordination_numbers,
    deduplicate,
    evaluate_objectives,
    mean_coordination,
    novelty,
    parse_objective,
    rdf_fingerprints,
    read_structures,
    screen_distances,
    similarity_matrix,
    symmetrize,
)
from aseguide.constraints import Coordination, VolumePerAtom

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
STRUCT = DATA / "structures"
needs_data = pytest.mark.skipif(not STRUCT.is_dir(), reason=f"shared test data not found at {DATA}")

ALPHA_B12 = "alpha_B12_A_hR12_166_2h_pymatgen_aflow_proto.cif"
BETA_B105 = "beta_B105_A_hR105_166_bc9h4i_pymatgen_aflow_proto.cif"
T50_B = "T50_B_A_tP50_134_b2m2n_pymatgen_aflow_proto.cif"
GAMMA_RELAXED = "gamma_SHAPE_M3GNet-MP-2021.2.8_relaxed.cif"
GAMMA_WRONG = "gamma_b28_SHAPE_unverified.vasp"
LICOO2 = "LiCoO2_R-3m_primitive_from_tchen0965_structural_descriptors_repo.cif"
ND2FE14B = "Nd2Fe14B_reconstructed_Herbst1984.cif"


def _rattled(atoms: Atoms, amplitude: float, seed: int = 0) -> Atoms:
    out = atoms.copy()
    out.positions += np.random.default_rng(seed).normal(0.0, amplitude, out.positions.shape)
    return out


def _skewed(atoms: Atoms) -> Atoms:
    """The same crystal in a strongly sheared cell (unimodular change of basis)."""
    m = np.array([[1, 0, 0], [4, 1, 0], [-3, 5, 1]])
    out = atoms.copy()
    out.set_cell(m @ atoms.cell.array, scale_atoms=False)
    out.wrap()
    return out


def _lonsdaleite() -> Atoms:
    return crystal("C", [(1 / 3, 2 / 3, 1 / 16)], spacegroup=194, cellpar=[2.51, 2.51, 4.12, 90, 90, 120])


# ------------------------------------------------------------------ symmetry
@needs_data
@pytest.mark.parametrize("name, number", [(ALPHA_B12, 166), (LICOO2, 166), (ND2FE14B, 136)])
def test_symmetrize_recovers_space_group_of_perturbed_crystal(name, number):
    atoms = read(STRUCT / name)
    perturbed = _rattled(atoms, 0.01, seed=1)
    out = symmetrize([perturbed], symprec=0.1)[0]
    assert out.info["spacegroup_before"] < number  # the perturbation broke the symmetry
    assert out.info["spacegroup_after"] == number
    # the idealised cell has the composition of the input, the primitive cell no more atoms
    assert out.get_chemical_formula(empirical=True) == atoms.get_chemical_formula(empirical=True)
    assert len(out) <= len(atoms)
    assert perturbed.info.get("spacegroup_after") is None  # input untouched


def test_symmetrize_options_and_errors():
    si = bulk("Si", cubic=True)  # 8-atom conventional cell
    si.info["seed"] = 7
    prim = symmetrize([_rattled(si, 0.005)], symprec=0.05)[0]
    conv = symmetrize([_rattled(si, 0.005)], symprec=0.05, primitive=False)[0]
    assert (len(prim), len(conv)) == (2, 8)
    assert prim.info["seed"] == 7 and prim.info["spacegroup_symbol"] == "Fd-3m"
    with pytest.raises(ValueError, match="symprec"):
        symmetrize([si], symprec=0)


# ------------------------------------------------------------------ screening
def test_screen_catches_planted_contact():
    diamond = bulk("C", "diamond", a=3.567).repeat(2)
    bad = diamond.copy()
    bad.positions[5] = bad.positions[0] + np.array([0.5, 0.0, 0.0]) / np.sqrt(1.0)
    r = screen_distances([diamond, bad])
    assert r.ok.tolist() == [True, False]
    assert r.min_distance[0] == pytest.approx(3.567 * np.sqrt(3) / 4, abs=1e-6)  # C-C bond 1.5446 Å
    assert r.min_distance[1] == pytest.approx(0.5, abs=1e-9)
    assert r.worst_pair[1] == "C-C"
    # an explicit pair threshold overrides the covalent-radius rule
    assert screen_distances([diamond], thresholds={"C-C": 1.6}).ok.tolist() == [False]
    assert screen_distances([bad], thresholds={("C", "C"): 0.4}).ok.tolist() == [True]
    with pytest.raises(ValueError, match="'Xx'"):
        screen_distances([diamond], thresholds={"Xx-C": 1.0})


def test_screen_catches_atoms_on_top_of_each_other():
    a = Atoms("C2", positions=[[0, 0, 0], [0, 0, 0]], cell=[3, 3, 3], pbc=True)
    r = screen_distances([a])
    assert r.ok.tolist() == [False] and r.min_distance[0] == 0.0


@needs_data
def test_screen_real_crystals_and_wrong_gamma_boron():
    names = [ALPHA_B12, BETA_B105, T50_B, GAMMA_RELAXED, LICOO2, ND2FE14B]
    good = [read(STRUCT / n) for n in names]
    assert screen_distances(good).ok.all()
    wrong = read(STRUCT / GAMMA_WRONG)  # 1.19 Å B-B contacts
    strict = screen_distances([wrong, read(STRUCT / GAMMA_RELAXED)], factor=0.75)
    assert strict.ok.tolist() == [False, True]
    assert strict.min_distance[0] == pytest.approx(1.19, abs=0.01)


# ------------------------------------------------------------------ fingerprints
def test_fingerprint_invariances():
    rocksalt = bulk("NaCl", "rocksalt", a=5.64)
    shifted = rocksalt.copy()
    shifted.positions += [0.7, -1.3, 2.2]
    shifted.wrap()
    permuted = rocksalt[[1, 0]]
    variants = [rocksalt, rocksalt.repeat((2, 1, 3)), shifted, permuted, _skewed(rocksalt),
                bulk("NaCl", "rocksalt", a=5.64, cubic=True)]
    fp = rdf_fingerprints(variants)
    np.testing.assert_allclose(np.linalg.norm(fp.toarray(), axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(similarity_matrix(fp)[0], 1.0, atol=1e-9)


def test_fingerprint_separates_different_structures():
    c = ["C"]
    structures = [bulk("C", "diamond", a=3.567), _lonsdaleite(), bulk("Cu", "fcc", a=3.6),
                  bulk("Cu", "bcc", a=2.87), bulk("C", "diamond", a=3.567 * 1.05)]
    fp = rdf_fingerprints(structures)
    s = similarity_matrix(fp)
    assert s[0, 1] < DEFAULT_SIMILARITY_THRESHOLD  # diamond vs lonsdaleite (same first shell)
    assert s[2, 3] < DEFAULT_SIMILARITY_THRESHOLD  # fcc vs bcc
    assert s[0, 4] < DEFAULT_SIMILARITY_THRESHOLD  # 5 % larger lattice: RDF peaks move
    # different elements never look alike: their pair blocks do not overlap
    assert s[0, 2] == 0.0
    with pytest.raises(ValueError, match="outside the fingerprint species"):
        rdf_fingerprints([bulk("Si")], species=c)


def test_fingerprint_matches_direct_definition():
    """One bin of F_CC for diamond against a direct count (no smearing)."""
    a = 3.567
    d = bulk("C", "diamond", a=a)
    fp = rdf_fingerprints([d], r_max=4.0, bin_width=0.1, sigma=0.0)
    raw = fp.toarray()[0]
    # unnormalised F: first-neighbour bin holds 4 neighbours per atom at r1 = a sqrt(3)/4
    r1 = a * np.sqrt(3) / 4
    n, volume = 2, d.get_volume()
    f_bin = 2 * 4 / (r1**2) / (4 * np.pi * (n * n / volume) * 0.1) - 1.0
    k = int(r1 / 0.1)
    empty = raw[0]  # F = -1 below the first neighbour: the scale of the unit vector
    assert raw[k] / empty == pytest.approx(f_bin / -1.0, rel=1e-9)


@needs_data
def test_dedup_removes_exact_and_perturbed_duplicates_keeps_polymorphs():
    polymorphs = [read(STRUCT / n) for n in (ALPHA_B12, BETA_B105, T50_B, GAMMA_RELAXED)]
    carbon = [bulk("C", "diamond", a=3.567), _lonsdaleite()]
    distinct = polymorphs + carbon
    copies = [
        polymorphs[0].copy(),                       # exact copy
        _rattled(polymorphs[2], 0.01, seed=3),      # perturbed copy
        polymorphs[3].repeat((1, 1, 2)),            # supercell copy
        _skewed(carbon[0]),                         # other cell setting
        _rattled(carbon[1], 0.01, seed=4),
    ]
    parents = [0, 2, 3, 4, 5]
    r = deduplicate(distinct + copies)
    assert r.keep.tolist() == [True] * len(distinct) + [False] * len(copies)
    assert r.duplicate_of[len(distinct):].tolist() == parents
    assert r.duplicate_of[:len(distinct)].tolist() == [-1] * len(distinct)
    assert (r.similarity[len(distinct):] >= DEFAULT_SIMILARITY_THRESHOLD).all()


def test_dedup_structure_matcher_option_and_composition_guard():
    si = bulk("Si")
    strained = si.copy()
    strained.set_cell(si.cell.array * 1.04, scale_atoms=True)  # 4 % larger: RDF differs, same structure
    assert deduplicate([si, strained]).keep.tolist() == [True, True]
    assert deduplicate([si, strained], structure_matcher=True).keep.tolist() == [True, False]
    # the same geometry with another element is not a duplicate unless asked
    ge = si.copy()
    ge.symbols = "Ge2"
    assert deduplicate([si, ge]).keep.tolist() == [True, True]
    with pytest.raises(ValueError, match="threshold"):
        deduplicate([si], threshold=1.5)


@needs_data
def test_novelty_against_references():
    alpha, beta = read(STRUCT / ALPHA_B12), read(STRUCT / BETA_B105)
    t50 = read(STRUCT / T50_B)
    generated = [_rattled(alpha, 0.01), t50, bulk("Si")]
    references = [beta, alpha.repeat((2, 1, 1))]
    r = novelty(generated, references)
    assert r.novel.tolist() == [False, True, True]
    assert r.nearest[0] == 1 and r.similarity[0] >= DEFAULT_SIMILARITY_THRESHOLD
    assert r.nearest[2] == -1  # no silicon reference to compare with
    assert novelty(generated, []).novel.all()


@needs_data
def test_carbon24_perturbed_copies_are_found():
    s = read_structures(DATA / "carbon_24" / "val.csv", limit=60)
    assert len(s) == 60 and s.errors == []
    assert all("energy_per_atom" in a.info and "material_id" in a.info for a in s)
    copies = [_rattled(a, 0.005, seed=k) for k, a in enumerate(s.structures[:20])]
    r = deduplicate(list(s.structures) + copies)
    assert not r.keep[60:].any()
    assert (r.duplicate_of[60:] >= 0).all()
    # the duplicate found is the original or a structure the original itself duplicates
    root = [k if r.duplicate_of[k] < 0 else r.duplicate_of[k] for k in range(20)]
    assert r.duplicate_of[60:].tolist() == root


# ------------------------------------------------------------------ descriptors
@needs_data
def test_hard_coordination_on_known_crystals():
    nd = read(STRUCT / ND2FE14B)
    assert coordination_numbers(nd, "B", "Fe", cutoff=2.3).tolist() == [6, 6, 6, 6]  # BFe6 prisms
    licoo2 = read(STRUCT / LICOO2)
    assert coordination_numbers(licoo2, "Co", "O").tolist() == [6]  # default cutoff 2.42 Å
    diamond = bulk("C", "diamond", a=3.567)
    assert coordination_numbers(diamond, "C", "C", 1.6).tolist() == [4, 4]
    assert coordination_numbers(diamond, "C", "C", 2.6).tolist() == [16, 16]  # 4 + 12 second neighbours
    assert coordination_numbers(_skewed(diamond), "C", "C", 2.6).tolist() == [16, 16]
    # a cutoff larger than the cell: all periodic images count
    fcc = bulk("Cu", "fcc", a=3.6)
    assert coordination_numbers(fcc, "Cu", "Cu", 3.7).tolist() == [18]  # 12 + 6
    assert np.isnan(mean_coordination([fcc], "B", "Fe", 2.0)[0])
    # species groups and per-pair cutoffs: Na by (Na or Cl) in rock salt, 6 Cl at 2.82 Å, 12 Na at 3.99 Å
    nacl = bulk("NaCl", "rocksalt", a=5.64)
    assert coordination_numbers(nacl, "Na", ["Cl", "Na"], 3.0).tolist() == [6]
    assert coordination_numbers(nacl, "Na", ["Cl", "Na"], {("Na", "Cl"): 3.0, ("Na", "Na"): 4.1}).tolist() == [18]
    assert coordination_numbers(nacl, ["Na", "Cl"], "Cl", 4.1).tolist() == [6, 12]


def test_hard_objectives_descriptor_loss_satisfied():
    cubic = [bulk("Cu", "sc", a=a) for a in (2.0, 2.03, 2.3)]  # 8.0, 8.365, 12.167 Å^3
    vpa = HardView(VolumePerAtom(8.0, tolerance=0.5))
    np.testing.assert_allclose(vpa.descriptor(cubic), [8.0, 2.03**3, 2.3**3])
    np.testing.assert_allclose(vpa.loss(cubic), np.abs(np.array([8.0, 2.03**3, 2.3**3]) - 8.0), atol=1e-12)
    assert vpa.satisfied(cubic).tolist() == [True, True, False]
    with pytest.warns(DeprecationWarning, match="VolumePerAtomTarget"):
        assert VolumePerAtomTarget(8.0).tolerance == pytest.approx(0.5)  # deprecated alias
    band = HardView(VolumePerAtom((8.5, 20.0), tolerance=0.0))
    np.testing.assert_allclose(band.loss(cubic), [0.5, 8.5 - 2.03**3, 0.0], atol=1e-12)
    with pytest.warns(DeprecationWarning, match="HardCoordination"):
        assert HardCoordination("Na", "Cl", 6, cutoff=3.0).descriptor([bulk("NaCl", "rocksalt", a=5.64)]) == [6.0]
    cn = parse_objective("coordination:Na-Cl:4..5:cutoff=3.0:tol=0")
    assert cn.loss([bulk("NaCl", "rocksalt", a=5.64)]).tolist() == [1.0]
    for bad in ("coordination:Na:4", "volume_per_atom:x", "dipole:3", "coordination:Na-Cl:4:foo=1",
                "coordination:Xq-Cl:4"):
        with pytest.raises(ValueError, match="bad objective"):
            parse_objective(bad)


def test_evaluate_objectives_duck_typing():
    import torch

    from aseguide.state import CrystalBatch

    class BatchOnly:
        """Like aseguide.constraints objectives: torch tensors, accepts a CrystalBatch."""

        name = "vpa_torch"

        def descriptor(self, batch):
            if not isinstance(batch, CrystalBatch):
                raise TypeError("needs a CrystalBatch")
            return batch.volume() / batch.num_atoms

        def loss(self, batch):
            return (self.descriptor(batch) - 8.0).abs()

        def satisfied(self, batch):
            return self.loss(batch) < 1.0

    class Broken:
        def descriptor(self, atoms):
            raise RuntimeError("boom")

    structures = [bulk("Cu", "sc", a=2.0), bulk("Cu", "sc", a=2.5)]
    with pytest.warns(UserWarning, match="boom"):
        ev = evaluate_objectives(structures, [BatchOnly(), HardView(Coordination("Cu", "Cu", 6, 2.1)), Broken()])
    assert set(ev) == {"vpa_torch", "CN(Cu-Cu)", "Broken"}
    np.testing.assert_allclose(ev["vpa_torch"]["descriptor"], [8.0, 2.5**3])
    assert ev["vpa_torch"]["satisfied"].tolist() == [True, False]
    assert ev["CN(Cu-Cu)"]["descriptor"].tolist() == [6.0, 0.0]
    assert np.isnan(ev["Broken"]["descriptor"]).all() and not ev["Broken"]["satisfied"].any()
    assert isinstance(torch.zeros(1), torch.Tensor)


# ------------------------------------------------------------------ reading
def test_read_folder_of_mixed_files(tmp_path):
    si, cu, nacl = bulk("Si"), bulk("Cu", "fcc", a=3.6), bulk("NaCl", "rocksalt", a=5.64)
    write(tmp_path / "a.extxyz", [si, cu], format="extxyz")
    write(tmp_path / "b.cif", nacl)
    write(tmp_path / "c.traj", [si, si.repeat(2)])
    write(tmp_path / "POSCAR", cu, format="vasp")
    write(tmp_path / "d.vasp", nacl, format="vasp")
    (tmp_path / "broken.cif").write_text("data_x\n_cell_length_a 3\nloop_\n_atom_site_label\n")
    (tmp_path / "notes.txt").write_text("ignored")
    molecule = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    write(tmp_path / "e.xyz", molecule, format="extxyz")
    s = read_structures(tmp_path)
    assert len(s) == 2 + 1 + 2 + 1 + 1
    named = [src for src, _ in s.errors]
    assert any(src.endswith("broken.cif") for src in named)
    assert any("e.xyz" in src and "periodic" in msg for src, msg in s.errors)
    assert all("source" in a.info for a in s)
    assert read_structures(tmp_path, index="-1", limit=3).structures[0].get_chemical_formula() == "Cu"


def test_read_run_folder_and_mattergen_outputs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    frames = [bulk("Si"), bulk("Ge")]
    frames[0].info.update(loss=0.1, seed=3)
    write(run / "structures.extxyz", frames, format="extxyz")
    write(run / "0.cif", frames[0])  # CIF copies of the same structures are ignored
    (run / "config.json").write_text('{"model": "chemical_system", "num_atoms": 8}')
    s = read_structures(run)
    assert len(s) == 2 and s[0].info["loss"] == pytest.approx(0.1) and s.config["num_atoms"] == 8

    mg = tmp_path / "mattergen"
    mg.mkdir()
    with zipfile.ZipFile(mg / "generated_crystals_cif.zip", "w") as z:
        for k, a in enumerate(frames):
            write(tmp_path / f"g{k}.cif", a)
            z.write(tmp_path / f"g{k}.cif", arcname=f"gen_{k}.cif")
    assert [a.get_chemical_formula() for a in read_structures(mg)] == ["Si2", "Ge2"]
    write(mg / "generated_crystals.extxyz", frames + frames, format="extxyz")
    assert len(read_structures(mg)) == 4  # the extxyz is preferred to the zip


def test_read_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        read_structures(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        read_structures(tmp_path / "empty")
    bad = tmp_path / "table.csv"
    bad.write_text("a,b\n1,2\n")
    s = read_structures(bad)
    assert len(s) == 0 and "no 'cif' column" in s.errors[0][1]


def test_neighbor_pairs_on_an_absurdly_large_cell_is_cheap():
    """Regression: untrained models make cells of 1e10 Å^3; pymatgen's cell list would
    allocate tens of GB for them, so such cells use ASE's search (same pairs)."""
    from ase import Atoms

    from aseguide.constraints._neighbor_pairs import neighbor_pairs

    huge = Atoms("C3", scaled_positions=[[0, 0, 0], [0.1, 0, 0], [0.5, 0.5, 0.5]],
                 cell=[5923.0, 2757.0, 2566.0], pbc=True)
    huge.positions[1] = huge.positions[0] + [1.2, 0, 0]
    i, j, d = neighbor_pairs(huge, 2.0)
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 1), (1, 0)]
    assert abs(d - 1.2).max() < 1e-9


def test_neighbor_pairs_in_a_badly_skewed_basis_are_those_of_the_reduced_cell():
    """Regression: a sampled lattice written with 100 Å vectors and planes 0.007 Å apart made
    the short-contact screen search ~1e8 images; the same lattice in its shortest basis
    gives the same pairs."""
    from ase.build import bulk
    from ase.neighborlist import neighbor_list

    from aseguide.constraints._neighbor_pairs import neighbor_pairs

    diamond = bulk("C", "diamond", a=3.567, cubic=True)
    diamond.rattle(0.05, seed=1)
    skew = np.array([[1, 0, 0], [27, 1, 0], [31, 29, 1]])  # unimodular: the same lattice
    skewed = diamond.copy()
    skewed.set_cell(skew @ diamond.cell.array, scale_atoms=False)
    assert max(skewed.cell.lengths()) > 100
    i, j, d = neighbor_pairs(skewed, 3.0)
    i0, j0, d0 = neighbor_list("ijd", diamond, 3.0)
    assert sorted(zip(i.tolist(), j.tolist(), np.round(d, 9).tolist())) == \
        sorted(zip(i0.tolist(), j0.tolist(), np.round(d0, 9).tolist()))


def test_distribution_plot_of_huge_values_uses_float_bins(tmp_path):
    """Regression: values above ~1e5 are 'integers' to np.allclose; one bin per integer
    over 1e11 would need terabytes."""
    from aseguide.analysis.plots import plot_distributions

    path = plot_distributions({"guided": [2.6e11, 3.1e9, 12.5], "unguided": [7.0, 8.0]}, "volume per atom",
                              tmp_path / "huge.png")
    assert Path(path).stat().st_size > 1000


def test_symmetrize_skips_degenerate_cells_instead_of_crashing_spglib():
    """Regression: cells like these (from an untrained model) made spglib segfault."""
    from ase.geometry import cellpar_to_cell

    from aseguide.analysis import symmetrize
    from aseguide.analysis.symmetry import degenerate_cell

    rng = np.random.default_rng(0)
    flat = Atoms("C8", scaled_positions=rng.random((8, 3)),
                 cell=cellpar_to_cell([14.94, 14.83, 20.35, 1.15, 1.5, 2.53]), pbc=True)
    tiny = Atoms("C8", scaled_positions=rng.random((8, 3)),
                 cell=cellpar_to_cell([0.46, 0.53, 0.5, 52.24, 56.54, 21.08]), pbc=True)
    fine = bulk("Si")
    out = symmetrize([flat, tiny, fine])
    assert "degenerate cell" in out[0].info["symmetrize_error"]
    assert "degenerate cell" in out[1].info["symmetrize_error"]
    assert out[0].info["spacegroup_after"] == 0 and len(out[1]) == 8
    assert "symmetrize_error" not in out[2].info and out[2].info["spacegroup_after"] == 227
    assert degenerate_cell(fine) is None
    assert "volume per atom" in degenerate_cell(Atoms("C8", cell=[1.0, 1.0, 1.0], pbc=True))


# ---------------------------------------------------------------- issue 16: overlapping CIF sites
CIF_HEAD = """data_overlap
_cell_length_a 4.0
_cell_length_b 4.0
_cell_length_c 4.0
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
"""


def test_cif_with_two_atoms_on_one_site_is_reported_not_merged(tmp_path):
    from aseguide.analysis import read_structures
    from aseguide.cli import main

    folder = tmp_path / "cifs"
    folder.mkdir()
    (folder / "twice.cif").write_text(CIF_HEAD + "Si1 Si 0.0 0.0 0.0\nSi2 Si 0.0 0.0 0.0\nO1 O 0.5 0.5 0.5\n"
                                      "C1 C 0.25 0.25 0.9999\nC2 C 0.25 0.25 0.0\n")
    (folder / "fine.cif").write_text(CIF_HEAD + "Si1 Si 0.0 0.0 0.0\nO1 O 0.5 0.5 0.5\n")
    result = read_structures(folder)
    assert [a.get_chemical_formula() for a in result] == ["OSi"]
    (source, message), = result.errors
    assert source.endswith("twice.cif")
    assert "Si1 (Si) and Si2 (Si) at 0.000 Å" in message and "C1 (C) and C2 (C)" in message
    assert main(["analyze", str(folder / "twice.cif"), "--out", str(tmp_path / "r"), "-q"]) == 2


def test_disordered_sites_and_symmetry_generated_positions_are_not_overlaps(tmp_path):
    from ase.build import bulk
    from ase.io import write

    from aseguide.analysis import read_structures
    from aseguide.analysis.io import cif_overlapping_sites

    disordered = CIF_HEAD.replace("_atom_site_fract_z\n", "_atom_site_fract_z\n_atom_site_occupancy\n") + \
        "Fe1 Fe 0.0 0.0 0.0 0.5\nCo1 Co 0.0 0.0 0.0 0.5\n"
    assert cif_overlapping_sites(disordered) == []
    write(tmp_path / "si.cif", bulk("Si", cubic=True))  # a symmetric CIF as ASE writes it
    assert len(read_structures(tmp_path / "si.cif")[0]) == 8
