"""The README's Python examples run as written (from the repository root)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 3


def _released_checkpoints_missing(code: str) -> list[str]:
    """Released checkpoints a block loads by name that are not in the Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    from aseguide.models.mattergen import HUB_REPOSITORY, PRETRAINED_MODELS

    names = set(re.findall(r"load_model\([\"']([\w]+)[\"']", code)) & set(PRETRAINED_MODELS)
    return sorted(name for name in names if not isinstance(
        try_to_load_from_cache(HUB_REPOSITORY, f"checkpoints/{name}/checkpoints/last.ckpt"), str))


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path):
    code = BLOCKS[index]
    if "../shared" in code and not (ROOT.parent / "shared").is_dir():
        pytest.skip("needs ../shared/data next to the repository")
    missing = _released_checkpoints_missing(code)
    if missing:
        pytest.skip(f"needs the released checkpoint(s) {missing} (Hugging Face hub, not in the local cache)")
    script = tmp_path / f"block{index}.py"
    script.write_text(code)
    result = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"),
                                 "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    assert result.returncode == 0, result.stderr[-3000:]


def test_readme_main_command_then_analyze(tmp_path):
    """`aseguide generate examples/volume_tiny.yaml`, then `aseguide analyze` on its output."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    run = tmp_path / "run"
    generate = subprocess.run([sys.executable, "-m", "aseguide", "generate", "examples/volume_tiny.yaml",
                               "--output", str(run), "-q"], cwd=ROOT, capture_output=True, text=True,
                              timeout=600, env=env)
    assert generate.returncode == 0, generate.stderr[-3000:]
    assert "8 structures" in generate.stdout
    analyze = subprocess.run([sys.executable, "-m", "aseguide", "analyze", str(run), "--objective",
                              "volume_per_atom:12.0", "--out", str(tmp_path / "report")], cwd=ROOT,
                             capture_output=True, text=True, timeout=600, env=env)
    assert analyze.returncode == 0, analyze.stderr[-3000:]
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["sets"]["guided"]["counts"]["read"] == 8


def test_readme_yaml_blocks_are_valid_generate_configurations():
    import yaml

    from aseguide.generate import GenerateConfig

    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    for block in blocks:
        config = GenerateConfig.from_dict(yaml.safe_load(block))  # validated, checkpoint conditions included
        assert config.property_conditions()


# ---------------------------------------------------------------- issue 16: the newcomer's path
README = (ROOT / "README.md").read_text()


def _readme_commands() -> list[list[str]]:
    """The ``aseguide`` command lines of the README's bash blocks, in order (continuations joined)."""
    import shlex

    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["aseguide"]:
                commands.append(words[1:])
    return commands


def _option(words: list[str], name: str) -> str | None:
    return words[words.index(name) + 1] if name in words else None


def test_readme_start_wording_is_what_the_code_does():
    from aseguide.models.analytic import GaussianBackend
    from aseguide.optimize import GuidedDiffusion

    wording = re.search(r"`start` \((.*?)\)", README, re.S).group(1)
    assert "t < 1 − start" in " ".join(wording.split()), wording
    opt = GuidedDiffusion(GaussianBackend(), _Loss(), batch_size=1, num_atoms=1, steps=10, start=0.3)
    times = opt._times_cpu
    guided = [t for i, t in enumerate(times) if opt.strengths(i) != (0.0, 0.0)]
    assert guided and max(guided) < 1 - 0.3 <= min(t for i, t in enumerate(times) if t not in guided)


class _Loss:
    def loss(self, batch):
        return batch.cell.sum((-1, -2))


def test_readme_analyze_commands_use_runs_the_readme_creates_and_ignored_report_folders():
    import yaml

    created, outs = [], []
    for words in _readme_commands():
        if words[0] == "generate":
            config = yaml.safe_load((ROOT / words[1]).read_text())
            created.append(_option(words, "--output") or config["output"])
        elif words[0] == "analyze":
            for run in (words[1], _option(words, "--compare")):
                if run is not None:
                    assert run in created, f"`aseguide {' '.join(words)}`: no README step creates {run!r}"
            assert _option(words, "--reference") is None or Path(_option(words, "--reference")).exists()
            outs.append(_option(words, "--out"))
    assert len(outs) >= 2 and None not in outs and len(set(outs)) == len(outs), outs
    if (ROOT / ".git").exists():
        for path in created + outs:
            ignored = subprocess.run(["git", "check-ignore", "-q", path + "/x"], cwd=ROOT)
            assert ignored.returncode == 0, f"{path} is not ignored by git"


def _check_train_command(words: list[str]) -> None:
    import yaml

    from aseguide.cli import build_parser
    from aseguide.training.config import TrainConfig

    args = build_parser().parse_args(words)
    config = TrainConfig.from_dict(yaml.safe_load((ROOT / args.config).read_text()))
    assert config.max_minutes <= 150 and Path(config.output).parts[0] == "runs"


def test_readme_commands_run_as_written(tmp_path):
    """Every `aseguide` command of the README, in order, in a fresh folder with examples/."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for words in _readme_commands():
        if words[0] == "train":  # hours of training: checked for a valid configuration instead
            _check_train_command(words)
            continue
        if words[0] == "generate":
            words = [*words, "-q"]
        result = subprocess.run([sys.executable, "-m", "aseguide", *words], cwd=tmp_path, capture_output=True,
                                text=True, timeout=900, env=env)
        assert result.returncode == 0, f"aseguide {' '.join(words)}:\n{result.stderr[-3000:]}"
    summary = json.loads((tmp_path / "reports" / "volume_tiny_vs_unguided" / "summary.json").read_text())
    assert summary["sets"]["unguided"]["counts"]["read"] == 8
    main = _readme_commands()[0]
    assert main == ["generate", "examples/carbon_quick.yaml"], "the main command is the shipped carbon model's"
    import ase.io

    crystals = ase.io.read(tmp_path / "runs" / "carbon_quick" / "structures.extxyz", ":")
    assert len(crystals) == 16 and all(set(atoms.get_chemical_symbols()) == {"C"} for atoms in crystals)
    volumes = [atoms.get_volume() / len(atoms) for atoms in crystals]
    # physical carbon, not a blown-up or collapsed cell (carbon_24: 5-9 Å^3 per atom)
    assert 4.0 < float(np.median(volumes)) < 12.0, volumes
