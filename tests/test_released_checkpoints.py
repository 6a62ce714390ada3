"""MatterGen's nine released architectures, built with random weights from their real config.yaml.

Each ``config.yaml`` of ``../shared/data/mattergen-checkpoint-configs/`` is instantiated
with MatterGen's own classes, saved in the checkpoint layout and loaded through
:func:`aseguide.load_model`, as a user loads a downloaded checkpoint. The adapter
layers are perturbed (MatterGen zero-initialises them) so that conditions reach the
network. One model lives at a time (module-scoped parametrised fixture); structures
are tiny and runs a few steps long, because these networks have 44-53 M parameters.
"""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import shared_data
from omegaconf import OmegaConf

from aseguide import GuidedDiffusion, load_model
from aseguide.constraints import VolumePerAtom
from aseguide.models.conditions import PROPERTY_CONDITIONS, checkpoint_conditions
from aseguide.state import CrystalBatch, symbols_to_numbers

pytestmark = pytest.mark.slow

#: Released checkpoint -> the conditions requested in the tests (MatterGen's names and units).
RELEASED = {
    "mattergen_base": {},
    "mp_20_base": {},
    "chemical_system": {"chemical_system": "Li-Co-O"},
    "space_group": {"space_group": 225},
    "dft_band_gap": {"dft_band_gap": 1.5},
    "dft_mag_density": {"dft_mag_density": 0.15},
    "dft_mag_density_hhi_score": {"dft_mag_density": 0.15, "hhi_score": 1500.0},
    "ml_bulk_modulus": {"ml_bulk_modulus": 350.0},
    "chemical_system_energy_above_hull": {"chemical_system": "Li-Co-O", "energy_above_hull": 0.05},
}
#: A value of the wrong type and one outside the sensible range, per condition.
BAD_VALUES = {
    "chemical_system": [(42, "must be a string"), ("Li-Qq-O", "Qq")],
    "space_group": [(225.5, "must be an integer"), (231, "not a space group number")],
    "dft_band_gap": [("wide", "must be a number"), (-0.5, "outside the sensible range")],
    "dft_mag_density": [("0.15", "must be a number"), (7.0, "outside the sensible range")],
    "hhi_score": [([1500], "must be a number"), (20000.0, "outside the sensible range")],
    "ml_bulk_modulus": [(True, "must be a number"), (0.0, "outside the sensible range")],
    "energy_above_hull": [(float("nan"), "must be finite"), (-0.1, "outside the sensible range")],
}
NUM_ATOMS, BATCH = 4, 2


def _config_path(name: str):
    return shared_data("mattergen-checkpoint-configs", name, "config.yaml")


@pytest.fixture(scope="module", params=list(RELEASED))
def released(request, tmp_path_factory, one_thread):
    """``(name, checkpoint directory, loaded model)`` of one released architecture."""
    from aseguide.testing import make_model_from_config

    name = request.param
    directory = make_model_from_config(_config_path(name), tmp_path_factory.mktemp(name), seed=0)
    model = load_model(directory, device="cpu")
    yield name, directory, model
    (directory / "checkpoints" / "last.ckpt").unlink()  # about 200 MB each


def _trained_on(name: str) -> set[str]:
    """The conditions the config file itself declares (adapter and base embeddings)."""
    config = OmegaConf.load(_config_path(name))
    model = config.lightning_module.diffusion_module.model
    return set(model.get("property_embeddings") or {}) | set(model.get("property_embeddings_adapt") or {})


def _state(seed: int = 0) -> CrystalBatch:
    """Two 4-atom crystals with species MatterGen generates (a fixed noisy state)."""
    generator = torch.Generator().manual_seed(seed)
    frac = torch.rand(BATCH * NUM_ATOMS, 3, generator=generator)
    cell = torch.stack([3.9 * torch.eye(3), 4.3 * torch.eye(3) + 0.2]) + 0.05 * torch.randn(BATCH, 3, 3,
                                                                                             generator=generator)
    numbers = torch.tensor(symbols_to_numbers(["Li", "Co", "O", "O", "Na", "Cl", "Mg", "O"]))
    return CrystalBatch(frac=frac, cell=cell, numbers=numbers, num_atoms=torch.full((BATCH,), NUM_ATOMS))


def _allowed_numbers(conditions: dict) -> set[int]:
    from mattergen.common.utils.globals import SELECTED_ATOMIC_NUMBERS

    if "chemical_system" in conditions:
        return set(symbols_to_numbers(conditions["chemical_system"].split("-")))
    return set(SELECTED_ATOMIC_NUMBERS)


# ---------------------------------------------------------------------------- loading
def test_loads_as_released_with_its_conditions_and_the_sampling_mask(released):
    from mattergen.denoiser import mask_disallowed_elements

    name, directory, model = released
    assert 40e6 < model.num_parameters() < 55e6  # 44-53 M in the released checkpoints
    assert set(model.conditions) == _trained_on(name) == set(RELEASED[name])
    # known before loading (or downloading): by name and from the folder
    assert checkpoint_conditions(name) == checkpoint_conditions(directory) == model.conditions
    # the file on disk is the released one, untouched: the mask is added at loading time
    assert OmegaConf.load(directory / "config.yaml").lightning_module.diffusion_module.model.get(
        "element_mask_func") is None
    mask = model.diffusion_module.model.element_mask_func
    assert isinstance(mask, functools.partial) and mask.func is mask_disallowed_elements


# ---------------------------------------------------------------------------- guided sampling
def test_guided_steps_keep_the_requested_elements_and_stay_finite(released, tmp_path):
    name, _, model = released
    conditions = RELEASED[name]
    with GuidedDiffusion(model, VolumePerAtom(12.0), batch_size=BATCH, num_atoms=NUM_ATOMS, steps=3, seed=0,
                         start=0.0, recurrence=1, forward_strength=0.0, backward_strength=0.05,
                         trajectory=str(tmp_path / "run.extxyz"), **conditions) as opt:
        opt.run()
    structures = opt.get_structures()
    assert len(structures) == BATCH
    allowed = _allowed_numbers(conditions)
    for atoms in structures:
        assert atoms.info["finite"], atoms
        assert set(atoms.numbers.tolist()) <= allowed, (name, atoms.get_chemical_formula())
        assert torch.isfinite(torch.as_tensor(atoms.info["loss"]))
    assert opt.todict()["conditions"] == conditions
    assert opt.guidance_factor == (2.0 if conditions else 1.0)


# ---------------------------------------------------------------------------- scores
def _mattergen_scores(model, conditions: dict, x: CrystalBatch, t: torch.Tensor, factor: float, monkeypatch):
    """Scores of MatterGen's own conditioned path: its condition loader and its CFG sampler."""
    from mattergen.common.data.condition_factory import get_number_of_atoms_condition_loader
    from mattergen.common.data.num_atoms_distribution import NUM_ATOMS_DISTRIBUTIONS
    from mattergen.common.diffusion.predictors_correctors import LatticeAncestralSamplingPredictor
    from mattergen.diffusion.d3pm.d3pm_predictors_correctors import D3PMAncestralSamplingPredictor
    from mattergen.diffusion.sampling.classifier_free_guidance import GuidedPredictorCorrector
    from mattergen.diffusion.wrapped.wrapped_predictors_correctors import WrappedAncestralSamplingPredictor
    from mattergen.property_embeddings import SetConditionalEmbeddingType, SetUnconditionalEmbeddingType

    monkeypatch.setitem(NUM_ATOMS_DISTRIBUTIONS, "ASEGUIDE_TEST", {NUM_ATOMS: 1.0})
    loader = get_number_of_atoms_condition_loader("ASEGUIDE_TEST", num_samples=BATCH, batch_size=BATCH,
                                                  shuffle=False, properties=dict(conditions))
    batch, _ = next(iter(loader))
    batch = batch.replace(pos=x.frac, cell=x.cell, atomic_numbers=x.numbers)
    sampler = GuidedPredictorCorrector(
        diffusion_module=model.diffusion_module, device=torch.device("cpu"), corrector_partials={},
        predictor_partials={"pos": WrappedAncestralSamplingPredictor, "cell": LatticeAncestralSamplingPredictor,
                            "atomic_numbers": functools.partial(D3PMAncestralSamplingPredictor, predict_x0=True)},
        n_steps_corrector=1, N=1000, eps_t=1e-3, guidance_scale=factor,
        remove_conditioning_fn=SetUnconditionalEmbeddingType(), keep_conditioning_fn=SetConditionalEmbeddingType(),
    )
    with torch.no_grad():
        return sampler._score_fn(batch, t)


def _subsets(conditions: dict) -> list[dict]:
    """All the conditions together, then each alone when there are several."""
    return [conditions] + ([{k: v} for k, v in conditions.items()] if len(conditions) > 1 else [])


def test_conditions_reach_the_network_and_match_mattergens_own_path(released, monkeypatch):
    name, _, model = released
    conditions = RELEASED[name]
    x, t = _state(), torch.full((BATCH,), 0.5)
    factor = 2.0 if conditions else 0.0
    combined = None
    for requested in _subsets(conditions):
        with torch.no_grad():
            ours = model.session(x.num_atoms, 10, conditions=requested, guidance_factor=factor,
                                 device="cpu").score(x, t)
        combined = ours if combined is None else combined
        reference = _mattergen_scores(model, requested, x, t, factor, monkeypatch)
        for got, expected in ((ours.positions, reference["pos"]), (ours.lattice, reference["cell"]),
                              (ours.species, reference["atomic_numbers"])):
            assert torch.isfinite(got[got > -1e9]).all()
            assert torch.equal(got, expected), (requested, (got - expected).abs().max())
    if not conditions:
        return
    with torch.no_grad():
        conditional = model.session(x.num_atoms, 10, conditions=conditions, guidance_factor=1.0,
                                    device="cpu").score(x, t)
        unconditional = model.session(x.num_atoms, 10, conditions=conditions, guidance_factor=0.0,
                                      device="cpu").score(x, t)
    assert (conditional.positions - unconditional.positions).abs().max() > 1e-4
    assert (conditional.lattice - unconditional.lattice).abs().max() > 1e-4
    # the combination is MatterGen's lerp: 2 c - u
    assert torch.allclose(combined.positions, 2 * conditional.positions - unconditional.positions, atol=1e-4)


# ---------------------------------------------------------------------------- bad requests
def test_conditions_the_checkpoint_was_not_trained_on_are_refused_before_compute(released, tmp_path):
    name, _, model = released
    log = tmp_path / "run.log"
    for other in sorted(set(PROPERTY_CONDITIONS) - set(model.conditions))[:3]:
        value = "Li-O" if other == "chemical_system" else 1
        with pytest.raises(ValueError, match=rf"cannot be conditioned on '{other}'.*accepts: ") as error:
            GuidedDiffusion(model, None, batch_size=1, num_atoms=4, steps=2, logfile=str(log), **{other: value})
        for accepted in model.conditions:
            assert accepted in str(error.value)
        if not model.conditions:
            assert "no condition" in str(error.value)
    for condition in model.conditions:
        for value, message in BAD_VALUES[condition]:
            with pytest.raises(ValueError, match=message) as error:
                GuidedDiffusion(model, None, batch_size=1, num_atoms=4, steps=2, logfile=str(log),
                                **{condition: value})
            assert condition in str(error.value) and "accepts: " in str(error.value)
    assert not log.exists()


def test_aseguide_generate_takes_the_checkpoints_conditions(released, tmp_path):
    from ase.io import read

    from aseguide.cli import main

    name, directory, _ = released
    if name not in ("dft_band_gap", "space_group"):
        pytest.skip("one run per kind of value (float, integer) is enough")
    flag, value = ("--dft-band-gap", "1.5") if name == "dft_band_gap" else ("--space-group", "225")
    out = tmp_path / "out"
    common = ["--model", str(directory), "--num-structures", "1", "--batch-size", "1", "--num-atoms", "4",
              "--steps", "2", "-q"]
    assert main(["generate", *common, flag, value, "--output", str(out)]) == 0
    (atoms,) = read(out / "structures.extxyz", ":")
    assert f'"{name}": {value}' in atoms.info["guidance"]
    refused = tmp_path / "refused"
    bad = "-1.0" if name == "dft_band_gap" else "0"
    assert main(["generate", *common, flag, bad, "--output", str(refused)]) == 2
    assert main(["generate", *common, "--hhi-score", "1500", "--output", str(refused)]) == 2
    assert not refused.exists()
