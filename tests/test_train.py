"""``aseguide train`` on CPU: tiny configuration, a few steps, a 32-structure subset of carbon_24."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("mattergen")

from conftest import shared_data  # noqa: E402

from aseguide.training.config import TrainConfig  # noqa: E402
from aseguide.training.data import split_indices  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained through the command line (3 steps, 32 structures, 8 held out)."""
    from aseguide.cli import main

    data = shared_data("carbon_24", "val.csv")
    out = tmp_path_factory.mktemp("trained") / "carbon-tiny"
    code = main(["train", "--preset", "tiny", "--data", str(data), "--steps", "3", "--subset", "32",
                 "--held-out", "8", "--output", str(out), "--quiet"])
    assert code == 0
    return out


def test_checkpoint_layout_and_finite_loss(trained):
    from omegaconf import OmegaConf

    config = OmegaConf.load(trained / "config.yaml")
    assert config.lightning_module._target_ == "mattergen.diffusion.lightning_module.DiffusionLightningModule"
    ckpt = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    keys = list(ckpt["state_dict"])
    assert keys and all(k.startswith("diffusion_module.") for k in keys)
    assert ckpt["aseguide"]["steps"] == 3
    log = np.genfromtxt(trained / "train_log.csv", delimiter=",", names=True)
    assert len(log) == 3 and np.all(np.isfinite(log["train_loss"]))
    assert np.isfinite(log["held_out_loss"][-1])
    card = (trained / "model_card.md").read_text()
    for text in ("## Data", "held out", "parameters", "steps: 3", "training loss", "atoms/Å³"):
        assert text in card


def test_split_file_and_density_recorded(trained):
    split = json.loads((trained / "split.json").read_text())
    assert len(split["held_out_rows"]) == 8 and len(split["train_rows"]) == 32
    assert not set(split["held_out_ids"]) & set(split["train_ids"])
    density = json.loads(json.dumps(torch.load(trained / "checkpoints" / "last.ckpt", weights_only=False)
                                    ["aseguide"]["average_density"]))
    assert 0.14 < density < 0.18  # carbon_24, not MP-20's 0.058
    from omegaconf import OmegaConf

    vpsde = OmegaConf.load(trained / "config.yaml").lightning_module.diffusion_module.corruption.sdes.cell
    assert vpsde.vpsde_config.limit_density == pytest.approx(density)


def test_load_and_sample(trained):
    from aseguide import load_model
    from aseguide.optimize import GuidedDiffusion

    model = load_model(trained, device="cpu")
    # the sampling defaults recorded by aseguide train (not MatterGen's 1000 steps / 20 atoms)
    assert (model.default_steps, model.max_atoms) == (250, 24)
    assert GuidedDiffusion(model, None, batch_size=1, num_atoms=24).steps == 250
    assert load_model(trained, device="cpu", max_atoms=None).max_atoms is None
    with pytest.raises(ValueError, match="max_atoms"):
        load_model(trained, device="cpu", max_atoms=0)
    opt = GuidedDiffusion(model, None, batch_size=2, num_atoms=6, steps=3, seed=0)
    opt.run()
    structures = opt.get_structures()
    assert len(structures) == 2
    assert all(len(a) == 6 and np.all(np.isfinite(a.get_positions())) for a in structures)


def test_packaged_model_name_resolves(trained, tmp_path, monkeypatch):
    from aseguide import load_model
    from aseguide.models import registry

    packaged = tmp_path / "models"
    shutil.copytree(trained, packaged / "carbon-24-small")
    monkeypatch.setattr(registry, "PACKAGED_MODELS_DIR", packaged)
    assert "carbon-24-small" in registry.packaged_models()
    model = load_model("carbon-24-small", device="cpu")
    assert model.num_parameters() > 0


def test_data_conversion_round_trips_real_structures(tmp_path):
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.io.ase import AseAtomsAdaptor

    from aseguide.training.data import atoms_from_cif, chemgraph_to_atoms, read_dataset, to_chemgraphs

    table = read_dataset([shared_data("carbon_24", "test.csv")]).iloc[[0, 7, 100, 1000, 2000]]
    graphs = to_chemgraphs(table, tmp_path)
    matcher = StructureMatcher()
    for cif, graph in zip(table["cif"], graphs):
        original, converted = atoms_from_cif(cif), chemgraph_to_atoms(graph)
        assert converted.get_volume() / len(converted) == pytest.approx(original.get_volume() / len(original),
                                                                         rel=1e-4)
        assert matcher.fit(AseAtomsAdaptor.get_structure(original), AseAtomsAdaptor.get_structure(converted))
        # the lattice is MatterGen's symmetric (polar-decomposed) form
        assert np.allclose(graph.cell[0], graph.cell[0].T, atol=1e-4)


def test_split_is_deterministic_and_disjoint():
    a_train, a_held = split_indices(4062, 300, seed=0)
    b_train, b_held = split_indices(4062, 300, seed=0)
    assert np.array_equal(a_train, b_train) and np.array_equal(a_held, b_held)
    assert len(a_held) == 300 and not set(a_train) & set(a_held)
    assert sorted(np.concatenate([a_train, a_held]).tolist()) == list(range(4062))
    assert not np.array_equal(split_indices(4062, 300, seed=1)[1], a_held)
    with pytest.raises(ValueError):
        split_indices(10, 10)


def test_config_validation_and_cli_usage_errors(tmp_path):
    from aseguide.cli import main

    assert TrainConfig().hidden_dim == 96 and TrainConfig().cutoff == 5.0
    with pytest.raises(ValueError, match="unknown training settings"):
        TrainConfig.from_dict({"hiden_dim": 3})
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig.from_dict({"ema_decay": 1.5})
    bad = tmp_path / "bad.yaml"
    bad.write_text("preset: tiny\nlearning_rat: 0.1\n")
    assert main(["train", str(bad)]) == 2
    assert main(["train", "--preset", "tiny", "--data", str(tmp_path / "missing.csv")]) == 2


def test_default_config_fits_the_size_budget():
    """The CPU configuration stays under 15 MB of float32 weights (counted, not trained)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from aseguide.models._mattergen_compat import prepare_mattergen
    from aseguide.models.mattergen_config import lightning_module_config

    prepare_mattergen()
    module = instantiate(OmegaConf.create(lightning_module_config(**TrainConfig().model_sizes()))["lightning_module"])
    n = sum(p.numel() for p in module.parameters())
    assert 1.0e6 < n and 4 * n < 15e6


def test_carbon_case_study_script_runs_with_the_trained_model(trained, tmp_path):
    """examples/carbon/run.py end to end on the tiny model: 2 structures, 2 steps per run."""
    import importlib.util
    from pathlib import Path

    import yaml

    folder = Path(__file__).resolve().parents[1] / "examples" / "carbon"
    for name in ("unguided.yaml", "config_volume.yaml", "config_cn4.yaml", "config_cn3.yaml"):
        config = yaml.safe_load((folder / name).read_text())
        assert config["model"] == "carbon-24-small" and config["seed"] == 0 and config["batch_size"] == 50
        assert config["num_structures"] == (512 if name == "unguided.yaml" else 200)
    cn4 = yaml.safe_load((folder / "config_cn4.yaml").read_text())["objectives"]
    assert {o["type"] for o in cn4} == {"Coordination", "MinDistance"}
    assert [o["r_min"] for o in cn4 if o["type"] == "MinDistance"] == [1.1]
    spec = importlib.util.spec_from_file_location("carbon_run", folder / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "carbon"
    module.main(["--model", str(trained), "--steps", "2", "--num-structures", "2", "--batch-size", "2",
                 "--device", "cpu", "--output", str(out), "--model-dir", str(trained), "--energy"])
    table = (out / "results.md").read_text()
    assert all(f"| {name} |" in table for name in ("volume", "cn4", "cn3", "ehull"))
    summary = json.loads((out / "ehull_summary.json").read_text())
    # the CHGNet carbon hull: graphite and diamond within 0.2 eV/atom of each other, about -9 eV/atom
    from pymatgen.core import Composition

    per_atom = [energy / Composition(formula).num_atoms for formula, energy in summary["hull"]["entries"]]
    assert summary["hull"]["chemical_system"] == "C" and len(per_atom) == 1 and -10.5 < per_atom[0] < -8.0
    assert summary["guided"]["n"] == summary["unguided"]["n"] == 2
    assert (out / "report_cn4" / "summary.json").is_file()
    # --analyze-only generates nothing: unfinished studies are listed, finished ones analysed again
    import shutil

    shutil.rmtree(out / "cn3")
    shutil.rmtree(out / "ehull")
    (out / "report_cn4" / "summary.json").unlink()
    module.main(["--model", str(trained), "--steps", "2", "--num-structures", "2", "--batch-size", "2",
                 "--device", "cpu", "--output", str(out), "--model-dir", str(trained), "--energy", "--analyze-only"])
    table = (out / "results.md").read_text()
    assert "| cn3 | not generated yet: 0 of 2 structures |" in table
    assert "| ehull | not generated yet: 0 of 2 structures |" in table
    assert "| cn4 | " in table.replace("| cn4 | not", "") and (out / "report_cn4" / "summary.json").is_file()
    assert not (out / "cn3").exists() and not (out / "ehull").exists()
    # --studies analyses only the named study; the table keeps the rows of the others
    volume_rows = (out / "rows_volume.md").read_text()
    (out / "rows_volume.md").write_text(volume_rows.replace("| volume |", "| volume (earlier sitting) |"))
    (out / "report_cn4" / "summary.json").unlink()
    module.main(["--model", str(trained), "--steps", "2", "--num-structures", "2", "--batch-size", "2",
                 "--device", "cpu", "--output", str(out), "--model-dir", str(trained), "--analyze-only",
                 "--studies", "cn4"])
    table = (out / "results.md").read_text()
    assert "| volume (earlier sitting) |" in table and "| ehull | not generated yet" in table
    assert (out / "report_cn4" / "summary.json").is_file()
    with pytest.raises(ValueError, match="cn5"):
        module.main(["--output", str(out), "--analyze-only", "--studies", "cn5"])


def test_carbon_twin_is_the_start_of_the_longer_unguided_run(trained, tmp_path):
    """The first structures of a longer unguided run are those of a shorter run with the same seeds."""
    import importlib.util
    from pathlib import Path

    from aseguide.analysis import read_structures
    from aseguide.generate import GenerateConfig, generate

    folder = Path(__file__).resolve().parents[1] / "examples" / "carbon"
    spec = importlib.util.spec_from_file_location("carbon_run_twin", folder / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    settings = {"model": str(trained), "steps": 3, "batch_size": 2, "device": "cpu"}
    long = GenerateConfig.from_file(folder / "unguided.yaml", {**settings, "num_structures": 5,
                                                              "output": str(tmp_path / "long")})
    short = GenerateConfig.from_file(folder / "unguided.yaml", {**settings, "num_structures": 4,
                                                               "output": str(tmp_path / "short")})
    twin = module.unguided_twin(long, generate(long).output, short)
    expected = list(read_structures(generate(short).output))
    assert len(twin) == 4
    for a, b in zip(twin, expected, strict=True):
        assert a.get_chemical_formula() == b.get_chemical_formula()
        np.testing.assert_allclose(a.cell[:], b.cell[:], atol=1e-5)
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-5)
    other_seed = GenerateConfig.from_file(folder / "unguided.yaml", {**settings, "num_structures": 3, "seed": 1,
                                                                    "output": str(tmp_path / "s1")})
    with pytest.raises(ValueError, match="seed 0 != 1"):
        module.unguided_twin(long, tmp_path / "long", other_seed)
    too_many = GenerateConfig.from_file(folder / "unguided.yaml", {**settings, "num_structures": 6,
                                                                  "output": str(tmp_path / "six")})
    with pytest.raises(ValueError, match="5 structures, fewer than the 6"):
        module.unguided_twin(long, tmp_path / "long", too_many)
    partial = GenerateConfig.from_file(folder / "unguided.yaml", {**settings, "num_structures": 3,
                                                                 "output": str(tmp_path / "three")})
    with pytest.raises(ValueError, match="num_structures 3 is not a multiple of batch_size 2"):
        module.unguided_twin(long, tmp_path / "long", partial)


# ---------------------------------------------------------------- interruption
def _tiny_args(data, out, steps):
    return ["train", "--preset", "tiny", "--data", str(data), "--steps", str(steps), "--subset", "32",
            "--held-out", "8", "--output", str(out), "--quiet"]


def _ema_weights(folder):
    return torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def _assert_same_run(a, b, steps):
    log_a = np.genfromtxt(a / "train_log.csv", delimiter=",", names=True)
    log_b = np.genfromtxt(b / "train_log.csv", delimiter=",", names=True)
    assert list(log_a["step"]) == list(range(1, steps + 1)) == list(log_b["step"])
    np.testing.assert_array_equal(log_a["train_loss"], log_b["train_loss"])
    weights_a, weights_b = _ema_weights(a), _ema_weights(b)
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_resume_continues_exactly_like_one_sitting(tmp_path):
    """3 steps, then --resume to 6, equals 6 steps at once (losses and EMA weights bit for bit)."""
    from aseguide.cli import main

    data = shared_data("carbon_24", "val.csv")
    assert main(_tiny_args(data, tmp_path / "once", 6)) == 0
    assert main(_tiny_args(data, tmp_path / "twice", 3)) == 0
    assert (tmp_path / "twice" / "checkpoints" / "resume.pt").is_file()
    assert main(_tiny_args(data, tmp_path / "twice", 6) + ["--resume"]) == 0
    _assert_same_run(tmp_path / "once", tmp_path / "twice", 6)
    # the first sitting alone is a different (shorter) model: the comparison can fail
    assert main(_tiny_args(data, tmp_path / "short", 3)) == 0
    assert not all(torch.equal(v, _ema_weights(tmp_path / "once")[k])
                   for k, v in _ema_weights(tmp_path / "short").items())


def test_resume_after_a_real_kill(tmp_path):
    """SIGKILL a training process mid-run; --resume then finishes it exactly like an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from aseguide.cli import main

    data = shared_data("carbon_24", "val.csv")
    config = tmp_path / "every_step.yaml"
    config.write_text("preset: tiny\ncheckpoint_minutes: 0\neval_every: 4\n")
    killed = tmp_path / "killed"
    args = ["train", str(config), "--data", str(data), "--steps", "100000", "--subset", "32", "--held-out", "8",
            "--output", str(killed), "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "aseguide.cli", *args], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = killed / "train_log.csv"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if log.is_file() and len(log.read_text().splitlines()) > 12:
                break
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    saved = torch.load(killed / "checkpoints" / "resume.pt", weights_only=False)["step"]
    assert saved >= 5
    total = saved + 3
    resumed = ["train", str(config), "--data", str(data), "--steps", str(total), "--subset", "32",
               "--held-out", "8", "--output", str(killed), "--quiet", "--resume"]
    assert main(resumed) == 0
    once = tmp_path / "once"
    assert main(["train", str(config), "--data", str(data), "--steps", str(total), "--subset", "32",
                 "--held-out", "8", "--output", str(once), "--quiet"]) == 0
    _assert_same_run(once, killed, total)
    assert not list((killed / "checkpoints").glob("*.tmp"))


def test_resume_refuses_other_settings_and_missing_state(tmp_path, capsys):
    from aseguide.cli import main

    data = shared_data("carbon_24", "val.csv")
    assert main(_tiny_args(data, tmp_path / "fresh", 2) + ["--resume"]) == 2
    assert "no periodic checkpoint" in capsys.readouterr().err
    assert main(_tiny_args(data, tmp_path / "run", 2)) == 0
    assert main(_tiny_args(data, tmp_path / "run", 4) + ["--resume", "--batch-size", "4"]) == 2
    assert "batch_size: 8 -> 4" in capsys.readouterr().err
    (tmp_path / "run" / "checkpoints" / "resume.pt").write_bytes(b"not a checkpoint")
    assert main(_tiny_args(data, tmp_path / "run", 4) + ["--resume"]) == 2
    assert "resume.pt" in capsys.readouterr().err


def test_preset_that_contradicts_the_config_file_is_a_usage_error_and_writes_nothing(tmp_path, monkeypatch,
                                                                                       capsys):
    """`aseguide train examples/carbon/train.yaml --preset tiny`: exit 2, conflicting keys named, no files."""
    from pathlib import Path

    from aseguide.cli import main

    config = Path(__file__).resolve().parents[1] / "examples" / "carbon" / "train.yaml"
    monkeypatch.chdir(tmp_path)  # the file's relative output (runs/...) would land here
    assert main(["train", str(config), "--preset", "tiny", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "--preset tiny and" in error and "disagree" in error
    tiny = TrainConfig.tiny()
    for key, value in (("hidden_dim", 96), ("num_blocks", 2), ("cutoff", 5.0)):
        assert getattr(tiny, key) != value
        assert f"{key}={value!r}" in error
    assert list(tmp_path.iterdir()) == []


def test_the_shipped_carbon_model_loads_offline_with_its_sampling_defaults():
    """``load_model("carbon-24-small")``: the packaged model, no network, its own step count and size limit."""
    from aseguide import load_model
    from aseguide.models.registry import packaged_models
    from aseguide.optimize import GuidedDiffusion

    if "carbon-24-small" not in packaged_models():
        pytest.skip("carbon-24-small is not packaged in this checkout")
    model = load_model("carbon-24-small", device="cpu")
    assert (model.default_steps, model.max_atoms) == (250, 24)
    assert 1.0e6 < model.num_parameters() < 1.2e6
    opt = GuidedDiffusion(model, None, batch_size=2, num_atoms=8, steps=3, seed=0)
    opt.run()
    for atoms in opt.get_structures():
        assert len(atoms) == 8 and np.isfinite(atoms.get_positions()).all()


def test_loss_weights_reach_mattergens_loss_and_the_held_out_terms_add_up(trained):
    """The held-out total is 0.1 x positions + lattice + species (MatterGen's released weights)."""
    from omegaconf import OmegaConf

    weights = OmegaConf.load(trained / "config.yaml").lightning_module.diffusion_module.loss_fn.weights
    assert dict(weights) == {"pos": 0.1, "cell": 1.0, "atomic_numbers": 1.0}
    log = np.genfromtxt(trained / "held_out_log.csv", delimiter=",", names=True, ndmin=1)
    assert log["step"][-1] == 3
    terms = 0.1 * log["held_out_pos"] + log["held_out_cell"] + log["held_out_atomic_numbers"]
    np.testing.assert_allclose(log["held_out_loss"], terms, rtol=1e-4)
    assert np.all(log["held_out_pos"] > 0) and np.all(log["held_out_cell"] > 0)
    card = (trained / "model_card.md").read_text()
    assert "positions 0.1, lattice 1.0, species 1.0" in card and "initial weights: random" in card


def test_loss_weight_scales_the_training_loss(tmp_path):
    """Same batch, same noise: total(w_pos) - total(w_pos') = (w_pos - w_pos') x the position term."""
    from hydra.utils import instantiate
    from mattergen.common.data.collate import collate
    from omegaconf import OmegaConf

    from aseguide.models._mattergen_compat import prepare_mattergen
    from aseguide.models.mattergen_config import lightning_module_config
    from aseguide.training.data import read_dataset, to_chemgraphs

    prepare_mattergen()
    graphs = to_chemgraphs(read_dataset([shared_data("carbon_24", "val.csv")]).iloc[:4], tmp_path)
    totals, metrics = [], []
    for weight in (0.1, 1.0):
        config = TrainConfig.tiny(position_loss_weight=weight)
        torch.manual_seed(0)
        module = instantiate(OmegaConf.create(lightning_module_config(
            **config.model_sizes(), loss_weights=config.loss_weights()))["lightning_module"])
        torch.manual_seed(1)
        loss, terms = module.diffusion_module.calc_loss(collate(graphs))
        totals.append(float(loss))
        metrics.append({k: float(v) for k, v in terms.items()})
    assert metrics[0] == pytest.approx(metrics[1])
    assert totals[1] - totals[0] == pytest.approx(0.9 * metrics[0]["pos"], rel=1e-4)
    with pytest.raises(ValueError, match="position_loss_weight"):
        TrainConfig.from_dict({"position_loss_weight": -1.0})
    with pytest.raises(ValueError, match="unknown loss weights"):
        lightning_module_config(loss_weights={"lattice": 1.0})


def test_init_from_starts_from_the_given_weights(trained, tmp_path, capsys):
    """A run initialised from a model folder starts from its EMA weights; a wrong architecture is refused."""
    from aseguide.cli import main

    data = shared_data("carbon_24", "val.csv")
    config = tmp_path / "init.yaml"
    # a vanishing learning rate: after one step the weights are still those it started from
    config.write_text(f"preset: tiny\nlearning_rate: 1.0e-20\ninit_from: {trained}\n")
    args = ["train", str(config), "--data", str(data), "--steps", "1", "--subset", "32", "--held-out", "8",
            "--quiet"]
    assert main(args + ["--output", str(tmp_path / "init")]) == 0
    start, after = _ema_weights(trained), _ema_weights(tmp_path / "init")
    assert all(torch.allclose(start[k].float(), after[k].float(), atol=1e-6) for k in start)
    assert f"initial weights: {trained}" in (tmp_path / "init" / "model_card.md").read_text()
    # the same without init_from starts from a random initialisation: the comparison can fail
    config.write_text("preset: tiny\nlearning_rate: 1.0e-20\n")
    assert main(args + ["--output", str(tmp_path / "random")]) == 0
    assert not all(torch.allclose(start[k].float(), v.float(), atol=1e-6)
                   for k, v in _ema_weights(tmp_path / "random").items())
    # from a resume.pt (its EMA weights) works too; a missing file or another architecture is refused
    config.write_text(f"preset: tiny\ninit_from: {trained / 'checkpoints' / 'resume.pt'}\n")
    assert main(args + ["--output", str(tmp_path / "from_resume")]) == 0
    config.write_text(f"preset: tiny\ninit_from: {tmp_path / 'absent'}\n")
    assert main(args + ["--output", str(tmp_path / "absent_run")]) == 2
    assert "absent: no such checkpoint" in capsys.readouterr().err
    config.write_text(f"preset: tiny\nhidden_dim: 8\ninit_from: {trained}\n")
    assert main(args + ["--output", str(tmp_path / "other")]) == 2
    assert "do not fit this run's architecture" in capsys.readouterr().err


def test_resume_of_a_run_from_before_the_loss_weights_keeps_its_weights(tmp_path, capsys):
    """A state saved without loss-weight settings was trained with 1/1/1: resuming with 0.1 is refused."""
    from aseguide.cli import main

    data = shared_data("carbon_24", "val.csv")
    assert main(_tiny_args(data, tmp_path / "old", 2)) == 0
    state_file = tmp_path / "old" / "checkpoints" / "resume.pt"
    state = torch.load(state_file, weights_only=False)
    for key in ("position_loss_weight", "lattice_loss_weight", "species_loss_weight", "init_from"):
        del state["train_config"][key]
    torch.save(state, state_file)
    assert main(_tiny_args(data, tmp_path / "old", 3) + ["--resume"]) == 2
    assert "position_loss_weight: 1.0 -> 0.1" in capsys.readouterr().err


def test_lattice_check_measures_the_unexplained_lattice_noise(trained, tmp_path, monkeypatch):
    """A zero lattice output leaves all the noise unexplained (1); a network that returns the exact
    noise at t = 1 (where the noisy cell is the prior mean plus sigma x noise) leaves almost none."""
    import importlib.util
    from pathlib import Path

    from aseguide import load_model
    from aseguide.training.data import read_dataset, to_chemgraphs

    path = Path(__file__).resolve().parents[1] / "examples" / "carbon" / "lattice_check.py"
    spec = importlib.util.spec_from_file_location("lattice_check", path)
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    model = load_model(str(trained))
    graphs = to_chemgraphs(read_dataset([shared_data("carbon_24", "val.csv")]).iloc[:16], tmp_path)
    module = model.diffusion_module
    sde = module.corruption.sdes["cell"]
    network = module.model.forward

    def zero(noisy, t):
        out = network(noisy, t)
        return out.replace(cell=torch.zeros_like(out["cell"]))

    def oracle(noisy, t):
        out = network(noisy, t)
        sigma = torch.sqrt(sde.get_limit_var(x=noisy["cell"], batch=noisy))
        return out.replace(cell=-(noisy["cell"] - sde.get_limit_mean(x=noisy["cell"], batch=noisy)) / sigma)

    monkeypatch.setattr(module.model, "forward", zero)
    row = check.unexplained_lattice_noise(model, graphs, [0.5])[0]
    assert row["isotropic"] == pytest.approx(1.0) and row["anisotropic"] == pytest.approx(1.0)
    monkeypatch.setattr(module.model, "forward", oracle)
    row = check.unexplained_lattice_noise(model, graphs, [1.0])[0]
    assert row["isotropic"] < 0.01 and row["anisotropic"] < 0.01
    monkeypatch.undo()
    assert check.main(["--model", str(trained), "--data", str(shared_data("carbon_24", "val.csv")),
                       "--num-structures", "8", "--times", "0.5", "--cache", str(tmp_path / "c")]) == 0


def test_ehull_tuning_script_runs_with_the_trained_model(trained, tmp_path):
    """examples/carbon/ehull_tuning.py on the tiny model: an unguided row and a guided twin row."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "examples" / "carbon"
    spec = importlib.util.spec_from_file_location("carbon_ehull_tuning", folder / "ehull_tuning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    common = ["--model", str(trained), "--steps", "3", "--num-structures", "2", "--output", str(tmp_path)]
    unguided = module.main(common + ["--label", "unguided"])
    guided = module.main(common + ["--label", "pos_k1", "--k", "1.0", "--m", "1", "--every", "2",
                                   "--start", "0.0", "--fields", "positions"])
    assert unguided["n"] == guided["n"] == 2 and len(guided["e_hull"]) == 2
    config = json.loads((tmp_path / "pos_k1" / "config.json").read_text())
    text = json.dumps(config)
    assert '"backward_strength": 1.0' in text and '"fields": ["positions"]' in text
    assert "EnergyAboveHull" in text and "MinDistance" in text
    assert "EnergyAboveHull" not in json.dumps(json.loads((tmp_path / "unguided" / "config.json").read_text()))
    rows = (tmp_path / "tuning.md").read_text().splitlines()
    assert rows[2].startswith("| unguided | – |") and len(rows[2].split("|")) == len(rows[0].split("|"))
    assert rows[3].startswith("| pos_k1 | 1.0 | 1 | 2 | 0.0 | constant | positions |")
    assert (tmp_path / "hull.json").is_file()
    held_out = module.main(["--output", str(tmp_path), "--held-out", str(trained)])
    values = json.loads((tmp_path / "heldout_ehull.json").read_text())
    assert held_out["n"] == len(values) > 0 and 0.0 <= held_out["le0.1"] <= held_out["le0.5"] <= 1.0
    assert all(-1.0 < v < 5.0 for v in values)  # real carbon_24 structures, near the CHGNet hull


def test_step_fraction_of_a_backward_shift(tiny_model):
    """examples/carbon/step_fraction.py: the predictor keeps 1 - sigma_{t+dt}^2 / sigma_t^2 of a
    positions shift of x0 (docs/method.md), and the whole shift at the last step."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "examples" / "carbon"
    spec = importlib.util.spec_from_file_location("carbon_step_fraction", folder / "step_fraction.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    steps = 20
    fractions = module.step_fractions(tiny_model, steps=steps, indices=(4, 12, 19), num_atoms=(3, 5))
    session = tiny_model.session(torch.tensor([3, 5]), steps=steps)
    times = session.timesteps()
    for index in (4, 12):
        t, positions, lattice = fractions[index]
        sigma_t = session.marginal("positions", times[index])[1][0, 0]
        sigma_next = session.marginal("positions", times[index + 1])[1][0, 0]
        assert positions == pytest.approx(float(1 - sigma_next**2 / sigma_t**2), rel=1e-4)
        assert 0 < lattice < 1
    assert fractions[4][2] < fractions[12][2]  # the lattice keeps more as t -> 0
    assert fractions[19][1:] == pytest.approx((1.0, 1.0), rel=1e-4)
