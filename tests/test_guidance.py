"""Unit tests of the universal-guidance formulas (aseguide.sampling.guidance)."""

from __future__ import annotations

import math

import pytest
import torch

from aseguide.models.analytic import GaussianBackend, GaussianMixture
from aseguide.sampling.guidance import (
    SCHEDULES,
    UNGUIDED,
    GuidanceSettings,
    backward_guidance,
    descend_x0,
    diffusion_step,
    forward_guidance,
    is_guided_step,
    normalize_gradient,
    objective_gradients,
    schedule_weight,
    structure_finite,
    structure_norm,
)
from aseguide.state import CrystalBatch

pytestmark = pytest.mark.usefixtures("one_thread")


DT = torch.float64


class CellTarget:
    """l = 1/2 |L - C|_F^2 per structure (gradient direction depends on the point)."""

    def __init__(self, target):
        self.target = torch.as_tensor(target, dtype=DT)

    def loss(self, batch):
        return 0.5 * (batch.cell - self.target).square().sum((-1, -2))


class FracTarget:
    """l = 1/2 sum_atoms |x - c|^2 per structure."""

    def __init__(self, c):
        self.c = torch.as_tensor(c, dtype=DT)

    def loss(self, batch):
        per_atom = 0.5 * (batch.frac - self.c).square().sum(-1)
        return torch.zeros(batch.n_structures, dtype=per_atom.dtype).index_add(0, batch.batch, per_atom)


class Both:
    def __init__(self, *parts):
        self.parts = parts

    def loss(self, batch):
        return sum(p.loss(batch) for p in self.parts)


def _session(sizes=(2, 3, 1), seed=0, **kw):
    return GaussianBackend(**kw).session(torch.tensor(sizes), steps=50, seed=seed)


# ---------------------------------------------------------------------- normalisation
def test_normalisation_is_per_structure_not_per_batch():
    idx = torch.tensor([0, 0, 1, 1, 1, 2])
    g = torch.tensor([[3.0, 4, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=DT)
    n = normalize_gradient(g, idx, 3)
    assert torch.allclose(n[:2], g[:2] / 5.0)
    assert torch.allclose(n[2:5], g[2:5] / math.sqrt(3))
    assert torch.equal(n[5], torch.zeros(3, dtype=DT))  # zero gradient stays zero
    # each structure has unit norm (a batch-wide norm would give 1 only for the whole batch)
    assert torch.allclose(structure_norm(n, idx, 3), torch.tensor([1.0, 1.0, 0.0], dtype=DT))
    # scaling one structure's gradient does not change another's direction
    g2 = g.clone()
    g2[2:5] *= 1e6
    assert torch.equal(normalize_gradient(g2, idx, 3)[:2], n[:2])


def test_normalisation_lattice_and_floor():
    g = torch.zeros(3, 3, 3, dtype=DT)
    g[0, 0, 0], g[1] = 2.0, 1e-30
    n = normalize_gradient(g, floor=1e-20)
    assert torch.allclose(n[0, 0, 0], torch.tensor(1.0, dtype=DT))
    assert torch.allclose(n[1], torch.full((3, 3), 1e-10, dtype=DT))  # divided by the floor, not by its norm
    assert torch.equal(n[2], torch.zeros(3, 3, dtype=DT))


def test_structure_finite():
    idx = torch.tensor([0, 1, 1, 2])
    g = torch.zeros(4, 3, dtype=DT)
    g[2, 1] = float("inf")
    assert structure_finite(g, idx, 3).tolist() == [True, False, True]
    cell = torch.zeros(2, 3, 3, dtype=DT)
    cell[0, 2, 2] = float("nan")
    assert structure_finite(cell).tolist() == [False, True]


class CrossPoisoned(CellTarget):
    """NaN loss for the 3-atom structure, plus a batch-wide term whose backward is 0 * nan
    for *every* structure while that structure is in the batch."""

    def loss(self, batch):
        base = super().loss(batch)
        bad = batch.num_atoms == 3
        s = torch.sqrt(torch.where(bad, -base - 1, base + 1)).sum()
        q = base.sum() * s
        coupling = 0.0 * torch.where(torch.isfinite(q), q, torch.zeros_like(q))
        return base + coupling + torch.where(bad, torch.full_like(base, float("nan")), torch.zeros_like(base))


def test_objective_gradients_guard_isolates_the_bad_structure():
    x = _session().prior()
    target = torch.eye(3, dtype=DT) * 5
    # the naive batched backward is poisoned everywhere (so this test can fail)
    cell = x.cell.clone().requires_grad_(True)
    (naive,) = torch.autograd.grad(CrossPoisoned(target).loss(x.replace(cell=cell)).sum(), cell)
    assert bool(torch.isnan(naive).all())
    loss, grads, ok = objective_gradients(CrossPoisoned(target), x, ["positions", "lattice"])
    clean_loss, clean, clean_ok = objective_gradients(CellTarget(target), x, ["positions", "lattice"])
    assert ok.tolist() == [True, False, True] and bool(clean_ok.all())
    assert torch.equal(grads["lattice"][1], torch.zeros(3, 3, dtype=DT))
    assert torch.allclose(grads["lattice"][[0, 2]], clean["lattice"][[0, 2]], rtol=1e-14, atol=0)
    assert torch.allclose(clean["lattice"], x.cell - target)  # d/dL 1/2|L-C|^2
    assert torch.equal(grads["positions"], torch.zeros_like(x.frac))  # loss does not depend on frac
    assert torch.isnan(loss[1]) and torch.equal(loss[[0, 2]], clean_loss[[0, 2]])


def test_objective_gradients_guard_finite_loss_nan_gradient():
    x = _session().prior()

    class NanGrad(FracTarget):
        def loss(self, batch):
            base = super().loss(batch)
            bad = batch.num_atoms == 2
            r = torch.sqrt(base - base.detach() + torch.where(bad, -1.0, 1.0))  # nan only for that structure
            return torch.where(bad, base, base * r)

    loss, grads, ok = objective_gradients(NanGrad([0.5, 0.5, 0.5]), x, ["positions"])
    assert torch.isfinite(loss).all() and ok.tolist() == [False, True, True]
    assert torch.equal(grads["positions"][:2], torch.zeros(2, 3, dtype=DT))
    # d/dx [l r(l)] = (1 + l/2) dl/dx at r = 1
    assert torch.allclose(grads["positions"][2:], (1 + loss[x.batch[2:], None] / 2) * (x.frac[2:] - 0.5))


# ---------------------------------------------------------------------- schedules and gating
def test_schedule_shapes():
    ts = [0.0, 0.25, 0.5, 0.75, 1.0]
    assert [schedule_weight("constant", t) for t in ts] == [1.0] * 5
    inc = [schedule_weight("increasing", t) for t in ts]
    dec = [schedule_weight("decreasing", t) for t in ts]
    assert inc == [2.0, 1.5, 1.0, 0.5, 0.0]  # grows as sampling proceeds (t -> 0)
    assert dec == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert schedule_weight(lambda t: 3 * t, 0.5) == 1.5
    assert set(SCHEDULES) == {"constant", "increasing", "decreasing"}
    with pytest.raises(ValueError, match="linear"):
        schedule_weight("linear", 0.5)
    with pytest.raises(ValueError, match="-1"):
        schedule_weight(lambda t: -1.0, 0.5)
    with pytest.raises(ValueError, match="nan"):
        schedule_weight(lambda t: float("nan"), 0.5)


def test_start_and_every_gating():
    assert not is_guided_step(0.9, 0, 0.1, 1)  # strictly t < 1 - start
    assert is_guided_step(0.8999, 0, 0.1, 1)
    assert not is_guided_step(0.8, 0, 0.25, 1) and is_guided_step(0.7499, 0, 0.25, 1)
    assert [is_guided_step(0.5, i, 0.1, 3) for i in range(7)] == [True, False, False, True, False, False, True]
    assert not any(is_guided_step(t, 0, 1.0, 1) for t in (0.0, 0.5))  # start=1: never
    assert is_guided_step(0.999, 0, 0.0, 1) and not is_guided_step(1.0, 0, 0.0, 1)


# ---------------------------------------------------------------------- forward / backward
def test_one_backward_step_is_one_normalised_gradient_step_on_x0():
    session = _session()
    x = session.sample_marginal(0.4)
    t = torch.full((3,), 0.4, dtype=DT)
    objective = Both(CellTarget(torch.eye(3, dtype=DT) * 3.0), FracTarget([0.2, 0.9, 0.1]))
    s = session.score(x, t)
    x0 = session.tweedie(x, t, s)
    _, grads, _ = objective_gradients(objective, x0, ["positions", "lattice"])
    k = 0.07
    s2, ok = backward_guidance(session, x, t, s, objective, GuidanceSettings(backward_strength=k, backward_steps=1))
    moved = session.tweedie(x, t, s2)
    want_cell = x0.cell - k * normalize_gradient(grads["lattice"])
    want_frac = x0.frac - k * normalize_gradient(grads["positions"], x.batch, 3)
    assert bool(ok.all())
    assert torch.allclose(moved.cell, want_cell, atol=1e-12, rtol=0)
    assert torch.allclose(moved.frac, want_frac, atol=1e-12, rtol=0)
    # each structure's estimate moved by exactly k per field
    assert torch.allclose(structure_norm(moved.cell - x0.cell), torch.full((3,), k, dtype=DT))
    assert torch.allclose(structure_norm(moved.frac - x0.frac, x.batch, 3), torch.full((3,), k, dtype=DT))


def test_score_shift_factor_is_alpha_over_sigma_squared():
    session = _session()
    x = session.sample_marginal(0.6)
    t = torch.full((3,), 0.6, dtype=DT)
    s = session.score(x, t)
    settings = GuidanceSettings(backward_strength=0.1, backward_steps=2)
    delta, _ = descend_x0(CellTarget(torch.zeros(3, 3, dtype=DT)), session.tweedie(x, t, s), settings)
    s2, _ = backward_guidance(session, x, t, s, CellTarget(torch.zeros(3, 3, dtype=DT)), settings)
    alpha, sigma = session.marginal("lattice", t)
    assert float(alpha.min()) < 0.9  # the factor matters: alpha far from 1 here
    assert torch.allclose(s2.lattice - s.lattice, alpha / sigma**2 * delta["lattice"], rtol=1e-10, atol=0)
    assert torch.equal(s2.positions, s.positions)  # zero gradient: no positions shift


def test_descend_x0_takes_m_steps_and_follows_the_moving_gradient():
    x0 = CrystalBatch(torch.zeros(1, 3, dtype=DT), torch.eye(3, dtype=DT)[None], torch.tensor([6]), torch.tensor([1]))
    target = torch.eye(3, dtype=DT) * 1.25
    settings = GuidanceSettings(backward_strength=0.1, backward_steps=3, fields=["lattice"])
    delta, ok = descend_x0(CellTarget(target), x0, settings)
    # straight line towards the target: 3 steps of length 0.1 each
    u = (target - x0.cell[0]) / (target - x0.cell[0]).norm()
    assert torch.allclose(delta["lattice"][0], 0.3 * u)
    # m = 0 does nothing; unnormalised steps are raw gradient steps
    none = descend_x0(CellTarget(target), x0, GuidanceSettings(backward_strength=0.1, backward_steps=0))
    assert torch.equal(none[0]["lattice"], torch.zeros(1, 3, 3, dtype=DT))
    raw, _ = descend_x0(CellTarget(target), x0, GuidanceSettings(backward_strength=0.1, backward_steps=1,
                                                                 fields=["lattice"], normalize=False))
    assert torch.allclose(raw["lattice"][0], 0.1 * (target - x0.cell[0]))


def test_forward_guidance_is_gradient_at_x0_through_the_score():
    # single Gaussian: x̂0 is affine in x_t with a positive scalar slope per field, so the
    # normalised gradient through x̂0 equals the normalised gradient of l at x̂0
    session = _session()
    x = session.sample_marginal(0.3)
    t = torch.full((3,), 0.3, dtype=DT)
    objective = Both(CellTarget(torch.eye(3, dtype=DT) * 3.0), FracTarget([0.2, 0.9, 0.1]))
    g = 0.05
    s_fwd, ok = forward_guidance(session, x, t, objective, GuidanceSettings(forward_strength=g))
    s = session.score(x, t)
    _, grads, _ = objective_gradients(objective, session.tweedie(x, t, s), ["positions", "lattice"])
    assert bool(ok.all())
    assert torch.allclose(s_fwd.lattice, s.lattice - g * normalize_gradient(grads["lattice"]), atol=1e-12)
    assert torch.allclose(s_fwd.positions, s.positions - g * normalize_gradient(grads["positions"], x.batch, 3),
                          atol=1e-12)
    # the loss at x_t itself would point elsewhere: the test can tell the two apart
    _, at_xt, _ = objective_gradients(objective, x, ["lattice"])
    assert not torch.allclose(normalize_gradient(at_xt["lattice"]), normalize_gradient(grads["lattice"]), atol=1e-3)
    assert not s_fwd.lattice.requires_grad


def test_forward_guidance_per_structure_with_mixture_score():
    # with a mixture the Jacobian is not a scalar: check against autograd by hand, one structure at a time
    means = [[[4.0, 0, 0], [0, 4, 0], [0, 0, 4]], [[5.0, 0.5, 0], [0, 3, 0], [0, 0, 4.5]]]
    session = _session(lattice=GaussianMixture(means, [0.3, 0.5], [0.4, 0.6]))
    x = session.sample_marginal(0.5)
    t = torch.full((3,), 0.5, dtype=DT)
    objective = CellTarget(torch.eye(3, dtype=DT) * 3.0)
    s_fwd, _ = forward_guidance(session, x, t, objective, GuidanceSettings(forward_strength=0.2, fields=["lattice"]))
    s = session.score(x, t)
    for i in range(3):
        cell = x.cell.clone().requires_grad_(True)
        xi = x.replace(cell=cell)
        loss = objective.loss(session.tweedie(xi, t, session.score(xi, t)))[i]
        (grad,) = torch.autograd.grad(loss, cell)
        assert torch.allclose(grad[[j for j in range(3) if j != i]], torch.zeros(2, 3, 3, dtype=DT))
        assert torch.allclose(s_fwd.lattice[i], s.lattice[i] - 0.2 * grad[i] / grad[i].norm(), atol=1e-12)


# ---------------------------------------------------------------------- the step
class Recorder:
    """Wraps a session and records the calls (and whether autograd was on)."""

    def __init__(self, session):
        self.session, self.calls = session, []

    def __getattr__(self, name):
        attr = getattr(self.session, name)
        if name in ("corrector", "score", "predictor", "renoise", "tweedie", "score_shift"):
            def wrapped(*args, **kw):
                self.calls.append((name, torch.is_grad_enabled()))
                return attr(*args, **kw)
            return wrapped
        return attr


def test_unguided_step_is_exactly_corrector_score_predictor():
    backend = GaussianBackend(corrector_snr=0.1)
    a = Recorder(backend.session(torch.tensor([2, 3]), steps=10, seed=1))
    b = backend.session(torch.tensor([2, 3]), steps=10, seed=1)
    xa, xb = a.prior(), b.prior()
    t = a.timesteps()[3].repeat(2)
    out = diffusion_step(a, xa, t).x
    xc = b.corrector(xb, t)
    want = b.predictor(xc, t, b.score(xc, t))
    assert a.calls == [("corrector", False), ("score", False), ("predictor", False)]
    assert torch.equal(out.frac, want.frac) and torch.equal(out.cell, want.cell)
    # an objective with zero strengths and K = 1 is the same step
    a.calls.clear()
    diffusion_step(a, xa, t, CellTarget(torch.eye(3, dtype=DT)), UNGUIDED)
    assert [c for c, _ in a.calls] == ["corrector", "score", "predictor"]


@pytest.mark.parametrize("forward", [False, True])
def test_guided_step_call_sequence(forward):
    a = Recorder(_session())
    x = a.prior()
    t = a.timesteps()[10].repeat(3)
    settings = GuidanceSettings(forward_strength=0.1 if forward else 0.0, backward_strength=0.1, backward_steps=2,
                                recurrence=3)
    res = diffusion_step(a, x, t, CellTarget(torch.eye(3, dtype=DT)), settings)
    names = [c for c, _ in a.calls]
    assert names.count("corrector") == 1 and names.count("score") == 3 and names.count("predictor") == 3
    assert names.count("renoise") == 2 and names.count("score_shift") == 3 * 2  # two fields per pass
    grad_scores = [g for c, g in a.calls if c == "score"]
    assert grad_scores == [forward] * 3  # autograd through the network only with forward guidance
    order = [c for c in names if c in ("predictor", "renoise")]
    assert order == ["predictor", "renoise", "predictor", "renoise", "predictor"]
    assert bool(res.ok.all())


def test_recurrence_keeps_the_last_proposal():
    s1, s2 = _session(seed=5), _session(seed=5)
    x = s1.prior()
    assert torch.equal(s2.prior().cell, x.cell)  # same draw counter in both sessions
    t = s1.timesteps()[20].repeat(3)
    res = diffusion_step(s1, x, t, None, GuidanceSettings(recurrence=2))
    # by hand: pass 1, re-noise to t, pass 2
    p1 = s2.predictor(x, t, s2.score(x, t))
    x2 = s2.renoise(p1, t + s2.dt, t)
    p2 = s2.predictor(x2, t, s2.score(x2, t))
    assert torch.equal(res.x.cell, p2.cell) and torch.equal(res.x_in.cell, x2.cell)
    with pytest.raises(ValueError, match="recurrence must be an integer >= 1, got 0"):
        GuidanceSettings(recurrence=0)


# ---------------------------------------------------------------------- the settings object
@pytest.mark.parametrize("kwargs, match", [
    ({"forward_strength": -1}, "forward_strength must be in .* got -1"),
    ({"backward_strength": "big"}, "backward_strength must be a number, got 'big'"),
    ({"backward_steps": 1.5}, "backward_steps must be an integer >= 0, got 1.5"),
    ({"recurrence": 0}, "recurrence must be an integer >= 1, got 0"),
    ({"start": 2}, "start must be in .* got 2"),
    ({"every": True}, "every must be an integer >= 1, got True"),
    ({"forward_schedule": "linear"}, "forward_schedule must be one of .* got 'linear'"),
    ({"fields": ["species"]}, "cannot guide field 'species'"),
    ({"floor": 0}, "floor must be > 0"),
])
def test_settings_name_the_bad_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GuidanceSettings(**kwargs)


def test_settings_are_frozen_normalised_and_round_trip():
    import dataclasses

    s = GuidanceSettings(forward_strength=1, backward_steps=3, fields="lattice", normalize=0)
    assert (s.forward_strength, s.fields, s.normalize) == (1.0, ("lattice",), False)
    assert type(s.forward_strength) is float
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.recurrence = 2
    assert GuidanceSettings.from_dict(s.todict()) == s
    with pytest.raises(ValueError, match=r"unknown guidance key\(s\) \['strength'\]"):
        GuidanceSettings.from_dict({"strength": 1.0})


def test_settings_schedule_gates_and_scales():
    s = GuidanceSettings(forward_strength=0.2, backward_strength=0.1, start=0.5, every=2,
                         backward_schedule="increasing")
    assert s.strengths(0.6, 0) == (0.0, 0.0)           # before start
    assert s.strengths(0.25, 1) == (0.0, 0.0)          # off the every grid
    assert s.strengths(0.25, 2) == (0.2, 0.1 * schedule_weight("increasing", 0.25))
    step = s.at(0.25, 2)
    assert (step.forward_strength, step.backward_strength) == s.strengths(0.25, 2)
    assert GuidanceSettings(backward_steps=0).strengths(0.5, 0)[1] == 0.0
    assert not UNGUIDED.forward and not UNGUIDED.backward and UNGUIDED.recurrence == 1


def test_guidance_presets():
    """``preset`` starts from named settings; the other keys override; unknown names are named."""
    from aseguide.sampling.settings import PRESETS, GuidanceSettings

    assert GuidanceSettings.preset("paper") == GuidanceSettings()
    energy = GuidanceSettings.from_dict({"preset": "energy"})
    assert (energy.forward_strength, energy.backward_strength, energy.backward_steps, energy.recurrence,
            energy.every, energy.start, energy.fields) == (0.0, 1.0, 1, 1, 2, 0.5, ("positions",))
    assert not energy.forward and energy.backward
    assert energy.strengths(0.6, 0) == (0.0, 0.0) and energy.strengths(0.4, 1) == (0.0, 0.0)
    assert energy.strengths(0.4, 2) == (0.0, 1.0)
    assert GuidanceSettings.from_dict({"preset": "energy", "every": 4, "fields": ["positions", "lattice"]}) == \
        GuidanceSettings(**{**PRESETS["energy"], "every": 4, "fields": ["positions", "lattice"]})
    with pytest.raises(ValueError, match="unknown guidance preset 'fast'"):
        GuidanceSettings.from_dict({"preset": "fast"})
    with pytest.raises(ValueError, match="unknown guidance key"):
        GuidanceSettings.from_dict({"preset": "energy", "strength": 1})


def test_carbon_energy_study_uses_the_energy_preset():
    from pathlib import Path

    import yaml

    from aseguide.sampling.settings import GuidanceSettings

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples" / "carbon" / "config_ehull.yaml")
                            .read_text())
    assert GuidanceSettings.from_dict(config["guidance"]) == GuidanceSettings.preset("energy")
