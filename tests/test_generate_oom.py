"""Out-of-memory robustness of `aseguide generate`: split, retry, never lose finished batches."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from ase.io import read

from aseguide.constraints import VolumePerAtom
from aseguide.generate import (
    AUTO_BATCH_SIZE_CPU,
    GenerateConfig,
    auto_batch_size,
    choose_batch_size,
    generate,
    is_out_of_memory,
    split_seed,
)
from aseguide.optimize import GuidedDiffusion

SMALL = dict(num_structures=5, batch_size=4, num_atoms=4, steps=3, seed=7,
             objectives=[{"type": "VolumePerAtom", "target": 12.0}],
             guidance={"recurrence": 1, "backward_strength": 0.05})


def _oom_above(monkeypatch, largest: int, seen: list) -> None:
    """GuidedDiffusion.run raises CUDA's out-of-memory error for batches larger than ``largest``."""
    original = GuidedDiffusion.run

    def run(self, steps=None):
        seen.append((self.batch_size, self.seed))
        if self.batch_size > largest:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, steps)

    monkeypatch.setattr(GuidedDiffusion, "run", run)


def test_split_seeds_are_deterministic_distinct_and_checked():
    seeds = {split_seed(7, p) for p in ("a", "b", "aa", "ab", "ba", "bb")}
    assert len(seeds) == 6 and all(0 <= s < 2**63 for s in seeds)
    assert split_seed(7, "ab") == split_seed(7, "ab") != split_seed(8, "ab")
    for bad in ("", "c", "a b"):
        with pytest.raises(ValueError, match="split path"):
            split_seed(7, bad)


def test_out_of_memory_errors_are_recognised():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("[enforce fail] DefaultCPUAllocator: out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_a_batch_that_does_not_fit_is_split_recursively(tmp_path, tiny_model, monkeypatch):
    seen: list = []
    _oom_above(monkeypatch, 1, seen)
    out = tmp_path / "run"
    summary = generate(GenerateConfig.from_dict({**SMALL, "output": str(out)}), model=tiny_model)
    assert summary.num_structures == 5 and summary.batches_done == 2
    # batch 0 (4 structures, seed 7): 4 -> 2 + 2 -> 1 + 1 + 1 + 1; batch 1 (1 structure, seed 8) fits
    assert [size for size, _ in seen] == [4, 2, 1, 1, 2, 1, 1, 1]
    images = read(out / "structures.extxyz", ":")
    assert [a.info["index"] for a in images] == [0, 1, 2, 3, 4]
    assert [a.info.get("split") for a in images] == ["aa", "ab", "ba", "bb", None]
    assert [a.info["seed"] for a in images] == [split_seed(7, p) for p in ("aa", "ab", "ba", "bb")] + [8]
    assert [a.info["batch"] for a in images] == [0, 0, 0, 0, 1]
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["split"] for r in rows] == ["aa", "ab", "ba", "bb", ""]
    assert [int(r["seed"]) for r in rows] == [a.info["seed"] for a in images]
    assert json.loads((out / "progress.json").read_text())["batches_done"] == 2

    # a part is exactly the unsplit run of its size and seed: reproducible without the OOM
    monkeypatch.undo()
    with GuidedDiffusion(tiny_model, VolumePerAtom(12.0), batch_size=1, num_atoms=4, steps=3,
                         seed=split_seed(7, "ab"), recurrence=1, backward_strength=0.05) as opt:
        opt.run()
        direct = opt.get_structures()[0]
    assert (direct.numbers == images[1].numbers).all()
    assert abs(direct.cell.array - images[1].cell.array).max() < 1e-5


def test_out_of_memory_of_one_structure_keeps_finished_batches(tmp_path, tiny_model, monkeypatch):
    original = GuidedDiffusion.run

    def run(self, steps=None):  # batch 0 (seed 7) fits; everything after runs out of memory
        if self.seed != 7:
            raise RuntimeError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return original(self, steps)

    monkeypatch.setattr(GuidedDiffusion, "run", run)
    out = tmp_path / "run"
    config = GenerateConfig.from_dict({**SMALL, "num_structures": 6, "batch_size": 2, "output": str(out)})
    with pytest.raises(RuntimeError, match="out of memory"):
        generate(config, model=tiny_model)
    assert len(read(out / "structures.extxyz", ":")) == 2
    assert json.loads((out / "progress.json").read_text())["batches_done"] == 1

    monkeypatch.undo()  # memory is back: resume finishes the run
    summary = generate(config, model=tiny_model, resume=True)
    assert summary.resumed_batches == 1 and summary.num_structures == 6
    images = read(out / "structures.extxyz", ":")
    assert [a.info["seed"] for a in images] == [7, 7, 8, 8, 9, 9]
    assert all("split" not in a.info for a in images)


def test_other_errors_are_not_split(tmp_path, tiny_model, monkeypatch):
    seen = []

    def run(self, steps=None):
        seen.append(self.batch_size)
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(GuidedDiffusion, "run", run)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        generate(GenerateConfig.from_dict({**SMALL, "output": str(tmp_path / "run")}), model=tiny_model)
    assert seen == [4]


def test_runs_stored_before_the_precision_setting_resume(tmp_path, tiny_model):
    out = tmp_path / "run"
    config = GenerateConfig.from_dict({**SMALL, "num_structures": 6, "batch_size": 2, "output": str(out)})
    generate(config, model=tiny_model)
    stored = json.loads((out / "config.json").read_text())
    assert stored.pop("precision") == "fp32"
    (out / "config.json").write_text(json.dumps(stored))
    progress = json.loads((out / "progress.json").read_text())
    (out / "progress.json").write_text(json.dumps({**progress, "batches_done": 3}))
    assert generate(config, model=tiny_model, resume=True).resumed_batches == 3
    changed = GenerateConfig.from_dict({**SMALL, "num_structures": 6, "batch_size": 2, "output": str(out),
                                        "precision": "mixed"})
    with pytest.raises(ValueError, match=r"settings differ.*precision"):
        generate(changed, model=tiny_model, resume=True)


def test_choose_batch_size_fits_and_balances():
    gib = 2**30
    assert choose_batch_size(100 * gib, 1 * gib, 1000) == 77  # 80 fit -> 13 batches of <= 77
    assert choose_batch_size(100 * gib, 1 * gib, 50) == 50
    assert choose_batch_size(0.5 * gib, 1 * gib, 50) == 1  # never below one structure
    assert choose_batch_size(10 * gib, 0.0, 7) == 7
    for free, per, n in ((139e9, 0.55e9 * 1.2, 1000), (3e9, 1e8, 17), (1e9, 2e9, 5)):
        size = choose_batch_size(free, per, n)
        assert 1 <= size <= n and (size == 1 or size * per <= 0.8 * free)


def test_auto_batch_size_off_cuda_is_recorded_and_reused_on_resume(tmp_path, tiny_model):
    with pytest.raises(ValueError, match="batch_size must be a positive integer or 'auto'"):
        GenerateConfig.from_dict({**SMALL, "batch_size": "big"})
    out = tmp_path / "run"
    config = GenerateConfig.from_dict({**SMALL, "num_structures": 3, "batch_size": "auto", "output": str(out)})
    assert auto_batch_size(tiny_model, config) == min(3, AUTO_BATCH_SIZE_CPU)
    generate(config, model=tiny_model)
    progress = json.loads((out / "progress.json").read_text())
    assert progress["batch_size"] == 3 and progress["batches_total"] == 1
    # a run interrupted after one batch of 2 (chosen on another machine) resumes with batches of 2
    (out / "progress.json").write_text(json.dumps({**progress, "batches_done": 1, "batch_size": 2, "structures": 2,
                                                   "sizes": {"structures.extxyz": 0, "results.csv": 0}}))
    (out / "results.csv").unlink()
    summary = generate(config, model=tiny_model, resume=True)
    assert summary.batches_done == 2
    assert [a.info["batch"] for a in read(out / "structures.extxyz", ":")] == [1]
