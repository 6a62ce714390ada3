"""`aseguide generate`: configuration validation, batch-by-batch output, resume."""

from __future__ import annotations

import csv
import json

import pytest
from ase.io import read

from aseguide.cli import main
from aseguide.generate import GenerateConfig, build_objective, generate

SMALL = dict(num_structures=5, batch_size=2, num_atoms=4, steps=3, seed=1,
             objectives=[{"type": "VolumePerAtom", "target": 12.0}],
             guidance={"recurrence": 1, "backward_strength": 0.05})


@pytest.mark.parametrize("change, message", [
    ({"num_structurs": 3}, "unknown configuration key"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"steps": -2}, "steps must be a positive integer"),
    ({"objectives": [{"type": "Volumee", "target": 3}]}, "unknown type 'Volumee'"),
    ({"objectives": [{"type": "VolumePerAtom", "target": -3}]}, "-3"),
    ({"objectives": [{"type": "Coordination", "center": "Xq", "neighbor": "O", "target": 4}]}, "Xq"),
    ({"guidance": {"recurence": 2}}, "unknown guidance key"),
    ({"guidance": {"recurrence": 0}}, "recurrence must be an integer >= 1, got 0"),
    ({"guidance": {"fields": ["species"]}}, "cannot guide field 'species'"),
    ({"guidance": ["recurrence"]}, "guidance must be a mapping"),
    ({"model": "tiny-random-chemical-system", "chemical_system": "Li-Zz"}, "Zz"),
    ({"model": "space_group", "space_group": 231}, "space_group=231 is not a space group number"),
    ({"model": "dft_band_gap", "dft_band_gap": "wide"}, "dft_band_gap='wide' must be a number"),
    ({"model": "ml_bulk_modulus", "ml_bulk_modulus": -5.0}, "ml_bulk_modulus=-5.0 is outside the sensible range"),
    # known without loading or downloading the checkpoint:
    ({"model": "dft_band_gap", "space_group": 225},
     r"'dft_band_gap' cannot be conditioned on 'space_group'.*accepts: dft_band_gap \(DFT band gap, eV"),
    ({"dft_mag_density": 0.1}, "'tiny-random' cannot be conditioned on 'dft_mag_density'.*accepts: no condition"),
    ({"guidance_factor": -1}, "guidance_factor"),
])
def test_bad_configurations_are_named_before_any_compute(change, message):
    with pytest.raises(ValueError, match=message):
        GenerateConfig.from_dict({**SMALL, **change})


def test_objectives_are_combined_only_when_several():
    assert build_objective([]) is None
    single = build_objective([{"type": "VolumePerAtom", "target": 10.0}])
    assert type(single).__name__ == "VolumePerAtom"
    combined = build_objective([{"type": "VolumePerAtom", "target": 10.0}, {"type": "MinDistance", "r_min": 1.0}],
                               {"norm": 1})
    assert type(combined).__name__ == "Combined"


def test_run_writes_every_batch_and_resume_continues(tmp_path, tiny_model):
    out = tmp_path / "run"
    config = GenerateConfig.from_dict({**SMALL, "output": str(out)})
    calls = []
    summary = generate(config, model=tiny_model, progress=lambda done, total, s: calls.append((done, total)))
    assert summary.num_structures == 5 and summary.batches_done == 3
    assert calls == [(2, 5), (4, 5), (5, 5)]
    images = read(out / "structures.extxyz", ":")
    assert len(images) == 5
    assert [a.info["index"] for a in images] == [0, 1, 2, 3, 4]
    assert [a.info["seed"] for a in images] == [1, 1, 2, 2, 3]
    assert all("loss" in a.info for a in images)
    assert len(list((out / "cifs").glob("gen_*.cif"))) == 5
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [int(r["index"]) for r in rows] == [0, 1, 2, 3, 4]
    assert float(rows[0]["loss"]) == pytest.approx(images[0].info["loss"], rel=1e-5)

    # without --resume an existing run is never overwritten
    with pytest.raises(ValueError, match="already holds a run"):
        generate(config, model=tiny_model)

    # simulate a crash after batch 1 (batch 2 was appended but not recorded)
    progress = json.loads((out / "progress.json").read_text())
    reference = read(out / "structures.extxyz", ":")
    (out / "progress.json").write_text(json.dumps({**progress, "batches_done": 1, "structures": 2,
                                                   "sizes": progress_after_first_batch(out, 2)}))
    summary = generate(config, model=tiny_model, resume=True)
    assert summary.resumed_batches == 1
    resumed = read(out / "structures.extxyz", ":")
    assert len(resumed) == 5
    for a, b in zip(resumed, reference):  # same seeds, same structures
        assert (a.numbers == b.numbers).all()
        assert abs(a.cell.array - b.cell.array).max() < 1e-5
    assert len(list(csv.DictReader(open(out / "results.csv")))) == 5


def progress_after_first_batch(out, structures_in_first_batch):
    """File sizes as they were after the first batch (header + 2 rows, 2 frames)."""
    text = (out / "structures.extxyz").read_text()
    frames, position = 0, 0
    lines = text.splitlines(keepends=True)
    while frames < structures_in_first_batch:
        natoms = int(lines[0].strip())
        chunk = lines[: natoms + 2]
        position += sum(len(line.encode()) for line in chunk)
        lines = lines[natoms + 2:]
        frames += 1
    table = (out / "results.csv").read_bytes().splitlines(keepends=True)  # csv writes \r\n
    return {"structures.extxyz": position,
            "results.csv": sum(len(line) for line in table[: 1 + structures_in_first_batch])}


def test_resume_refuses_changed_settings(tmp_path, tiny_model):
    out = tmp_path / "run"
    generate(GenerateConfig.from_dict({**SMALL, "num_structures": 2, "output": str(out)}), model=tiny_model)
    changed = GenerateConfig.from_dict({**SMALL, "seed": 9, "output": str(out)})
    with pytest.raises(ValueError, match="settings differ.*seed"):
        generate(changed, model=tiny_model, resume=True)


def test_cli_generate_end_to_end_and_exit_codes(tmp_path, tiny_model_dir, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {tiny_model_dir}\nnum_structures: 2\nbatch_size: 2\nnum_atoms: 4\nsteps: 3\n"
        "objectives:\n  - type: VolumePerAtom\n    target: 10.0\nguidance:\n  recurrence: 1\n"
    )
    out = tmp_path / "out"
    assert main(["generate", str(config), "--output", str(out), "--quiet"]) == 0
    assert len(read(out / "structures.extxyz", ":")) == 2
    assert main(["generate", str(config), "--output", str(tmp_path / "x"), "--steps", "0", "-q"]) == 2
    assert "steps must be a positive integer" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("modell: tiny-random\n")
    assert main(["generate", str(bad), "-q"]) == 2
    assert "unknown configuration key(s) ['modell']" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing written for a rejected configuration


def test_settings_the_model_rejects_leave_no_output(tmp_path, tiny_model):
    out = tmp_path / "never"
    config = GenerateConfig.from_dict({**SMALL, "model": "tiny-random-chemical-system",
                                       "chemical_system": "Li-Co-O", "output": str(out)})
    with pytest.raises(ValueError, match="chemical_system"):
        generate(config, model=tiny_model)  # a model that is not the configured one
    assert not out.exists()


def test_cli_conditions_the_model_was_not_trained_on_leave_no_output(tmp_path, tiny_conditioned_model_dir, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {tiny_conditioned_model_dir}\nnum_structures: 1\nbatch_size: 1\nnum_atoms: 4\n"
                      "steps: 2\nchemical_system: Li-Co-O\nspace_group: 225\n")
    out = tmp_path / "never"
    assert main(["generate", str(config), "--output", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "cannot be conditioned on 'space_group' (space_group=225 given)" in err
    assert "accepts: chemical_system" in err
    assert main(["generate", "--model", "space_group", "--space-group", "0", "--output", str(out), "-q"]) == 2
    err = capsys.readouterr().err  # refused before any download of the checkpoint
    assert "space_group=0 is not a space group number" in err and "accepts: space_group" in err
    assert main(["generate", "--model", "dft_band_gap", "--dft-band-gap", "-1", "--output", str(out), "-q"]) == 2
    assert "dft_band_gap=-1.0 is outside the sensible range [0, 20] eV" in capsys.readouterr().err
    assert main(["generate", "--model", str(tiny_conditioned_model_dir), "--dft-band-gap", "1.5",
                 "--output", str(out), "-q"]) == 2
    assert "cannot be conditioned on 'dft_band_gap'" in capsys.readouterr().err
    assert not out.exists()


def test_config_file_conditions_reach_the_model(tmp_path, tiny_conditioned_model_dir, tiny_conditioned_model):
    config = GenerateConfig.from_dict({**SMALL, "model": str(tiny_conditioned_model_dir), "num_structures": 2,
                                       "chemical_system": "Li-O", "output": str(tmp_path / "run")})
    assert config.property_conditions() == {}
    generate(config, model=tiny_conditioned_model)
    for atoms in read(tmp_path / "run" / "structures.extxyz", ":"):
        assert set(atoms.get_chemical_symbols()) <= {"Li", "O"}
        assert json.loads(atoms.info["guidance"])["conditions"] == {"chemical_system": "Li-O"}
    config = GenerateConfig.from_dict({**SMALL, "model": "dft_mag_density_hhi_score", "dft_mag_density": 0.1,
                                       "hhi_score": 1500})
    assert config.property_conditions() == {"dft_mag_density": 0.1, "hhi_score": 1500}


def test_printed_time_includes_model_loading(tmp_path, tiny_model, monkeypatch, capsys):
    import re
    import time

    import aseguide.runs.generate as generate_module

    def slow_load(config):
        time.sleep(0.5)
        return tiny_model

    monkeypatch.setattr(generate_module, "_load_model", slow_load)
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({**SMALL, "num_structures": 2}))
    assert main(["generate", str(config), "--output", str(tmp_path / "out"), "-q"]) == 0
    line = capsys.readouterr().out
    match = re.search(r"\(([\d.]+) s in all.*model loading ([\d.]+) s, generation ([\d.]+) s", line)
    assert match, line
    total, loading, sampling = map(float, match.groups())
    assert loading >= 0.5 and total >= loading + sampling - 0.1
