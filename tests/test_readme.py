"""The README's Python examples run as written (from the repository root)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

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
