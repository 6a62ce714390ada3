"""GuidedDiffusion: settings, ASE dynamics behaviour, reproducibility, and guided sampling."""

from __future__ import annotations

import json
import math

import ase.io
import numpy as np
import pytest
import torch

from aseguide.constraints import VolumePerAtom
from aseguide.models.analytic import GaussianBackend, GaussianMixture
from aseguide.optimize import GuidedDiffusion, sample_num_atoms

pytestmark = pytest.mark.usefixtures("one_thread")


DT = torch.float64


class Trace:
    """l = 1/2 (tr L - c)^2: normalised gradient is -sign(c - tr L) I / sqrt(3)."""

    def __init__(self, c):
        self.c = c

    def loss(self, batch):
        return 0.5 * (batch.cell.diagonal(dim1=-2, dim2=-1).sum(-1) - self.c) ** 2


class FracTarget:
    def __init__(self, c):
        self.c = c

    def loss(self, batch):
        per_atom = 0.5 * (batch.frac - self.c).square().sum(-1)
        return torch.zeros(batch.n_structures, dtype=per_atom.dtype).index_add(0, batch.batch, per_atom)

    def satisfied(self, batch):
        return self.loss(batch) < 0.05


def _opt(objective=None, **kw):
    kw = {"batch_size": 4, "num_atoms": 3, "steps": 12, "seed": 0, **kw}
    return GuidedDiffusion(kw.pop("model", GaussianBackend()), objective, **kw)


# ---------------------------------------------------------------------- settings
class PositionsOnly(GaussianBackend):
    fields = ("positions",)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"forward_strength": -0.1}, "forward_strength.*-0.1"),
        ({"backward_strength": -1}, "backward_strength.*-1"),
        ({"recurrence": 0}, "recurrence.*0"),
        ({"backward_steps": -1}, "backward_steps.*-1"),
        ({"start": 1.5}, "start.*1.5"),
        ({"start": -0.1}, "start.*-0.1"),
        ({"every": 0}, "every.*0"),
        ({"steps": 0}, "steps.*0"),
        ({"batch_size": 0}, "batch_size.*0"),
        ({"fields": ("species",)}, "species"),
        ({"fields": ("velocity",)}, "velocity"),
        ({"fields": ()}, "fields is empty"),
        ({"model": PositionsOnly()}, "lattice"),
        ({"num_atoms": 30, "model": GaussianBackend(max_atoms=20)}, "num_atoms=30.*max_atoms=20.*override"),
        ({"num_atoms": {4: 0.5, 40: 0.5}, "model": GaussianBackend(max_atoms=20)}, "max_atoms"),
        ({"num_atoms": 0}, "num_atoms"),
        ({"num_atoms": [2, 3]}, "2 entries"),
        ({"num_atoms": {4: -1.0}}, "probabilit"),
        ({"backward_schedule": "linear"}, "linear"),
        ({"trajectory_kind": "x1"}, "x1"),
        ({"floor": 0.0}, "floor"),
        ({"guidance_factor": -1.0}, "guidance_factor"),
        ({"loginterval": 0}, "loginterval"),
        ({"chemical_system": "Li-O", "model": PositionsOnly()}, None),  # allowed: analytic has the condition
    ],
)
def test_bad_settings_fail_at_construction(kwargs, match):
    if match is None:
        _opt(Trace(20.0), fields=("positions",), **kwargs)
        return
    with pytest.raises(ValueError, match=match):
        _opt(Trace(20.0), **kwargs)


def test_other_construction_errors():
    class NoConditions(GaussianBackend):
        conditions = ()

    with pytest.raises(ValueError, match="chemical_system"):
        _opt(model=NoConditions(), chemical_system="Li-O")
    with pytest.raises(ValueError, match=r"cannot be conditioned on 'space_group'.*accepts: chemical_system"):
        _opt(space_group=225)
    with pytest.raises(ValueError, match="unknown keyword backward_strenght=0.1: neither a GuidedDiffusion setting"):
        _opt(backward_strenght=0.1)
    with pytest.raises(ValueError, match="loss"):
        _opt(object())
    with pytest.raises(ValueError, match="ScoreBackend"):
        GuidedDiffusion(object(), None, batch_size=2, num_atoms=2)


def test_sample_num_atoms():
    assert sample_num_atoms(5, 3, 0).tolist() == [5, 5, 5]
    assert sample_num_atoms([1, 2, 3], 3, 0).tolist() == [1, 2, 3]
    a = sample_num_atoms({2: 0.25, 6: 0.75}, 4000, seed=3)
    assert set(a.tolist()) == {2, 6} and abs(float((a == 6).double().mean()) - 0.75) < 0.03
    assert torch.equal(a, sample_num_atoms({2: 0.25, 6: 0.75}, 4000, seed=3))
    b = sample_num_atoms("ALEX_MP_20", 200, seed=0)
    assert int(b.min()) >= 1 and int(b.max()) <= 20
    with pytest.raises(ValueError, match="NOPE"):
        sample_num_atoms("NOPE", 2, 0)


# ---------------------------------------------------------------------- ASE dynamics behaviour
def test_attach_irun_run_nsteps():
    opt = _opt(Trace(20.0))
    calls, once = [], []
    opt.attach(lambda: calls.append(opt.nsteps), interval=5)
    opt.attach(lambda: once.append(opt.nsteps), interval=-3)  # ASE: only after step 3
    gen = opt.irun(steps=4)
    assert [done for done in gen] == [False] * 4 and opt.nsteps == 4
    assert opt.run(steps=3) is False and opt.nsteps == 7
    assert opt.run() is True and opt.nsteps == 12 and opt.finished
    assert opt.run() is True and opt.nsteps == 12  # nothing left
    assert calls == [5, 10] and once == [3]
    with pytest.raises(RuntimeError):
        opt.step()


def test_todict_is_json_and_complete():
    opt = _opt(VolumePerAtom(10.0), backward_schedule=lambda t: t, num_atoms={3: 1.0})
    d = json.loads(json.dumps(opt.todict()))
    assert d["type"] == "diffusion" and d["diffusion-type"] == "GuidedDiffusion"
    for key, value in [("forward_strength", 0.01), ("backward_strength", 0.01), ("backward_steps", 2),
                       ("recurrence", 3), ("start", 0.1), ("every", 1), ("normalize", True), ("seed", 0)]:
        assert d[key] == value
    assert d["objective"]["name"] == "VolumePerAtom" and d["backward_schedule"] == "<lambda>"
    assert d["model"]["name"] == "GaussianBackend" and d["num_atoms"] == {"3": 1.0}


def test_trajectory_log_and_context_manager(tmp_path):
    traj, log = tmp_path / "run.traj", tmp_path / "run.log"
    with _opt(FracTarget(0.5), trajectory=str(traj), logfile=str(log), loginterval=4, start=0.3) as opt:
        opt.run()
    frames = ase.io.read(traj, ":")
    assert len(frames) == 4 * 3  # every structure, steps 4, 8, 12
    assert [a.info["step"] for a in frames] == [4] * 4 + [8] * 4 + [12] * 4
    assert [a.info["index"] for a in frames[:4]] == [0, 1, 2, 3]
    times = opt.session.timesteps()
    assert frames[0].info["t"] == pytest.approx(float(times[3]))
    assert all("loss" in a.info and a.info["kind"] == "x0" for a in frames)
    assert frames[-1].positions == pytest.approx(opt.get_structures()[-1].positions)  # last x̂0 = output here
    lines = log.read_text().splitlines()
    assert lines[0].split() == ["step", "t", "guided", "loss_mean", "loss_min", "loss_max", "satisfied",
                                "nonfinite", "time[s]"]
    rows = [ln.split() for ln in lines[1:]]
    assert [int(r[1]) for r in rows] == [4, 8, 12]
    assert [r[3] for r in rows] == ["no", "yes", "yes"]  # step 4 ran at t = 0.75 >= 1 - start
    losses = opt.current_losses()
    assert float(rows[-1][4]) == pytest.approx(losses.mean(), rel=1e-3)
    assert float(rows[-1][7]) == pytest.approx(opt.current_satisfied().mean(), abs=1e-3)


def test_trajectory_formats_kinds_and_writer_objects(tmp_path):
    path = tmp_path / "run.extxyz"
    opt = _opt(None, trajectory=str(path), trajectory_kind="xt", steps=3)
    opt.run()
    opt.close()
    frames = ase.io.read(path, ":")
    assert len(frames) == 12 and frames[0].info["kind"] == "xt" and frames[-1].info["step"] == 3
    # an open ASE Trajectory attached as an observer receives every structure
    from ase.io import Trajectory

    with Trajectory(str(tmp_path / "mine.traj"), "w") as t:
        opt = _opt(None, steps=4)
        opt.attach(t, interval=2)
        opt.run()
    assert len(ase.io.read(tmp_path / "mine.traj", ":")) == 2 * 4


def test_logfile_stdout(capsys):
    _opt(None, logfile="-", steps=2).run()
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[1].split()[4:7] == ["-", "-", "-"]


def test_lazy_views_do_not_copy_until_asked():
    opt = _opt(FracTarget(0.5))
    with pytest.raises(RuntimeError, match="no diffusion step"):
        opt.current_atoms()
    opt.run(steps=2)
    assert opt._cache == {}
    atoms = opt.current_atoms("x0")
    assert len(atoms) == 4 and atoms[0].info["step"] == 2 and "x0" in opt._cache
    xt = opt.current_batch("xt")
    assert xt.frac is opt._x.frac  # no copy of the state
    assert opt.current_losses().shape == (4,)
    with pytest.raises(ValueError, match="kind"):
        opt.current_batch("x1")


def test_get_structures_and_writers(tmp_path):
    opt = _opt(FracTarget(0.5), steps=6)
    with pytest.raises(RuntimeError, match="not finished"):
        opt.get_structures()
    opt.run()
    images = opt.get_structures()
    assert len(images) == 4 and [len(a) for a in images] == [3] * 4
    losses = FracTarget(0.5).loss(opt.final_batch())
    for i, a in enumerate(images):
        assert a.info["index"] == i and a.info["seed"] == 0 and a.info["finite"] is True
        assert a.info["loss"] == pytest.approx(float(losses[i]))
        assert json.loads(a.info["guidance"])["steps"] == 6
    assert opt.write(tmp_path / "out.extxyz") == 4
    back = ase.io.read(tmp_path / "out.extxyz", ":")
    assert [a.info["loss"] for a in back] == pytest.approx([a.info["loss"] for a in images])
    assert back[2].positions == pytest.approx(images[2].positions)
    assert opt.write(tmp_path / "out.cif") == 4
    assert len(ase.io.read(tmp_path / "out.cif", ":")) == 4


# ---------------------------------------------------------------------- reproducibility, isolation
def _final(opt):
    opt.run()
    return opt.final_batch()


def test_same_seed_bit_identical_and_independent_of_global_rng():
    kw = dict(forward_strength=0.05, backward_strength=0.05, recurrence=2, steps=10)
    a = _final(_opt(FracTarget(0.2), **kw))
    torch.manual_seed(123)
    opt = _opt(FracTarget(0.2), **kw)
    opt.attach(lambda: torch.rand(5), interval=1)  # an observer using torch's global RNG
    state = torch.get_rng_state()
    b = _final(opt)
    assert torch.equal(a.frac, b.frac) and torch.equal(a.cell, b.cell)
    # the run restores the caller's RNG stream (the observer's draws aside)
    torch.set_rng_state(state)
    c = _final(_opt(FracTarget(0.2), **kw, seed=1))
    assert not torch.equal(a.cell, c.cell)


def test_a_structure_does_not_change_when_another_is_added():
    """Issue test 5: per-structure normalisation and per-structure noise streams."""
    kw = dict(forward_strength=0.05, backward_strength=0.2, recurrence=2, steps=15, start=0.0)
    objective = VolumePerAtom(25.0)
    small = _final(_opt(objective, batch_size=3, num_atoms=[3, 5, 2], **kw))
    large = _final(_opt(objective, batch_size=4, num_atoms=[3, 5, 2, 4], **kw))
    assert torch.equal(large.select([0, 1, 2]).frac, small.frac)
    assert torch.equal(large.cell[:3], small.cell)
    # and guidance did act
    unguided = _final(_opt(None, batch_size=3, num_atoms=[3, 5, 2], **kw))
    assert not torch.allclose(unguided.cell, small.cell)


def test_nonfinite_guidance_is_isolated_reported_and_marked(tmp_path):
    class Poison(FracTarget):
        """NaN loss for the 5-atom structure, and a batch-wide term whose backward is
        0 * nan for every structure while that one is in the batch."""

        def loss(self, batch):
            base = super().loss(batch)
            bad = batch.num_atoms == 5
            s = torch.sqrt(torch.where(bad, -base - 1, base + 1)).sum()
            q = base.sum() * s
            coupling = 0.0 * torch.where(torch.isfinite(q), q, torch.zeros_like(q))
            return base + coupling + torch.where(bad, torch.full_like(base, float("nan")), torch.zeros_like(base))

    kw = dict(batch_size=3, num_atoms=[3, 5, 2], steps=10, backward_strength=0.1, recurrence=1)
    log = tmp_path / "log"
    opt = _opt(Poison(0.3), logfile=str(log), **kw)
    bad = _final(opt)
    clean = _final(_opt(FracTarget(0.3), **kw))
    n_guided = sum(1 for t in opt.session.timesteps() if float(t) < 0.9)
    assert opt.nonfinite_steps.tolist() == [0, n_guided, 0]
    assert torch.equal(bad.select([0, 2]).frac, clean.select([0, 2]).frac)
    assert torch.equal(bad.cell[[0, 2]], clean.cell[[0, 2]])
    text = log.read_text()
    assert "non-finite guidance gradient zeroed for structures [1]" in text
    info = opt.get_structures()[1].info
    assert info["nonfinite_steps"] == n_guided and math.isnan(info["loss"])


# ---------------------------------------------------------------------- guided sampling against the analysis
def _expected_trace_shift(times, dt, n_atoms, k_of_step, m, s_data=0.3, beta=(0.1, 20.0), var_scale=0.25):
    """Deterministic displacement of each diagonal lattice entry caused by backward guidance,
    written from the formulas of the forward process, independently of the backend code.

    Single-Gaussian data (std ``s_data``), the ancestral bridge predictor, and a guidance step
    of exactly ``m k / sqrt(3)`` per diagonal entry (normalised, trace far below target).
    """
    def coeffs(t):
        alpha = math.exp(-0.25 * t * t * (beta[1] - beta[0]) - 0.5 * t * beta[0])
        return alpha, (1 - alpha**2) * var_scale * n_atoms ** (2 / 3)

    delta = 0.0
    for i, t in enumerate(times):
        s = max(t + dt, 0.0)
        a_t, v_t = coeffs(t)
        a_s, v_s = coeffs(s)
        a = a_t / a_s
        tau2 = v_t - a * a * v_s
        c0, c1 = tau2 * a_s / v_t, a * v_s / v_t
        jac = a_t * s_data**2 / (a_t**2 * s_data**2 + v_t)  # d x̂0 / d x_t
        delta = c0 * (jac * delta + m * k_of_step(i, t) / math.sqrt(3)) + c1 * delta
    return delta


@pytest.mark.parametrize("start, every, schedule", [(0.15, 1, "constant"), (0.5, 3, "increasing")])
def test_quadratic_objective_moves_samples_where_the_analysis_says(start, every, schedule):
    """Issue test 3: exact per-sample shift (same noise), monotone in k."""
    steps, n, m = 40, 4, 2
    target = 40.0  # the data trace is 12 +- 0.5: every estimate stays far below, the direction is fixed
    base = dict(batch_size=64, num_atoms=n, steps=steps, seed=5, recurrence=1, forward_strength=0.0,
                backward_steps=m, start=start, every=every, backward_schedule=schedule)
    unguided = _final(_opt(None, **base))
    times = [float(t) for t in GaussianBackend().session(torch.tensor([n]), steps, seed=0).timesteps()]
    weight = {"constant": lambda t: 1.0, "increasing": lambda t: 2 * (1 - t)}[schedule]
    gaps = []
    for k in (0.0, 0.01, 0.03, 0.1):
        guided = _final(_opt(Trace(target), backward_strength=k, **base))
        expect = _expected_trace_shift(
            times, -1.0 / steps, n, lambda i, t, k=k: k * weight(t) if (t < 1.0 - start and i % every == 0) else 0.0, m)
        diff = guided.cell - unguided.cell
        assert torch.allclose(diff.diagonal(dim1=-2, dim2=-1), torch.full((64, 3), expect, dtype=DT),
                              atol=1e-9, rtol=1e-9)
        off = ~torch.eye(3, dtype=torch.bool)
        assert torch.allclose(diff[:, off], torch.zeros(64, 6, dtype=DT), atol=1e-12)
        assert torch.equal(guided.frac, unguided.frac)  # zero gradient on positions: untouched
        gaps.append(float((target - guided.cell.diagonal(dim1=-2, dim2=-1).sum(-1)).mean()))
    assert all(a > b for a, b in zip(gaps, gaps[1:]))  # monotonically towards the target
    assert gaps[-1] < gaps[0] - 0.1


def test_volume_guidance_with_a_real_objective_on_the_analytic_model():
    lattice = GaussianMixture([np.eye(3) * 3.0], [0.3])  # 27 Å^3 / N
    kw = dict(batch_size=64, num_atoms=3, steps=30, seed=2, recurrence=1)  # same draws: paired
    unguided = _final(_opt(None, model=GaussianBackend(lattice=lattice), **kw))
    opt = _opt(VolumePerAtom(12.0), model=GaussianBackend(lattice=lattice), backward_strength=0.05, **kw)
    guided = _final(opt)
    vpa = lambda b: (b.volume() / b.num_atoms).numpy()  # noqa: E731
    assert np.median(np.abs(vpa(guided) - 12.0)) < 0.5 * np.median(np.abs(vpa(unguided) - 12.0))
    assert np.mean(vpa(guided) > vpa(unguided)) > 0.9


def test_writers_never_write_nonfinite_structures(tmp_path):
    from ase.build import bulk

    from aseguide.io import write_structures

    good, bad = bulk("Si"), bulk("Si")
    bad.positions[0, 0] = float("nan")
    with pytest.warns(UserWarning, match="1 structure"):
        assert write_structures(tmp_path / "x.extxyz", [good, bad, good]) == 2
    assert len(ase.io.read(tmp_path / "x.extxyz", ":")) == 2
    with pytest.raises(ValueError, match="single structure"):
        write_structures(tmp_path / "x.vasp", [good])


def test_unguided_run_is_the_plain_predictor_corrector_loop():
    """objective=None: seed, session, prior, then corrector -> score -> predictor per step, nothing else."""
    opt = _opt(None, batch_size=3, num_atoms=[2, 4, 3], steps=7, seed=11)
    out = _final(opt)
    torch.manual_seed(11)
    session = GaussianBackend().session(torch.tensor([2, 4, 3]), 7)
    x = session.prior()
    for t in session.timesteps():
        t = t.repeat(3)
        x = session.corrector(x, t)
        x = session.predictor(x, t, session.score(x, t))
    assert torch.equal(out.frac, session.last_mean().frac) and torch.equal(out.cell, session.last_mean().cell)
    assert opt.t == pytest.approx(0.0, abs=1e-12) and opt.nsteps == 7


@pytest.mark.parametrize("forward, backward", [(0.0, 0.05), (0.05, 0.0)])
def test_loss_that_ignores_every_guided_field_guides_nothing(forward, backward):
    """A lattice-only loss with only positions guided: zero guidance, not an autograd error."""
    def run(objective):
        with GuidedDiffusion(GaussianBackend(), objective, batch_size=3, num_atoms=4, steps=8, seed=2,
                             fields=("positions",), forward_strength=forward, backward_strength=backward,
                             recurrence=1, start=0.0) as opt:
            opt.run()
        return opt.get_structures()

    guided, unguided = run(VolumePerAtom(12.0)), run(None)
    for a, b in zip(guided, unguided):
        np.testing.assert_allclose(a.get_scaled_positions(wrap=False), b.get_scaled_positions(wrap=False),
                                   atol=1e-6)
        np.testing.assert_allclose(a.cell[:], b.cell[:], atol=1e-6)


# ---------------------------------------------------------------- issue 16: ASE habits
def test_attach_trajectory_write_the_ase_idiom_writes_the_batch(tmp_path):
    from ase.io.trajectory import Trajectory

    path = tmp_path / "observed.traj"
    traj = Trajectory(str(path), "w")
    with GuidedDiffusion(GaussianBackend(), VolumePerAtom(10.0), batch_size=3, num_atoms=2, steps=6,
                         backward_strength=0.05, recurrence=1) as opt:
        opt.attach(traj.write, interval=2)  # ase: dyn.attach(traj.write, interval=n)
        opt.run()
    traj.close()
    frames = ase.io.read(path, ":")
    assert len(frames) == 3 * 3
    assert [a.info["step"] for a in frames] == [2] * 3 + [4] * 3 + [6] * 3


def test_observed_frames_carry_the_info_of_final_structures(tmp_path):
    from ase.io.trajectory import Trajectory

    path = tmp_path / "observed.traj"
    seen = []
    with Trajectory(str(path), "w") as traj, GuidedDiffusion(
            GaussianBackend(), VolumePerAtom(10.0), batch_size=2, num_atoms=2, steps=4,
            backward_strength=0.05, recurrence=1) as opt:
        opt.attach(traj, interval=1)
        opt.attach(lambda: seen.append(opt.current_atoms()), interval=1)
        opt.run()
    final = opt.get_structures()
    for frames in (ase.io.read(path, ":"), [a for batch in seen for a in batch]):
        for atoms in frames:
            assert set(final[0].info) <= set(atoms.info), set(final[0].info) - set(atoms.info)
            assert np.isfinite(atoms.info["loss"])
    assert seen[-1][1].info["loss"] == pytest.approx(final[1].info["loss"])
    assert seen[-1][1].info["satisfied"] == final[1].info["satisfied"]


@pytest.mark.parametrize("kind", ["x0", "xt"])
def test_last_trajectory_frame_is_the_final_structure(tmp_path, tiny_model, kind):
    path = tmp_path / "run.traj"
    with GuidedDiffusion(tiny_model, VolumePerAtom(12.0), batch_size=4, num_atoms=5, steps=3, seed=3,
                         backward_strength=0.05, recurrence=1, trajectory=str(path),
                         trajectory_kind=kind) as opt:
        opt.run()
    final = opt.get_structures()
    last = ase.io.read(path, ":")[-4:]
    for frame, atoms in zip(last, final):
        assert frame.get_chemical_formula() == atoms.get_chemical_formula()
        assert (frame.numbers == atoms.numbers).all()
        np.testing.assert_allclose(frame.positions, atoms.positions, atol=1e-5)
        np.testing.assert_allclose(frame.cell.array, atoms.cell.array, atol=1e-5)
        assert frame.info["loss"] == pytest.approx(atoms.info["loss"], rel=1e-5)


def test_settings_object_is_the_same_as_the_keywords():
    from aseguide.sampling.settings import GuidanceSettings

    keywords = dict(backward_strength=0.05, recurrence=2, backward_schedule="decreasing", fields=("lattice",))
    with _opt(Trace(20.0), **keywords) as a, _opt(Trace(20.0), settings=GuidanceSettings(**keywords)) as b:
        a.run()
        b.run()
        assert a.settings == b.settings and a.recurrence == 2 and a.fields == ("lattice",)
        assert torch.equal(a.final_batch().cell, b.final_batch().cell)
        assert a.todict() == b.todict()
    with pytest.raises(ValueError, match=r"either as settings= or as keywords, not both: \['recurrence'\]"):
        _opt(Trace(20.0), settings=GuidanceSettings(), recurrence=1)


def test_every_guidance_setting_is_a_keyword():
    import inspect

    from aseguide.sampling.settings import GUIDANCE_KEYS, GuidanceSettings

    parameters = inspect.signature(GuidedDiffusion).parameters
    assert set(GUIDANCE_KEYS) <= set(parameters) and "settings" in parameters
    defaults = GuidanceSettings()
    with _opt(Trace(20.0)) as opt:
        assert all(getattr(opt, name) == getattr(defaults, name) for name in GUIDANCE_KEYS)
