"""Precision policies of the network call (aseguide.precision) and their plumbing."""

from __future__ import annotations

import warnings

import pytest
import torch
from ase.build import bulk

from aseguide.constraints import VolumePerAtom
from aseguide.generate import GenerateConfig
from aseguide.models.analytic import GaussianBackend
from aseguide.optimize import GuidedDiffusion
from aseguide.precision import PRECISIONS, check_precision, network_precision, uses_autocast
from aseguide.state import CrystalBatch


def _batch() -> CrystalBatch:
    return CrystalBatch.from_atoms([bulk("Si", cubic=True), bulk("NaCl", "rocksalt", a=5.64)], dtype=torch.float32)


def _scores(model, precision: str, t_value: float = 0.4):
    x = _batch()
    session = model.session(x.num_atoms, 20, device="cpu", precision=precision)
    return session.score(x, torch.full((2,), t_value))


@pytest.mark.parametrize("bad", ["fp16", "FP32", "", None, 32])
def test_unknown_policies_are_rejected_with_the_choices(bad, tiny_model):
    with pytest.raises(ValueError, match=r"unknown precision policy.*'mixed', 'fp32', 'bf16'"):
        check_precision(bad)
    with pytest.raises(ValueError, match="unknown precision policy"):
        tiny_model.session(torch.tensor([2]), 5, precision=bad)
    if bad is not None:  # None: GuidedDiffusion leaves the backend's default
        with pytest.raises(ValueError, match="unknown precision policy"):
            GuidedDiffusion(GaussianBackend(), None, batch_size=1, num_atoms=2, steps=2, precision=bad)
    with pytest.raises(ValueError, match="unknown precision policy"):
        GenerateConfig.from_dict({"num_structures": 1, "batch_size": 1, "steps": 2, "precision": bad})
    with pytest.raises(ValueError, match="unknown precision policy"):
        with network_precision(bad, "cpu"):
            pass


def test_autocast_only_where_the_policy_says():
    assert set(PRECISIONS) == {"mixed", "fp32", "bf16"}
    assert not uses_autocast("mixed", "cpu") and uses_autocast("mixed", "cuda")
    assert not uses_autocast("fp32", "cuda") and not uses_autocast("fp32", "cpu")
    assert uses_autocast("bf16", "cpu")
    with network_precision("mixed", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with network_precision("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu")
    assert not torch.is_autocast_enabled("cpu")


def test_default_is_bit_identical_to_fp32_on_cpu(tiny_model, tiny_conditioned_model):
    for model, kwargs in ((tiny_model, {}), (tiny_conditioned_model,
                                             {"conditions": {"chemical_system": "Na-Cl-Si"}, "guidance_factor": 2.0})):
        x = _batch()
        t = torch.full((2,), 0.4)
        out = {p: model.session(x.num_atoms, 20, device="cpu", precision=p, **kwargs).score(x, t)
               for p in ("mixed", "fp32")}
        for field in ("positions", "lattice", "species"):
            assert getattr(out["mixed"], field).dtype == torch.float32
            assert torch.equal(getattr(out["mixed"], field), getattr(out["fp32"], field)), field
    # whole guided runs too (forward and backward guidance: gradients through the network)
    runs = {}
    for precision in ("mixed", "fp32"):
        with GuidedDiffusion(tiny_model, VolumePerAtom(12.0), batch_size=3, num_atoms=4, steps=4, seed=3,
                             start=1.0, recurrence=2, forward_strength=0.05, precision=precision) as opt:
            assert opt.session.precision == precision
            opt.run()
            runs[precision] = opt.final_batch()
    assert torch.equal(runs["mixed"].frac, runs["fp32"].frac)
    assert torch.equal(runs["mixed"].cell, runs["fp32"].cell)
    assert torch.equal(runs["mixed"].numbers, runs["fp32"].numbers)


def test_bf16_on_cpu_is_finite_close_and_not_identical(tiny_model, caplog):
    import mattergen.common.gemnet.gemnet as gemnet_module

    original = gemnet_module.frac_to_cart_coords_with_lattice
    strict = _scores(tiny_model, "fp32")
    with caplog.at_level("WARNING"):
        low = _scores(tiny_model, "bf16")
    assert "network failed" not in caplog.text  # no fallback: the bf16 network itself ran
    # the fp32 geometry wrappers are removed after the call
    assert gemnet_module.frac_to_cart_coords_with_lattice is original
    assert "generate_interaction_graph" not in vars(tiny_model.diffusion_module.model.gemnet)
    for field in ("positions", "lattice", "species"):
        a, b = getattr(strict, field), getattr(low, field)
        assert b.dtype == torch.float32, field  # cast back after the network
        assert torch.isfinite(b).all(), field
        relative = float((a - b).norm() / a.norm())
        assert relative < 0.1, (field, relative)
    assert not torch.equal(strict.positions, low.positions)


def test_bf16_guided_run_keeps_the_sampler_state_in_fp32(tiny_model):
    with GuidedDiffusion(tiny_model, VolumePerAtom(12.0), batch_size=2, num_atoms=4, steps=3, seed=0,
                         start=1.0, recurrence=1, forward_strength=0.05, precision="bf16") as opt:
        opt.run()
        batch = opt.final_batch()
    assert batch.frac.dtype == torch.float32 and batch.cell.dtype == torch.float32
    assert torch.isfinite(batch.frac).all() and torch.isfinite(batch.cell).all()


def test_matmul_precision_is_restored_after_the_context():
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        with network_precision("fp32", "cuda"):
            assert torch.get_float32_matmul_precision() == "highest"
        assert torch.get_float32_matmul_precision() == "medium"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # autocast on a machine without CUDA warns and does nothing
            with pytest.raises(KeyError):
                with network_precision("mixed", "cuda"):
                    assert torch.get_float32_matmul_precision() == "high"
                    raise KeyError("inside the network")
        assert torch.get_float32_matmul_precision() == "medium"
        with network_precision("mixed", "cpu"):
            assert torch.get_float32_matmul_precision() == "medium"  # CPU: untouched
    finally:
        torch.set_float32_matmul_precision(previous)


def test_backends_without_precision_keyword_still_work():
    with GuidedDiffusion(GaussianBackend(), VolumePerAtom(12.0), batch_size=2, num_atoms=3, steps=3,
                         precision="bf16") as opt:
        opt.run()
    assert len(opt.get_structures()) == 2
    assert GenerateConfig.from_dict({"num_structures": 1, "batch_size": 1, "steps": 2}).precision == "fp32"
