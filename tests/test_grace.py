"""GRACE (tensorpotential, TensorFlow): a small model built here, loaded like a downloaded one.

GRACE foundation models are downloaded by tensorpotential at run time (impossible
offline), so the module builds a small GRACE-2L model with tensorpotential's own API
(random weights, per-element energies fitted to the DFT energies of real crystals) and
saves it as the SavedModel folder that a downloaded model is; everything else goes
through the real code: ``get_calculator("grace", model=<folder>)``, model names through
tensorpotential's cache, the batched potential, ``aseguide analyze --calculator grace``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import warnings

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read, write
from conftest import shared_data
from pymatgen.analysis.phase_diagram import PDEntry

from aseguide.calculators import ReferenceHull, get_calculator, get_potential
from aseguide.constraints import EnergyAboveHull
from aseguide.state import CrystalBatch

needs_grace = pytest.mark.skipif(importlib.util.find_spec("tensorpotential") is None,
                                 reason="tensorpotential not installed (ASEGUIDE_EXTRAS without grace)")


# ----------------------------------------------------------------------------- no tensorpotential needed
def test_missing_tensorpotential_is_a_clear_import_error(monkeypatch):
    for name in [m for m in sys.modules if m == "tensorpotential" or m.startswith("tensorpotential.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "tensorpotential", None)
    with pytest.raises(ImportError, match=r"'grace' potential.*aseguide\[grace\]"):
        get_calculator("grace")
    with pytest.raises(ImportError, match=r"aseguide\[grace\]"):
        get_potential("grace", model="GRACE-1L-OAM")


def test_energy_above_hull_refuses_grace_as_guidance():
    hull = ReferenceHull([PDEntry("Cu", -3.5)])
    for spec in ("grace", "GRACE"):
        with pytest.raises(ValueError, match="TensorFlow.*'mattersim'.*'chgnet'.*'sevenn'"):
            EnergyAboveHull(spec, hull)
    objective = EnergyAboveHull("chgnet", hull)  # lazily loaded: no model needed here
    with pytest.raises(ValueError, match="GRACE cannot"):
        objective.potential = "grace"


def test_missing_model_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        get_calculator("grace", model=tmp_path / "no_such_model")
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        get_potential("grace", model=str(tmp_path / "no_such_model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no saved_model.pb"):
        get_calculator("grace", model=tmp_path / "empty")


# ----------------------------------------------------------------------------- a small GRACE model
@pytest.fixture(scope="module")
def crystals():
    """Eight MPtrj crystals (6-48 atoms, 19 elements) with their DFT energies, and carbon_24 crystals."""
    frames = read(shared_data("dft-benchmarks", "mptrj-random-1k.xyz"), index=":8")
    carbon = read_carbon(12)
    return frames, carbon


def read_carbon(n):
    from aseguide.analysis import read_structures

    return list(read_structures(shared_data("carbon_24", "val.csv"), limit=n))


@pytest.fixture(scope="module")
def grace_model(tmp_path_factory, crystals):
    """A small GRACE-2L model folder (saved by tensorpotential, as a downloaded model is)."""
    if importlib.util.find_spec("tensorpotential") is None:
        pytest.skip("tensorpotential not installed (ASEGUIDE_EXTRAS without grace)")
    from aseguide.testing.tiny_grace import make_tiny_grace

    frames, carbon = crystals
    elements = sorted({s for a in frames + carbon for s in a.get_chemical_symbols()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_tiny_grace(tmp_path_factory.mktemp("grace") / "model", frames, elements=elements, seed=0)


@pytest.fixture(scope="module")
def grace(grace_model):
    return get_calculator("grace", model=grace_model, device="cpu")


@needs_grace
def test_model_folder_has_the_released_layout(grace_model):
    import yaml

    assert (grace_model / "saved_model.pb").is_file() and (grace_model / "variables").is_dir()
    meta = yaml.safe_load((grace_model / "metadata.yaml").read_text())
    assert meta["cutoff"] == 5.0 and "C" in meta["chemical_symbols"] and "Ag" in meta["chemical_symbols"]


@needs_grace
def test_energies_forces_stress_match_tensorpotentials_own_calculator(grace, grace_model, crystals):
    from tensorpotential.calculator import TPCalculator

    assert isinstance(grace, TPCalculator) and grace.tf_device == "/CPU:0"
    own = TPCalculator(model=str(grace_model))  # tensorpotential's calculator, its own defaults
    frames, carbon = crystals
    dft, predicted, largest_force = [], [], 0.0
    for atoms in frames + carbon[:2]:
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = grace, own
        energy = a.get_potential_energy()
        assert energy == pytest.approx(b.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=1e-6)
        np.testing.assert_allclose(a.get_stress(), b.get_stress(), atol=1e-8)
        largest_force = max(largest_force, np.abs(a.get_forces()).max())
        if atoms.calc is not None and "C" not in atoms.get_chemical_symbols():
            dft.append(atoms.get_potential_energy() / len(atoms))
            predicted.append(energy / len(atoms))
    assert largest_force > 1e-2  # the network is not trivially zero
    # per-element energies fitted to these DFT energies + a random network: the scale is
    # eV per structure (a per-atom/total mix-up or a unit error would be far off)
    assert np.abs(np.array(predicted) - np.array(dft)).max() < 0.5, (predicted, dft)


@needs_grace
def test_model_name_through_tensorpotentials_cache_and_offline_error(grace_model, crystals, monkeypatch, tmp_path):
    import tensorpotential.calculator.foundation_models as fm

    monkeypatch.setattr(fm, "FOUNDATION_CACHE_DIR", str(tmp_path))

    def offline(url, path):
        raise ConnectionError(f"cannot reach {url}")

    monkeypatch.setattr(fm, "download_extract_rename", offline)
    with pytest.raises(RuntimeError, match=r"GRACE-2L-OMAT-large-ft-AM.*not in tensorpotential's cache.*"
                                           r"cannot reach.*grace_models download"):
        get_calculator("grace")  # the paper's model is the default
    with pytest.raises(ValueError, match="unknown GRACE model 'GRACE-9L'.*GRACE-2L-OMAT-large-ft-AM"):
        get_calculator("grace", model="GRACE-9L")
    # a model in the cache is loaded by name (here the small model standing in for it;
    # "GRACE-2L-OAM-L" is tensorpotential's short alias of the same name)
    shutil.copytree(grace_model, tmp_path / "GRACE-2L-OMAT-large-ft-AM")
    by_name = get_calculator("grace", model="GRACE-2L-OAM-L", device="cpu")
    assert by_name.model_path == str(tmp_path / "GRACE-2L-OMAT-large-ft-AM")
    atoms, ref = crystals[0][0].copy(), crystals[0][0].copy()
    atoms.calc, ref.calc = by_name, get_calculator("grace", model=grace_model)
    assert atoms.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-6)


@needs_grace
def test_device_choice(grace_model):
    import tensorflow as tf

    with pytest.raises(ValueError, match="'tpu'"):
        get_calculator("grace", model=grace_model, device="tpu")
    if not tf.config.list_physical_devices("GPU"):
        with pytest.raises(RuntimeError, match="TensorFlow sees 0 GPU.*tensorflow\\[and-cuda\\]"):
            get_calculator("grace", model=grace_model, device="cuda")
    assert get_calculator("grace", model=grace_model).tf_device is None  # TensorFlow's choice


@needs_grace
def test_batched_potential_matches_the_calculator_and_gives_chain_rule_gradients(grace, grace_model, crystals):
    frames, carbon = crystals
    structures = [carbon[0], frames[3], frames[0], carbon[1]]  # mixed sizes: evaluated largest first
    pot = get_potential("grace", model=grace_model, device="cpu")
    assert pot.name == "grace"
    with pytest.raises(ValueError, match="GRACE cannot"):
        EnergyAboveHull(pot, ReferenceHull([PDEntry("C", -9.0)]))
    batch = CrystalBatch.from_atoms(structures)  # float64
    batch.frac.requires_grad_(True)
    energy = pot.energy(batch)
    energy.sum().backward()
    start = 0
    for i, atoms in enumerate(structures):
        a = atoms.copy()
        a.calc = grace
        n = len(a)
        assert float(energy[i].detach()) == pytest.approx(a.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(batch.frac.grad[start:start + n].numpy(), -a.get_forces() @ a.cell.array.T,
                                   atol=1e-6)
        start += n


@needs_grace
@pytest.mark.slow
def test_analyze_with_grace_end_to_end(grace, grace_model, crystals, tmp_path):
    """``aseguide analyze --calculator grace``: generated and references with the same potential, then the hull."""
    from aseguide.analysis import read_structures
    from aseguide.cli import EXIT_OK, main

    carbon = crystals[1]
    generated = list(read_structures(shared_data("carbon_24", "test.csv"), limit=4))
    references = carbon[:8]
    write(tmp_path / "generated.extxyz", generated)
    write(tmp_path / "references.extxyz", references)
    out = tmp_path / "report"
    code = main(["analyze", str(tmp_path / "generated.extxyz"), "--reference", str(tmp_path / "references.extxyz"),
                 "--calculator", "grace", "--calculator-model", str(grace_model), "--device", "cpu",
                 "--no-symmetrize", "--out", str(out), "-q"])
    assert code == EXIT_OK
    summary = json.loads((out / "summary.json").read_text())
    assert summary["energy"]["source"].startswith("calculator")
    assert summary["energy"]["hull"].startswith("hull of the references' energies")

    import csv

    def column(name, key):
        with open(out / f"structures_{name}.csv") as fh:
            return np.array([float(row[key]) for row in csv.DictReader(fh)])

    def energies(structures):
        result = []
        for atoms in structures:
            a = atoms.copy()
            a.calc = grace
            result.append(a.get_potential_energy() / len(a))
        return np.array(result)

    e_gen, e_ref = energies(generated), energies(references)
    np.testing.assert_allclose(column("guided", "energy_per_atom"), e_gen, atol=1e-6)
    np.testing.assert_allclose(column("references", "energy_per_atom"), e_ref, atol=1e-6)
    # carbon only: the hull is the lowest reference energy per atom
    np.testing.assert_allclose(column("guided", "e_above_hull"), e_gen - e_ref.min(), atol=1e-6)
    assert np.ptp(e_gen) > 1e-4  # distinct structures, distinct energies


@needs_grace
def test_analyze_cli_errors_for_grace(grace_model, tmp_path, capsys):
    from aseguide.cli import EXIT_USAGE, main

    write(tmp_path / "si.extxyz", [bulk("Si")])
    argv = ["analyze", str(tmp_path / "si.extxyz"), "--out", str(tmp_path / "r"), "-q"]
    assert main(argv + ["--calculator", "grace", "--calculator-model", str(tmp_path / "missing")]) == EXIT_USAGE
    assert "no such GRACE model folder" in capsys.readouterr().err
    assert main(argv + ["--calculator-model", str(grace_model)]) == EXIT_USAGE
    assert "need --calculator" in capsys.readouterr().err
