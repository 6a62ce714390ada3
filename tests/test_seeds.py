"""Seed structures, fixed formulas and fixed atoms (issue 17): exact noising, inpainting, bad input.

The analytic backend (:mod:`aseguide.models.analytic`) gives the exact law of the noised
seeds; the tiny random MatterGen model checks that everything runs through the real
backend (mask tokens, symmetric lattices, different sizes in one batch) and the
command line.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.constraints import FixAtoms, FixCartesian

from aseguide.models.analytic import GaussianBackend
from aseguide.sampling.dynamics import GuidedDiffusion
from aseguide.sampling.seeds import composition_numbers, polar_rotation

pytestmark = pytest.mark.usefixtures("one_thread")


def _seed(n: int = 2, a: float = 4.0) -> Atoms:
    """An ``n``-atom crystal in a slightly sheared cell (positions inside the cell)."""
    rng = np.random.default_rng(n)
    cell = a * np.eye(3) + 0.3 * np.triu(np.ones((3, 3)), 1)
    return Atoms(numbers=[6] * n, scaled_positions=rng.uniform(0.1, 0.9, (n, 3)), cell=cell, pbc=True)


def _wrapped_gap(frac_a: np.ndarray, frac_b: np.ndarray) -> np.ndarray:
    """Per-coordinate distance of fractional coordinates on the torus."""
    d = np.mod(frac_a - frac_b, 1.0)
    return np.minimum(d, 1.0 - d)


# ---------------------------------------------------------------------- analytic: the exact forward law
def test_noised_seeds_follow_the_forward_marginal_of_the_first_timestep_below_t0():
    """Mean and variance per coordinate of the start state against the closed-form marginal.

    ``start_time=0.55`` with 10 steps starts at ``t = 0.5`` (the first timestep <= t0),
    so the seeds must carry exactly the noise of ``t = 0.5``. With ``n = 4000`` samples,
    each sample mean is tested to 5 standard errors (``sigma / sqrt(n)``) and each
    sample variance to 5 standard errors of a Gaussian variance
    (``sigma^2 sqrt(2 / (n - 1))``): 15 + 9 tested numbers, a false alarm about 1e-5.
    """
    backend = GaussianBackend()
    seed = _seed(2)
    n = 4000
    opt = GuidedDiffusion(backend, None, seeds=[seed], start_time=0.55, samples_per_seed=n, steps=10, seed=3)
    assert (opt.first_step, opt.run_steps, opt.t) == (5, 5, pytest.approx(0.5))
    x = opt.state
    t, atoms = 0.5, 2
    sigma_pos = math.sqrt(backend.sigma_min**2 * ((backend.sigma_max / backend.sigma_min) ** (2 * t) - 1)
                          * atoms ** (-2 / 3))
    alpha = math.exp(-0.25 * t**2 * (backend.beta_max - backend.beta_min) - 0.5 * t * backend.beta_min)
    sigma_cell = math.sqrt((1 - alpha**2) * backend.var_scale * atoms ** (2 / 3))
    mu = (atoms / backend.density) ** (1 / 3) * np.eye(3)

    frac = x.frac.numpy().reshape(n, atoms * 3)
    cell = x.cell.numpy().reshape(n, 9)
    for values, mean, sigma in ((frac, seed.get_scaled_positions().reshape(-1), sigma_pos),
                                (cell, (alpha * seed.cell.array + (1 - alpha) * mu).reshape(-1), sigma_cell)):
        assert np.abs(values.mean(0) - mean).max() < 5 * sigma / math.sqrt(n)
        assert np.abs(values.var(0, ddof=1) - sigma**2).max() < 5 * sigma**2 * math.sqrt(2 / (n - 1))
    # the species are not diffused by the analytic backend: the seed's stay
    assert (x.numbers == 6).all()


@pytest.mark.parametrize("start_time", [0.0, 0.05])
def test_a_start_time_below_the_last_timestep_returns_the_seeds_bit_for_bit(start_time):
    """No timestep <= t0 (10 steps: the last is 0.1): nothing is generated, the seeds come back as given."""
    seeds = [_seed(2), _seed(3, a=5.0)]
    seeds[1].set_constraint(FixAtoms(indices=[0]))
    opt = GuidedDiffusion(GaussianBackend(), None, seeds=seeds, start_time=start_time, samples_per_seed=2, steps=10)
    assert opt.run() and opt.run_steps == 0
    out = opt.get_structures()
    assert [a.info["seed_index"] for a in out] == [0, 0, 1, 1]
    for atoms in out:
        seed = seeds[atoms.info["seed_index"]]
        assert np.array_equal(atoms.positions, seed.positions)
        assert np.array_equal(atoms.cell.array, seed.cell.array)
        assert np.array_equal(atoms.numbers, seed.numbers)


def test_seeds_may_be_one_atoms_or_any_iterable():
    seed = _seed(2)
    for seeds in (seed, (s for s in [seed, seed])):
        opt = GuidedDiffusion(GaussianBackend(), None, seeds=seeds, start_time=0.0, steps=4)
        opt.run()
        assert len(opt.get_structures()) == len(opt.seeds) == opt.batch_size
        assert opt.todict()["seeds"][0] == {"formula": "C2", "natoms": 2, "fixed": []}


def test_seed_variants_get_closer_as_start_time_shrinks_analytic():
    """The mean distance of generated cells to the seed's falls with ``t0`` (exact scores)."""
    seed = _seed(2)
    seed.cell[0, 1] = 0.8                                   # off the data (lattice mean 4 I, std 0.3)
    gaps = []
    for t0 in (0.6, 0.3, 0.1):
        opt = GuidedDiffusion(GaussianBackend(), None, seeds=[seed], start_time=t0, samples_per_seed=200,
                              steps=20, seed=1)
        opt.run()
        cells = np.stack([a.cell.array for a in opt.get_structures()])
        gaps.append(float(np.linalg.norm(cells - seed.cell.array, axis=(1, 2)).mean()))
    assert gaps[0] > gaps[1] > gaps[2]


def test_fixed_atoms_are_inpainted_with_the_noise_of_each_step_and_end_exactly():
    """FixAtoms atoms: noised known values at every step (law checked at t = 0.75), exact at the end."""
    seed = _seed(3)
    seed.set_constraint(FixAtoms(indices=[0, 2]))
    backend = GaussianBackend()
    n = 3000
    opt = GuidedDiffusion(backend, None, seeds=[seed], start_time=1.0, samples_per_seed=n, steps=4, seed=2)
    opt.run(1)                                              # one step: t = 1 -> 0.75
    t = 0.75
    sigma = math.sqrt(backend.sigma_min**2 * ((backend.sigma_max / backend.sigma_min) ** (2 * t) - 1) * 3 ** (-2 / 3))
    frac = opt.state.frac.numpy().reshape(n, 3, 3)
    known = seed.get_scaled_positions()
    for i in (0, 2):
        assert np.abs(frac[:, i].mean(0) - known[i]).max() < 5 * sigma / math.sqrt(n)
        assert np.abs(frac[:, i].var(0, ddof=1) - sigma**2).max() < 5 * sigma**2 * math.sqrt(2 / (n - 1))
    opt.run()
    out = opt.get_structures()
    for atoms in out[:20]:
        assert np.array_equal(atoms.get_scaled_positions(wrap=False)[[0, 2]], known[[0, 2]]) or \
            np.allclose(_wrapped_gap(atoms.get_scaled_positions(wrap=False)[[0, 2]], known[[0, 2]]), 0, atol=1e-12)
    moved = np.array([_wrapped_gap(a.get_scaled_positions(wrap=False)[1], known[1]).max() for a in out])
    assert (moved > 1e-3).mean() > 0.9                       # the free atom is generated


# ---------------------------------------------------------------------- the tiny MatterGen model
def test_tiny_mattergen_seeds_of_different_sizes_in_one_batch(tiny_model):
    seeds = [bulk("Si", cubic=True), bulk("NaCl", "rocksalt", a=5.6), bulk("Cu")]
    opt = GuidedDiffusion(tiny_model, None, seeds=seeds, start_time=0.4, samples_per_seed=2, steps=10, seed=0)
    assert opt.num_atoms.tolist() == [8, 8, 2, 2, 1, 1] and opt.batch_size == 6
    assert opt.first_step == 6 and opt.run_steps == 4
    # the start state: the species of the seeds, some masked by the absorbing D3PM
    numbers = opt.state.numbers
    mask = tiny_model.session(torch.tensor([1]), 10).mask_token
    assert set(numbers.tolist()) <= {14, 11, 17, 29, mask}
    opt.run()
    out = opt.get_structures()
    assert [len(a) for a in out] == [8, 8, 2, 2, 1, 1]
    assert [a.info["seed_index"] for a in out] == [0, 0, 1, 1, 2, 2]
    assert all(np.isfinite(a.positions).all() for a in out)
    d = opt.todict()
    assert d["start_time"] == 0.4 and d["samples_per_seed"] == 2 and d["seeds"][1]["formula"] == "ClNa"


def test_tiny_mattergen_fixed_atoms_and_cell_never_change(tiny_model):
    """Fixed species at every step, fixed atoms and cell exactly back at the end, free atoms move."""
    seed = bulk("NaCl", "rocksalt", a=5.6, cubic=True)
    seed.rattle(0.05, seed=1)                               # some fractional coordinates just below 0
    seed.set_constraint(FixAtoms(indices=[0, 1, 4]))
    opt = GuidedDiffusion(tiny_model, None, seeds=[seed, seed], start_time=0.7, steps=10, fix_cell=True, seed=4)
    fixed = torch.tensor([0, 1, 4, 8, 9, 12])
    species = []
    opt.attach(lambda: species.append(opt.state.numbers[fixed].clone()))
    opt.run()
    assert len(species) == opt.run_steps == 7
    assert all(torch.equal(s, torch.tensor([11, 17, 11] * 2)) for s in species)
    known = seed.get_scaled_positions(wrap=False)
    for atoms in opt.get_structures():
        assert np.array_equal(atoms.cell.array, seed.cell.array)
        assert (atoms.numbers[[0, 1, 4]] == seed.numbers[[0, 1, 4]]).all()
        assert _wrapped_gap(atoms.get_scaled_positions(wrap=False)[[0, 1, 4]], known[[0, 1, 4]]).max() < 1e-12
        free = [2, 3, 5, 6, 7]
        assert _wrapped_gap(atoms.get_scaled_positions(wrap=False)[free], known[free]).max() > 1e-3


def test_tiny_mattergen_composition_is_kept_at_every_step(tiny_model):
    opt = GuidedDiffusion(tiny_model, None, composition="LiCoO2", formula_units=2, batch_size=3, steps=6, seed=0)
    numbers = torch.tensor(composition_numbers("LiCoO2", 2) * 3)
    seen = [opt.state.numbers.clone()]
    opt.attach(lambda: seen.append(opt.state.numbers.clone()))
    opt.run()
    assert all(torch.equal(s, numbers) for s in seen)
    out = opt.get_structures()
    assert [a.get_chemical_formula() for a in out] == ["Co2Li2O4"] * 3
    assert opt.todict()["composition"] == "LiCoO2" and opt.todict()["formula_units"] == 2
    # the positions are generated: not all atoms at one place
    assert all(np.ptp(a.get_scaled_positions(), axis=0).max() > 1e-3 for a in out)


def test_composition_with_a_chemical_system_checkpoint(tiny_conditioned_model):
    opt = GuidedDiffusion(tiny_conditioned_model, None, composition="Li2O", num_atoms=6, batch_size=2, steps=3,
                          chemical_system="Li-O")
    opt.run()
    assert [a.get_chemical_formula() for a in opt.get_structures()] == ["Li4O2"] * 2
    with pytest.raises(ValueError, match=r"composition 'CoO'.*Co.*outside chemical_system='Li-O'"):
        GuidedDiffusion(tiny_conditioned_model, None, composition="CoO", batch_size=2, steps=3,
                        chemical_system="Li-O")


def test_guidance_acts_on_a_seeded_run(tiny_model):
    from aseguide.constraints import VolumePerAtom

    seed = bulk("Si", cubic=True)
    kwargs = dict(seeds=[seed], start_time=0.5, samples_per_seed=2, steps=8, seed=0, recurrence=1)
    free = GuidedDiffusion(tiny_model, None, **kwargs)
    free.run()
    guided = GuidedDiffusion(tiny_model, VolumePerAtom(target=40.0), backward_strength=2.0, **kwargs)
    guided.run()
    volume = [np.mean([a.get_volume() / len(a) for a in o.get_structures()]) for o in (free, guided)]
    assert volume[1] != pytest.approx(volume[0])


@pytest.mark.parametrize("kwargs, message", [
    (dict(composition="LiCoO2", formula_units=6, batch_size=1), r"composition 'LiCoO2': 24 atoms .* max_atoms=20"),
    (dict(composition="He2", batch_size=1), r"composition 'He2' has element\(s\) the model does not generate: He"),
    (dict(composition="LiXx2", batch_size=1), r"composition 'LiXx2'"),
    (dict(composition="Li0.5CoO2", batch_size=1), r"'Li0.5CoO2' has a non-integer amount"),
    (dict(composition="LiCoO2", num_atoms=6, batch_size=1), r"num_atoms=6 is not a whole number of formula units"),
    (dict(composition="LiCoO2", num_atoms=[4], batch_size=1), r"num_atoms must be one integer"),
    (dict(composition="", batch_size=1), r"composition must be a formula"),
    (dict(composition="LiCoO2", formula_units=0, batch_size=1), r"formula_units must be an integer >= 1, got 0"),
    (dict(formula_units=2, batch_size=1, num_atoms=4), r"formula_units=2 needs composition"),
    (dict(start_time=0.5, batch_size=1, num_atoms=4), r"start_time=0.5 needs seeds"),
    (dict(fix_cell=True, batch_size=1, num_atoms=4), r"fix_cell=True needs seeds"),
    (dict(seeds=[bulk("Si")], start_time=1.5), r"start_time must be in \[0, 1\].*1.5"),
    (dict(seeds=[bulk("Si")], samples_per_seed=0), r"samples_per_seed"),
    (dict(seeds=[bulk("Si")], num_atoms=2), r"num_atoms=2 cannot be combined with seeds"),
    (dict(seeds=[bulk("Si")], samples_per_seed=2, batch_size=3), r"batch_size=3 disagrees .* = 2"),
    (dict(seeds=[bulk("Si")], composition="Si2"), r"composition='Si2' and seeds= cannot be combined"),
    (dict(seeds=[bulk("Si", cubic=True).repeat((2, 2, 1))]), r"seeds: 32 atoms .* max_atoms=20"),
    (dict(seeds=[bulk("He", "fcc", a=4.0)]), r"the seeds has element\(s\) the model does not generate: He"),
    (dict(seeds=["Si.cif"]), r"seed 0 is a str, not an ase.Atoms"),
    (dict(seeds=[]), r"seeds is empty"),
    (dict(seeds=[Atoms("Si", cell=[3, 3, 3], pbc=[True, True, False])]), r"periodicity"),
    (dict(seeds=[bulk("Si")], fix_cell="yes"), r"fix_cell must be True or False, got 'yes'"),
])
def test_bad_requests_are_named_before_any_compute(tiny_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        GuidedDiffusion(tiny_model, None, steps=2, **kwargs)


def test_other_ase_constraints_on_a_seed_are_refused(tiny_model):
    seed = bulk("Si")
    seed.set_constraint(FixCartesian(0))
    with pytest.raises(ValueError, match="seed 0 .* FixCartesian constraint: only ase.constraints.FixAtoms"):
        GuidedDiffusion(tiny_model, None, seeds=[seed], steps=2)


def test_polar_rotation_turns_back_left_handed_cells():
    cell = torch.tensor([[[4.0, 0.3, 0.1], [0.2, -3.0, 0.4], [0.0, 0.5, 5.0]]], dtype=torch.float64)
    symmetric, rotation = polar_rotation(cell)
    assert torch.allclose(symmetric, symmetric.transpose(1, 2))
    assert (torch.linalg.eigvalsh(symmetric) > 0).all()
    assert torch.allclose(symmetric @ rotation, cell, atol=1e-12)


def test_mattergen_noise_is_the_training_corruption_from_clean_data(tiny_model):
    """``MatterGenSession.noise`` against MatterGen's own ``q(x_t | x_0)``.

    Positions (at ``t = 0.1``, where it matters): the std of the (torus) displacement is
    MatterGen's marginal std at ``t``, not the std accumulated from ``t = 0``
    (``sqrt(sigma_t^2 - sigma_0^2)``, 16 % smaller there); at ``t = 0.3``, lattice: mean
    ``alpha L0 + (1 - alpha) mu(N)``; species: the masked fraction is the mask
    probability of MatterGen's D3PM marginal. 300 structures of 8 atoms; tolerances are
    5 standard errors.
    """
    from aseguide.state import CrystalBatch

    n = 300
    x0 = CrystalBatch.from_atoms([bulk("NaCl", "rocksalt", a=5.6, cubic=True)] * n, dtype=torch.float32)
    session = tiny_model.session(x0.num_atoms, steps=10)
    torch.manual_seed(0)
    t = torch.full((n,), 0.1)
    xt = session.noise(x0, t)
    graph = session._template
    _, std = session._pos_sde.marginal_prob(x=x0.frac, t=t, batch_idx=x0.batch, batch=graph)
    sigma = float(std[0, 0])
    shift = torch.remainder(xt.frac - x0.frac + 0.5, 1.0) - 0.5
    m = shift.numel()
    assert sigma < 0.1                                      # the torus wrap is negligible at this level
    assert abs(float(shift.std()) - sigma) < 5 * sigma / math.sqrt(2 * (m - 1))
    assert abs(float(shift.mean())) < 5 * sigma / math.sqrt(m)
    t = torch.full((n,), 0.3)
    xt = session.noise(x0, t)
    mean, std_cell = session._cell_sde.marginal_prob(x=x0.cell, t=t, batch=graph)
    se = float(std_cell[0, 0, 0]) / math.sqrt(n)
    assert (xt.cell.mean(0) - mean[0]).abs().max() < 5 * se * math.sqrt(2)   # off-diagonal noise is symmetrised
    logits, _ = session._species_corruption.marginal_prob(x=x0.numbers, t=t, batch_idx=x0.batch)
    masked = float(torch.softmax(logits.double(), -1)[0, -1])
    fraction = float((xt.numbers == session.mask_token).double().mean())
    assert 0.02 < masked < 0.98
    assert abs(fraction - masked) < 5 * math.sqrt(masked * (1 - masked) / len(x0.numbers))
