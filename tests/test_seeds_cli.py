"""``aseguide generate`` with seeds, fixed compositions and fixed cells (issue 17): config keys, runs, CLI."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from ase.build import bulk
from ase.constraints import FixAtoms
from ase.io import read, write

from aseguide.cli import main
from aseguide.runs.config import GenerateConfig, read_seeds
from aseguide.runs.generate import generate

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = dict(num_structures=5, batch_size=2, steps=4, seed=1, guidance={"recurrence": 1})


@pytest.fixture()
def seed_folder(tmp_path):
    """Two seeds of different sizes (CIF, in name order), plus a file ASE cannot read."""
    folder = tmp_path / "seeds"
    folder.mkdir()
    write(folder / "a_si.cif", bulk("Si", cubic=True))
    write(folder / "b_nacl.cif", bulk("NaCl", "rocksalt", a=5.6))
    (folder / "README.txt").write_text("not a structure\n")
    return folder


def test_read_seeds_file_folder_and_errors(tmp_path, seed_folder):
    assert [a.get_chemical_formula() for a in read_seeds(seed_folder)] == ["Si8", "ClNa"]
    frames = tmp_path / "two.extxyz"
    write(frames, [bulk("Cu"), bulk("Al")])
    assert len(read_seeds(frames)) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing here\n")
    with pytest.raises(ValueError, match=f"seeds '{empty}' holds no structure ASE can read"):
        read_seeds(empty)
    with pytest.raises(ValueError, match="does not exist"):
        read_seeds(tmp_path / "missing")


@pytest.mark.parametrize("change, message", [
    ({"seeds": "no/such/folder"}, "seeds 'no/such/folder' does not exist"),
    ({"start_time": 0.5}, r"start_time=0.5 needs seeds"),
    ({"samples_per_seed": 2}, r"samples_per_seed=2 needs seeds"),
    ({"fix_cell": True}, r"fix_cell=True needs seeds"),
    ({"formula_units": 2}, r"formula_units=2 needs composition"),
    ({"composition": "LiXx"}, r"composition 'LiXx'"),
    ({"composition": "LiCoO2", "num_atoms": 5}, r"num_atoms=5 is not a whole number of formula units"),
    ({"composition": "LiCoO2", "formula_units": -1}, r"formula_units must be an integer >= 1, got -1"),
    ({"seeds": "SEEDS", "start_time": 2}, r"start_time must be a number in \[0, 1\].*got 2"),
    ({"seeds": "SEEDS", "start_time": "late"}, r"start_time must be a number.*'late'"),
    ({"seeds": "SEEDS", "samples_per_seed": 0}, r"samples_per_seed must be a positive integer, got 0"),
    ({"seeds": "SEEDS", "fix_cell": "yes"}, r"fix_cell must be true or false, got 'yes'"),
    ({"seeds": "SEEDS", "num_atoms": 4}, r"num_atoms=4 cannot be combined with seeds"),
    ({"seeds": "SEEDS", "composition": "NaCl"}, r"composition='NaCl' cannot be combined with seeds"),
    ({"seed_structures": "x"}, r"unknown configuration key\(s\) \['seed_structures'\]"),
])
def test_bad_seed_and_composition_settings_are_named(change, message, seed_folder):
    change = {k: (str(seed_folder) if v == "SEEDS" else v) for k, v in change.items()}
    with pytest.raises(ValueError, match=message):
        GenerateConfig.from_dict({**BASE, **change})


def test_a_seeded_run_cycles_through_the_seeds_and_keeps_their_cells(tmp_path, seed_folder, tiny_model):
    out = tmp_path / "run"
    config = GenerateConfig.from_dict({**BASE, "seeds": str(seed_folder), "start_time": 0.5, "samples_per_seed": 2,
                                       "fix_cell": True, "output": str(out)})
    assert config.todict()["seeds"] == str(seed_folder) and config.todict()["num_atoms"] is None
    summary = generate(config, model=tiny_model)
    assert summary.num_structures == 5
    images = read(out / "structures.extxyz", ":")
    seeds = read_seeds(seed_folder)
    assert [a.info["seed_index"] for a in images] == [0, 0, 1, 1, 0]
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [int(r["seed_index"]) for r in rows] == [0, 0, 1, 1, 0]
    for atoms in images:
        seed = seeds[atoms.info["seed_index"]]
        assert len(atoms) == len(seed)
        assert np.allclose(atoms.cell.array, seed.cell.array, atol=1e-6)


def test_a_fixed_composition_run(tmp_path, tiny_model):
    out = tmp_path / "run"
    config = GenerateConfig.from_dict({**BASE, "num_structures": 2, "composition": "LiCoO2", "formula_units": 2,
                                       "output": str(out)})
    generate(config, model=tiny_model)
    assert [a.get_chemical_formula() for a in read(out / "structures.extxyz", ":")] == ["Co2Li2O4"] * 2


def test_a_run_over_the_model_size_is_refused_before_any_output(tmp_path, tiny_model):
    out = tmp_path / "never"
    config = GenerateConfig.from_dict({**BASE, "composition": "LiCoO2", "formula_units": 8, "output": str(out)})
    with pytest.raises(ValueError, match=r"composition 'LiCoO2': 32 atoms .* max_atoms=20"):
        generate(config, model=tiny_model)
    assert not out.exists()


def test_cli_generate_with_seed_keys_and_flags(tmp_path, tiny_model_dir, capsys):
    seed = bulk("NaCl", "rocksalt", a=5.6, cubic=True)
    seed.set_constraint(FixAtoms(indices=[0, 1]))
    path = tmp_path / "seed.traj"
    write(path, seed)                                       # .traj keeps the FixAtoms constraint
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {tiny_model_dir}\nnum_structures: 2\nbatch_size: 2\nsteps: 3\n"
                      f"seeds: {path}\nstart_time: 0.6\nfix_cell: true\nguidance:\n  recurrence: 1\n")
    out = tmp_path / "out"
    assert main(["generate", str(config), "--output", str(out), "-q"]) == 0
    for atoms in read(out / "structures.extxyz", ":"):
        assert (atoms.numbers[:2] == seed.numbers[:2]).all()
        gap = np.mod(atoms.get_scaled_positions(wrap=False)[:2] - seed.get_scaled_positions()[:2], 1.0)
        assert np.minimum(gap, 1 - gap).max() < 1e-6
    out2 = tmp_path / "out2"
    assert main(["generate", "--model", str(tiny_model_dir), "--num-structures", "1", "--batch-size", "1",
                 "--steps", "2", "--composition", "SiO2", "--formula-units", "2", "--output", str(out2), "-q"]) == 0
    assert read(out2 / "structures.extxyz").get_chemical_formula() == "O4Si2"
    assert main(["generate", str(config), "--start-time", "1.5", "--output", str(tmp_path / "x"), "-q"]) == 2
    assert "start_time must be a number in [0, 1]" in capsys.readouterr().err
    assert main(["generate", str(config), "--composition", "NaCl", "--output", str(tmp_path / "x"), "-q"]) == 2
    assert "cannot be combined with seeds" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
