"""MatterGen backend: loading, noise-process algebra, equality with MatterGen's own sampler."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from ase.build import bulk

from aseguide import load_model
from aseguide.models.mattergen import MatterGenSession
from aseguide.state import CrystalBatch

SIGMA_MIN, SIGMA_MAX, BETA_0, BETA_1 = 0.01, 5.0, 0.1, 20.0


def _clean_batch(model_density: float = 0.05771451654022283) -> CrystalBatch:
    """Two real crystals (8 and 2 atoms) as a float32 batch."""
    atoms = [bulk("Si", cubic=True), bulk("NaCl", "rocksalt", a=5.64)]
    return CrystalBatch.from_atoms(atoms, dtype=torch.float32)


def _session(model, batch: CrystalBatch, steps: int = 50, **kwargs) -> MatterGenSession:
    return model.session(batch.num_atoms, steps, device="cpu", **kwargs)


# ---------------------------------------------------------------------------- loading
def test_tiny_model_loads_through_the_real_checkpoint_layout(tiny_model_dir):
    assert (tiny_model_dir / "config.yaml").is_file()
    assert (tiny_model_dir / "checkpoints" / "last.ckpt").is_file()
    state = torch.load(tiny_model_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(key.startswith("diffusion_module.") for key in state)
    model = load_model(tiny_model_dir, device="cpu")
    assert model.num_parameters() < 50_000
    assert model.conditions == ()
    loaded = dict(model.lightning_module.state_dict())
    for key, value in state.items():  # weights really come from the file
        assert torch.equal(loaded[key], value), key


def test_conditioned_tiny_model_knows_its_condition(tiny_conditioned_model):
    assert tiny_conditioned_model.conditions == ("chemical_system",)


def test_scale_factors_come_from_the_state_dict_not_a_json_file(tiny_model_dir, tmp_path):
    state = torch.load(tiny_model_dir / "checkpoints" / "last.ckpt", weights_only=True)
    scale_keys = [k for k in state["state_dict"] if k.endswith("scale_factor")]
    assert scale_keys
    state["state_dict"][scale_keys[0]] = torch.tensor(3.25)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "config.yaml").write_text((tiny_model_dir / "config.yaml").read_text())
    torch.save(state, tmp_path / "checkpoints" / "last.ckpt")
    model = load_model(tmp_path, device="cpu")
    assert float(model.lightning_module.state_dict()[scale_keys[0]]) == 3.25


def test_unknown_name_and_non_checkpoint_directory(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'no_such_model'"):
        load_model("no_such_model")
    with pytest.raises(ValueError, match="no config.yaml"):
        load_model(tmp_path)
    (tmp_path / "config.yaml").write_text("lightning_module: {}\n")
    with pytest.raises(ValueError, match="no checkpoints/last.ckpt"):
        load_model(tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
def test_corrupt_checkpoint_names_the_file_and_the_layout(tiny_model_dir, tmp_path, damage, capsys):
    import os
    import shutil

    from aseguide.cli import main

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    ckpt = folder / "checkpoints" / "last.ckpt"
    data = ckpt.read_bytes()
    ckpt.write_bytes({"truncated": data[: len(data) // 2], "random": os.urandom(4096), "empty": b""}[damage])
    with pytest.raises(ValueError, match="last.ckpt.*corrupt or truncated") as error:
        load_model(folder, device="cpu")
    assert str(ckpt) in str(error.value) and "config.yaml and checkpoints/last.ckpt" in str(error.value)
    out = tmp_path / "run"
    assert main(["generate", "--model", str(folder), "--num-structures", "1", "--num-atoms", "4", "--steps", "1",
                 "--output", str(out), "-q"]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err and not out.exists()


def test_hub_name_offline_says_how_to_use_a_local_copy(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(RuntimeError, match=r"load_model\('/path/to/chemical_system'\)"):
        load_model("chemical_system")


# ---------------------------------------------------------------------------- bad input
def test_bad_sampling_requests_fail_before_compute(tiny_model, tiny_conditioned_model):
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        tiny_model.session(torch.tensor([4]), 0)
    with pytest.raises(ValueError, match="21 atoms per structure is more than"):
        tiny_model.session(torch.tensor([4, 21]), 10)
    with pytest.raises(ValueError, match="cannot be conditioned on 'chemical_system'"):
        tiny_model.session(torch.tensor([4]), 10, conditions={"chemical_system": "Li-O"})
    with pytest.raises(ValueError, match="'Qq'"):
        tiny_conditioned_model.session(torch.tensor([4]), 10, conditions={"chemical_system": "Li-Qq-O"})
    with pytest.raises(ValueError, match="empty chemical system"):
        tiny_conditioned_model.session(torch.tensor([4]), 10, conditions={"chemical_system": ""})
    with pytest.raises(ValueError, match="at least one atom"):
        tiny_model.session(torch.tensor([0]), 10)
    with pytest.raises(ValueError, match=r"cannot be conditioned on 'space_group'.*accepts: chemical_system"):
        tiny_conditioned_model.session(torch.tensor([4]), 10, conditions={"space_group": 225})
    with pytest.raises(ValueError, match="accepts: no condition"):
        tiny_model.session(torch.tensor([4]), 10, conditions={"dft_band_gap": 1.0})
    with pytest.raises(ValueError, match="never generates Tc"):
        tiny_conditioned_model.session(torch.tensor([4]), 10, conditions={"chemical_system": "Tc-O"})


def _without_element_mask(source, target):
    """A copy of a checkpoint whose config.yaml leaves element_mask_func unset, like the released ones."""
    import shutil

    from omegaconf import OmegaConf

    config = OmegaConf.load(source / "config.yaml")
    del config.lightning_module.diffusion_module.model["element_mask_func"]
    (target / "checkpoints").mkdir(parents=True)
    OmegaConf.save(config, target / "config.yaml")
    shutil.copyfile(source / "checkpoints" / "last.ckpt", target / "checkpoints" / "last.ckpt")
    return target


@pytest.mark.parametrize("how", ["hub name", "local folder"])
def test_loading_for_sampling_adds_mattergens_element_mask(tiny_conditioned_model_dir, tmp_path, monkeypatch, how):
    """Released configs set no element_mask_func; MatterGen's generator adds it, and so must load_model."""
    from mattergen.denoiser import mask_disallowed_elements

    import aseguide.models.mattergen as backend

    directory = _without_element_mask(tiny_conditioned_model_dir, tmp_path / "chemical_system")
    if how == "hub name":
        monkeypatch.setattr(backend, "_download_from_hub", lambda name: directory)
        model = load_model("chemical_system", device="cpu")
    else:
        model = load_model(directory, device="cpu")
    assert model.diffusion_module.model.element_mask_func.func is mask_disallowed_elements
    for seed in (0, 1):
        session = model.session(torch.tensor([6, 6, 6]), 4, conditions={"chemical_system": "Li-Co-O"},
                                guidance_factor=2.0, device="cpu")
        assert set(_run_session(session, seed).numbers.tolist()) <= {3, 27, 8}


def test_max_atoms_can_be_lifted(tiny_model_dir):
    model = load_model(tiny_model_dir, device="cpu", max_atoms=None)
    session = model.session(torch.tensor([24]), 5)
    assert session.prior().n_atoms == 24


# ---------------------------------------------------------------------------- noise processes
def test_marginals_match_the_closed_forms_and_mattergen(tiny_model):
    batch = _clean_batch()
    session = _session(tiny_model, batch)
    n = batch.num_atoms.double()
    for t_value in (0.02, 0.3, 0.77, 1.0):
        t = torch.full((2,), t_value)
        _, sigma_pos = session.marginal("positions", t)
        expected_pos = SIGMA_MIN * (SIGMA_MAX / SIGMA_MIN) ** t_value * n ** (-1 / 3)
        np.testing.assert_allclose(sigma_pos[:, 0].numpy(), expected_pos[batch.batch].numpy(), rtol=1e-5)
        alpha, sigma_cell = session.marginal("lattice", t)
        expected_alpha = math.exp(-0.25 * t_value**2 * (BETA_1 - BETA_0) - 0.5 * t_value * BETA_0)
        np.testing.assert_allclose(alpha.flatten().numpy(), expected_alpha, rtol=1e-5)
        expected_sigma = np.sqrt((1 - expected_alpha**2) * 0.25 * n.numpy() ** (2 / 3))
        np.testing.assert_allclose(sigma_cell.flatten().numpy(), expected_sigma, rtol=1e-5)
        # and MatterGen's own marginal_prob agrees
        graph = session._graph(batch)
        _, std = session._cell_sde.marginal_prob(x=batch.cell, t=t, batch=graph)
        np.testing.assert_allclose(std[:, 0, 0].numpy(), expected_sigma, rtol=1e-5)
    limit_mean, _ = session._limit(batch)
    expected_mu = (n / 0.05771451654022283) ** (1 / 3)
    np.testing.assert_allclose(limit_mean[:, 0, 0].numpy(), expected_mu.numpy(), rtol=1e-5)
    assert float(limit_mean[0, 0, 1]) == 0.0


@pytest.mark.parametrize("t_value", [0.05, 0.5, 0.95])
def test_tweedie_of_the_exact_gaussian_score_returns_x0(tiny_model, t_value):
    torch.manual_seed(1)
    x0 = _clean_batch()
    session = _session(tiny_model, x0)
    t = torch.full((2,), t_value)
    _, sigma_pos = session.marginal("positions", t)
    alpha, sigma_cell = session.marginal("lattice", t)
    limit_mean, _ = session._limit(x0)
    frac_unwrapped = x0.frac + sigma_pos * torch.randn_like(x0.frac)
    cell_mean = alpha * x0.cell + (1 - alpha) * limit_mean
    cell_t = cell_mean + sigma_cell * torch.randn_like(x0.cell)
    x_t = x0.replace(frac=torch.remainder(frac_unwrapped, 1.0), cell=cell_t)
    exact = session.score(x_t, t).replace(
        positions=-(frac_unwrapped - x0.frac) / sigma_pos**2,
        lattice=-(cell_t - cell_mean) / sigma_cell**2,
    )
    estimate = session.tweedie(x_t, t, exact)
    frac_error = estimate.frac - torch.remainder(x0.frac, 1.0)
    frac_error = frac_error - torch.round(frac_error)
    assert frac_error.abs().max() < 1e-4
    assert torch.allclose(estimate.cell, x0.cell, atol=1e-3 * (1 + 1 / float(alpha.min())))
    assert ((estimate.frac >= 0) & (estimate.frac < 1)).all()


def test_score_shift_moves_the_tweedie_estimate_by_delta(tiny_model):
    x = _clean_batch()
    session = _session(tiny_model, x)
    t = torch.full((2,), 0.4)
    scores = session.score(x, t)
    delta_cell = 0.1 * torch.randn_like(x.cell)
    delta_pos = 0.01 * torch.randn_like(x.frac)
    shifted = scores.replace(
        lattice=scores.lattice + session.score_shift(x, t, "lattice", delta_cell),
        positions=scores.positions + session.score_shift(x, t, "positions", delta_pos),
    )
    before, after = session.tweedie(x, t, scores), session.tweedie(x, t, shifted)
    assert torch.allclose(after.cell - before.cell, delta_cell, atol=1e-4)
    moved = after.frac - before.frac
    assert torch.allclose(moved - torch.round(moved - delta_pos), delta_pos, atol=1e-5)


def _circular_moments(frac: torch.Tensor) -> torch.Tensor:
    angle = 2 * math.pi * frac
    return torch.stack([torch.cos(angle).mean(0), torch.sin(angle).mean(0)])


def test_kernels_compose_for_all_three_fields(tiny_model):
    """Noising s->u then u->t has the law of s->t (positions, lattice, species)."""
    torch.manual_seed(3)
    repeats = 4000
    num_atoms = torch.full((repeats,), 2)
    session = tiny_model.session(num_atoms, 100, device="cpu")
    start = CrystalBatch(
        frac=torch.tensor([[0.1, 0.2, 0.3], [0.6, 0.7, 0.8]]).repeat(repeats, 1),
        cell=(torch.eye(3) * 4.0 + 0.3).expand(repeats, 3, 3).clone(),
        numbers=torch.tensor([6, 8]).repeat(repeats),
        num_atoms=num_atoms,
    )
    s, u, t = (torch.full((repeats,), v) for v in (0.0, 0.35, 0.6))
    two_step = session.renoise(session.renoise(start, s, u), u, t)
    one_step = session.renoise(start, s, t)
    for sample in (two_step, one_step):
        assert ((sample.frac >= 0) & (sample.frac < 1)).all()
    # positions: circular moments of the wrapped normal, and their exact value
    _, sigma_s = session.marginal("positions", s)
    _, sigma_t = session.marginal("positions", t)
    variance = float((sigma_t**2 - sigma_s**2)[0])
    expected = torch.tensor(math.exp(-2 * math.pi**2 * variance))
    for sample in (two_step, one_step):
        moments = _circular_moments(sample.frac[::2])
        target = torch.stack([expected * torch.cos(2 * math.pi * torch.tensor([0.1, 0.2, 0.3])),
                              expected * torch.sin(2 * math.pi * torch.tensor([0.1, 0.2, 0.3]))])
        assert torch.allclose(moments, target, atol=4 / math.sqrt(repeats))
    # lattice: mean and variance
    alpha_s, _ = session.marginal("lattice", s)
    alpha_t, _ = session.marginal("lattice", t)
    ratio = float((alpha_t / alpha_s).flatten()[0])
    limit_mean, limit_var = session._limit(start)
    mean = ratio * start.cell[0] + (1 - ratio) * limit_mean[0]
    variance_cell = (1 - ratio**2) * limit_var[0]
    for sample in (two_step, one_step):
        assert torch.allclose(sample.cell.mean(0), mean, atol=5 * float(variance_cell.max().sqrt()) / math.sqrt(repeats))
        assert torch.allclose(sample.cell.var(0), variance_cell, rtol=0.1)
    # symmetric noise: the lattice noise matrix is symmetric
    noise = two_step.cell - mean
    assert torch.allclose(noise, noise.transpose(1, 2), atol=1e-5)
    # species: the surviving fraction is the product of the keep probabilities
    keep_su = float(session.species_keep_probability(s[:1], u[:1]))
    keep_ut = float(session.species_keep_probability(u[:1], t[:1]))
    keep_st = float(session.species_keep_probability(s[:1], t[:1]))
    assert keep_st == pytest.approx(keep_su * keep_ut, rel=1e-5)
    n_steps = 100
    index = lambda v: int(v * (n_steps - 1))  # noqa: E731
    assert keep_st == pytest.approx((n_steps - index(0.6) - 1) / (n_steps - index(0.0) - 1), rel=1e-5)
    mask_token = 101
    for sample in (two_step, one_step):
        survived = (sample.numbers != mask_token).float().mean()
        assert float(survived) == pytest.approx(keep_st, abs=4 * math.sqrt(keep_st * (1 - keep_st) / (2 * repeats)))


# ---------------------------------------------------------------------------- sampling
def _mattergen_sampler(model_dir, steps: int, guidance_factor: float):
    """MatterGen's own predictor-corrector sampler with MatterGen's default settings."""
    from hydra.utils import instantiate
    from mattergen.common.diffusion.predictors_correctors import (
        LatticeAncestralSamplingPredictor,
        LatticeLangevinDiffCorrector,
    )
    from mattergen.diffusion.d3pm.d3pm_predictors_correctors import D3PMAncestralSamplingPredictor
    from mattergen.diffusion.sampling.classifier_free_guidance import GuidedPredictorCorrector
    from mattergen.diffusion.wrapped.wrapped_predictors_correctors import (
        WrappedAncestralSamplingPredictor,
        WrappedLangevinCorrector,
    )
    from mattergen.property_embeddings import SetConditionalEmbeddingType, SetUnconditionalEmbeddingType
    from omegaconf import OmegaConf

    config = OmegaConf.load(model_dir / "config.yaml")
    config.lightning_module.diffusion_module.corruption.discrete_corruptions.atomic_numbers.d3pm.schedule.num_steps = steps
    module = instantiate(config.lightning_module)
    module.load_state_dict(torch.load(model_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"])
    module.eval()
    partial = functools.partial
    return GuidedPredictorCorrector(
        diffusion_module=module.diffusion_module, device=torch.device("cpu"), n_steps_corrector=1, N=steps,
        eps_t=1 / steps,
        predictor_partials={"pos": partial(WrappedAncestralSamplingPredictor),
                            "cell": partial(LatticeAncestralSamplingPredictor),
                            "atomic_numbers": partial(D3PMAncestralSamplingPredictor, predict_x0=True)},
        corrector_partials={"pos": partial(WrappedLangevinCorrector, max_step_size=1e6, snr=0.4),
                            "cell": partial(LatticeLangevinDiffCorrector, max_step_size=1e6, snr=0.2)},
        guidance_scale=guidance_factor, remove_conditioning_fn=SetUnconditionalEmbeddingType(),
        keep_conditioning_fn=SetConditionalEmbeddingType(),
    )


def _run_session(session: MatterGenSession, seed: int) -> CrystalBatch:
    torch.manual_seed(seed)
    x = session.prior()
    for t_value in session.timesteps():
        t = torch.full((len(session.num_atoms),), float(t_value))
        x = session.corrector(x, t)
        x = session.predictor(x, t, session.score(x, t))
    return session.last_mean()


@pytest.mark.parametrize("conditioned, factor", [(False, 0.0), (True, 2.0)])
def test_unguided_session_reproduces_mattergens_own_sampler(
    tiny_model_dir, tiny_conditioned_model_dir, tiny_model, tiny_conditioned_model, conditioned, factor
):
    # MatterGen's own sampler crashes when the (random) tiny model blows a cell up so far that
    # GemNet's graph is empty; these seeds keep every cell connected for 8 steps.
    steps, seed = 8, (4 if conditioned else 2)
    model = tiny_conditioned_model if conditioned else tiny_model
    model_dir = tiny_conditioned_model_dir if conditioned else tiny_model_dir
    conditions = {"chemical_system": "Li-Co-O"} if conditioned else None
    session = model.session(torch.tensor([8, 12, 16]), steps, conditions=conditions, guidance_factor=factor,
                            device="cpu")
    ours = _run_session(session, seed)
    sampler = _mattergen_sampler(model_dir, steps, factor)
    torch.manual_seed(seed)
    _, reference = sampler.sample(session._template)
    masked = reference["atomic_numbers"] == session.mask_token  # decoded by aseguide, kept by MatterGen
    assert torch.equal(ours.numbers[~masked], reference["atomic_numbers"][~masked])
    assert not (ours.numbers == session.mask_token).any()
    assert torch.allclose(ours.frac, reference["pos"], atol=1e-6)
    assert torch.allclose(ours.cell, reference["cell"], atol=1e-5)
    if conditioned:
        assert set(ours.numbers.tolist()) <= {3, 27, 8}


def test_classifier_free_combination_is_the_lerp(tiny_conditioned_model):
    x = _clean_batch()
    t = torch.full((2,), 0.5)
    scores = {}
    for factor in (0.0, 1.0, 2.0):
        session = tiny_conditioned_model.session(x.num_atoms, 10, conditions={"chemical_system": "Na-Cl-Si"},
                                                 guidance_factor=factor, device="cpu")
        scores[factor] = session.score(x, t)
    assert not torch.allclose(scores[0.0].positions, scores[1.0].positions)
    assert torch.allclose(scores[2.0].positions, 2 * scores[1.0].positions - scores[0.0].positions, atol=1e-5)
    assert torch.allclose(scores[2.0].lattice, 2 * scores[1.0].lattice - scores[0.0].lattice, atol=1e-5)


def test_structures_without_neighbours_do_not_crash_the_network(tiny_model):
    lonely = CrystalBatch(frac=torch.tensor([[0.5, 0.5, 0.5]]), cell=(60.0 * torch.eye(3))[None],
                          numbers=torch.tensor([6]), num_atoms=torch.tensor([1]))
    t = torch.full((1,), 0.3)
    scores = tiny_model.session(lonely.num_atoms, 10, device="cpu").score(lonely, t)
    assert torch.isfinite(scores.positions).all() and torch.isfinite(scores.lattice).all()
    # next to a normal crystal, the normal crystal's scores are unchanged
    normal = _clean_batch().select([1])
    both = CrystalBatch.concatenate([normal, lonely])
    t2 = torch.full((2,), 0.3)
    alone = tiny_model.session(normal.num_atoms, 10, device="cpu").score(normal, t2[:1])
    together = tiny_model.session(both.num_atoms, 10, device="cpu").score(both, t2)
    assert torch.allclose(together.positions[:2], alone.positions, atol=1e-5)
    assert torch.allclose(together.lattice[:1], alone.lattice, atol=1e-5)


def test_score_is_differentiable_for_forward_guidance(tiny_model):
    x = _clean_batch()
    session = _session(tiny_model, x)
    frac = x.frac.clone().requires_grad_(True)
    cell = x.cell.clone().requires_grad_(True)
    t = torch.full((2,), 0.5)
    with torch.enable_grad():
        xg = x.replace(frac=frac, cell=cell)
        estimate = session.tweedie(xg, t, session.score(xg, t))
        loss = (torch.linalg.det(estimate.cell) / x.num_atoms).sum()
        grad_frac, grad_cell = torch.autograd.grad(loss, [frac, cell])
    assert torch.isfinite(grad_frac).all() and grad_frac.abs().sum() > 0
    assert torch.isfinite(grad_cell).all() and grad_cell.abs().sum() > 0
