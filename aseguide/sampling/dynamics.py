"""GuidedDiffusion: universal guidance on a crystal diffusion model as an ASE dynamics object.

One step of the dynamics is one diffusion timestep of a whole batch of crystals. The
object behaves like ASE's ``MolecularDynamics``: ``attach(function, interval)``,
``irun()``, ``run()``, ``nsteps``, ``todict()``, ``logfile=``, ``trajectory=``, and it
is a context manager that closes the files it opened.

Examples
--------
>>> import torch
>>> from aseguide.models.analytic import GaussianBackend
>>> from aseguide.sampling.dynamics import GuidedDiffusion
>>> class Trace:                                     # any objective with loss(batch) -> (S,)
...     def loss(self, batch):
...         return (batch.cell.diagonal(dim1=-2, dim2=-1).sum(-1) - 13.0).abs()
>>> with GuidedDiffusion(GaussianBackend(), Trace(), batch_size=4, num_atoms=3, steps=20,
...                      backward_strength=0.05, recurrence=1) as opt:
...     opt.run()
True
>>> atoms = opt.get_structures()
>>> len(atoms), sorted(atoms[0].info)[:3]
(4, ['finite', 'guidance', 'index'])
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.optimize.optimize import BaseDynamics

from aseguide.composition import normalize_chemical_system
from aseguide.models.base import CONTINUOUS_FIELDS, ScoreBackend
from aseguide.precision import check_precision
from aseguide.sampling.guidance import diffusion_step
from aseguide.sampling.num_atoms import sample_num_atoms
from aseguide.sampling.seeds import (
    ConstrainedSession,
    KnownParts,
    check_elements,
    composition_numbers,
    seed_batch,
)
from aseguide.sampling.settings import GUIDANCE_KEYS, GuidanceSettings, check_integer, check_number
from aseguide.sampling.writers import FrameWriter, write_structures
from aseguide.state import CrystalBatch, symbols_to_numbers

__all__ = ["GuidedDiffusion"]

_KINDS = ("x0", "xt")


def _guidance_settings(settings: GuidanceSettings | None, keywords: dict[str, Any]) -> GuidanceSettings:
    """``settings``, or the settings built from the keywords given (not ``None``)."""
    given = {name: value for name, value in keywords.items() if value is not None}
    if settings is None:
        return GuidanceSettings(**given)
    if not isinstance(settings, GuidanceSettings):
        raise ValueError(f"settings must be a GuidanceSettings, got {type(settings).__name__}")
    if given:
        raise ValueError(f"give the guidance settings either as settings= or as keywords, not both: {sorted(given)}")
    return settings


def _check_fields(model: ScoreBackend, objective, fields: tuple[str, ...]) -> None:
    """Refuse guided fields the model does not diffuse, and an objective with nothing to guide."""
    for f in fields:
        if f not in model.fields:
            raise ValueError(f"cannot guide field {f!r}: {type(model).__name__} diffuses {model.fields}")
    if objective is not None and not fields:
        raise ValueError(f"fields is empty: name at least one of {CONTINUOUS_FIELDS} to guide")


def _check_conditions(model: ScoreBackend, conditions: dict[str, Any]) -> dict[str, Any]:
    """Conditions checked against ``model`` (its ``validate_conditions`` when it has one)."""
    from aseguide.models.conditions import PROPERTY_CONDITIONS, check_conditions, describe_accepted

    conditions = {name: value for name, value in conditions.items() if value is not None}
    for name, value in conditions.items():
        if name not in PROPERTY_CONDITIONS:
            raise ValueError(f"unknown keyword {name}={value!r}: neither a GuidedDiffusion setting nor a "
                             f"MatterGen condition; the model accepts: {describe_accepted(model.conditions)}")
    validate = getattr(model, "validate_conditions", None)
    if callable(validate):
        return validate(conditions)
    return check_conditions(conditions, accepted=model.conditions, model=type(model).__name__)


def _known_parts(model: ScoreBackend, *, batch_size, num_atoms, seeds, start_time, samples_per_seed,
                 composition, formula_units, fix_cell) -> tuple[KnownParts | None, list[int] | None, Any, Any]:
    """Check the seed / composition settings; ``(known parts, atoms per structure, batch_size, num_atoms)``.

    Everything is checked before any model call: sizes against ``model.max_atoms``,
    species against ``model.supported_elements``.
    """
    if not isinstance(fix_cell, (bool, np.bool_)):
        raise ValueError(f"fix_cell must be True or False, got {fix_cell!r}")
    if seeds is None:
        for name, value in (("start_time", start_time), ("samples_per_seed", samples_per_seed)):
            if value is not None:
                raise ValueError(f"{name}={value!r} needs seeds= (seed structures to start from)")
        if fix_cell:
            raise ValueError("fix_cell=True needs seeds= (the cells to keep)")
    if composition is None and formula_units is not None:
        raise ValueError(f"formula_units={formula_units!r} needs composition= (a formula such as 'LiCoO2')")
    if seeds is not None and composition is not None:
        raise ValueError(f"composition={composition!r} and seeds= cannot be combined: the seeds give the species "
                         "(fix some with ase.constraints.FixAtoms)")
    if seeds is not None:
        known, what = _seed_parts(model, seeds, batch_size, num_atoms, start_time, samples_per_seed, fix_cell)
    elif composition is not None:
        known, what = _composition_parts(model, composition, batch_size, num_atoms, formula_units)
    else:
        if batch_size is None or num_atoms is None:
            raise ValueError("give batch_size and num_atoms (or seeds=, or composition=)")
        return None, None, batch_size, num_atoms
    counts = known.batch.num_atoms.tolist()
    if model.max_atoms is not None and max(counts) > model.max_atoms:
        raise ValueError(f"{what}: {max(counts)} atoms per structure is more than the model's "
                         f"max_atoms={model.max_atoms}")
    return known, counts, len(counts), num_atoms


def _seed_parts(model: ScoreBackend, seeds, batch_size, num_atoms, start_time, samples_per_seed,
                fix_cell) -> tuple[KnownParts, str]:
    if num_atoms is not None:
        raise ValueError(f"num_atoms={num_atoms!r} cannot be combined with seeds=: the seeds give the sizes")
    n = 1 if samples_per_seed is None else check_integer("samples_per_seed", samples_per_seed, 1)
    if start_time is not None:
        start_time = check_number("start_time", start_time)
        if not 0.0 <= start_time <= 1.0:
            raise ValueError(f"start_time must be in [0, 1] (1 = pure noise), got {start_time!r}")
    known = seed_batch(seeds, n, fix_cell=bool(fix_cell))
    expected = known.batch.n_structures
    if batch_size is not None and check_integer("batch_size", batch_size, 1) != expected:
        raise ValueError(f"batch_size={batch_size!r} disagrees with {expected // n} seed(s) x "
                         f"samples_per_seed={n} = {expected}; leave batch_size out")
    check_elements(known.batch.numbers, model.supported_elements, "the seeds")
    return known, "seeds"


def _composition_parts(model: ScoreBackend, composition, batch_size, num_atoms, formula_units
                       ) -> tuple[KnownParts, str]:
    if batch_size is None:
        raise ValueError("batch_size is required with composition=")
    size = check_integer("batch_size", batch_size, 1)
    numbers = composition_numbers(composition, formula_units, num_atoms)
    what = f"composition {composition!r}"
    check_elements(numbers, model.supported_elements, what)
    counts = [len(numbers)] * size
    z = torch.as_tensor(numbers * size, dtype=torch.long)
    batch = CrystalBatch(frac=torch.zeros(len(z), 3, dtype=torch.float64),
                         cell=torch.eye(3, dtype=torch.float64).expand(size, 3, 3).clone(),
                         numbers=z, num_atoms=torch.as_tensor(counts, dtype=torch.long))
    return KnownParts(batch=batch, species=torch.ones(len(z), dtype=torch.bool),
                      positions=torch.zeros(len(z), dtype=torch.bool), cell=torch.zeros(size, dtype=torch.bool)), what


def symbols_from(numbers: Sequence[int]) -> str:
    """``"Li, O"`` from atomic numbers."""
    from ase.data import chemical_symbols

    return ", ".join(chemical_symbols[int(z)] for z in numbers)


def _describe_seed(atoms: Atoms) -> dict[str, Any]:
    """A seed in :meth:`GuidedDiffusion.todict`: its formula, size and fixed atoms."""
    fixed = sorted({int(i) for c in atoms.constraints for i in c.get_indices()})
    return {"formula": atoms.get_chemical_formula(), "natoms": len(atoms), "fixed": fixed}


def _is_writer_method(function) -> bool:
    """Whether ``function`` is the bound ``write`` of an ASE trajectory writer or a :class:`FrameWriter`."""
    from ase.io.trajectory import TrajectoryWriter

    owner = getattr(function, "__self__", None)
    return getattr(function, "__name__", None) == "write" and isinstance(owner, (TrajectoryWriter, FrameWriter))


def _rng_devices(device: torch.device) -> list[int]:
    return [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []


class GuidedDiffusion(BaseDynamics):
    """Generate a batch of crystals with training-free universal guidance.

    Per guided step (docs/method.md, section 5): corrector -> score -> forward guidance
    (``s -= g_t n(grad_{x_t} l(x̂0(x_t)))``, through the network) -> backward guidance
    (``m`` steps of normalised gradient descent on ``x̂0``, then the score shift
    ``(alpha_t/sigma_t^2) delta``) -> predictor, with ``K`` passes (self-recurrence:
    the proposal is re-noised from ``t + dt`` back to ``t`` between passes, the last one
    is kept). ``n`` divides each structure's gradient of each field by its own norm.
    Unguided steps (before ``start``, off the ``every`` grid, or ``objective=None``) are
    exactly the backend's predictor-corrector step.

    Parameters
    ----------
    model : ScoreBackend
        A :class:`~aseguide.models.base.ScoreBackend` (e.g. from ``load_model``).
    objective : Objective or None
        Anything with ``loss(batch) -> (S,)`` differentiable in ``batch.frac`` and
        ``batch.cell`` (an :mod:`aseguide.constraints` objective, possibly
        ``Combined``), or ``None`` for unguided sampling.
    batch_size : int
        Number of structures generated together (with ``seeds``: optional, it is
        ``len(seeds) * samples_per_seed``).
    num_atoms : int, sequence of int, mapping or str
        Atoms per structure: see :func:`~aseguide.sampling.num_atoms.sample_num_atoms`.
        Not with ``seeds`` (their sizes); with ``composition`` an int, the total number
        of atoms (instead of ``formula_units``).
    seeds : ase.Atoms or sequence of ase.Atoms, optional
        Seed crystals (atom counts may differ): each is noised with the backend's exact
        forward kernel to the first timestep ``<= start_time`` and the reverse process
        (guided as usual) runs from there to 0, ``samples_per_seed`` times. Small
        ``start_time`` gives close variants; ``start_time`` below the last timestep
        (e.g. 0) takes no step and returns the seeds unchanged. A seed's
        ``ase.constraints.FixAtoms`` atoms keep their species and fractional positions
        (inpainting: replaced at every step by their known values noised to that time,
        by the exact values at the end); the other atoms' species are noised and
        regenerated (MatterGen; the analytic backend keeps them). The cell enters in the
        backend's data form and comes back in the seed's orientation (see
        :mod:`aseguide.sampling.seeds`).
    start_time : float, optional
        ``t0`` in [0, 1] (1 = pure noise); with ``seeds`` only, default 1.0.
    samples_per_seed : int, optional
        Structures generated from each seed (default 1); structure ``j`` of the batch
        comes from seed ``j // samples_per_seed`` (``atoms.info["seed_index"]``).
    composition : str, optional
        A fixed formula, e.g. ``"LiCoO2"``: every structure has exactly these species
        (set, never sampled), ``formula_units`` times (or ``num_atoms`` atoms in all);
        positions and lattice are generated and guided. Not with ``seeds``.
    formula_units : int, optional
        Formula units of ``composition`` per structure (default 1).
    fix_cell : bool
        With ``seeds``: keep every seed's cell (inpainted like fixed atoms).
    chemical_system : str or sequence of str, optional
        Conditioning (e.g. ``"Li-Co-O"``) for models trained on it.
    **conditions:
        Other property conditions of a conditioned checkpoint, in MatterGen's names and
        units: ``space_group`` (1-230), ``dft_band_gap`` (eV), ``dft_mag_density``
        (μB/Å³), ``ml_bulk_modulus`` (GPa), ``hhi_score`` (0-10000),
        ``energy_above_hull`` (eV/atom), ... (see
        :data:`aseguide.models.conditions.PROPERTY_CONDITIONS`); alone or together, as
        the checkpoint was trained (``model.conditions``). ``None`` values are ignored.
    steps : int, optional
        Number of diffusion timesteps; ``None``: the model's ``default_steps`` (1000 for
        MatterGen's checkpoints, as its own sampler; a model trained by ``aseguide train``
        records its own, e.g. 250 for ``carbon-24-small``).
    seed : int
        Seeds torch's generator before the session and the prior are created (as
        MatterGen's own sampler does) and the ``num_atoms`` draw; the sampler keeps its
        own random stream between steps, so observers may use torch's RNG freely.
    device : torch.device or str, optional
        Torch device of the session.
    trajectory : str, os.PathLike or writer, optional
        Path (``.traj``, ``.extxyz``, ...) or an object with ``write(atoms)``: every
        ``loginterval`` steps, every structure of the batch is appended, with the
        ``atoms.info`` of :meth:`current_atoms` (that of the final structures, ``loss``
        included, plus ``step``, ``t``, ``kind``). The frames of the last step are the
        structures :meth:`get_structures` returns.
    trajectory_kind : {'x0', 'xt'}
        ``"x0"`` (default): the Tweedie estimate the step's predictor used — a clean
        crystal with real species; ``"xt"``: the noisy state after the step, with the
        species of ``x̂0`` (noisy species may be mask tokens).
    logfile : str, os.PathLike or file, optional
        Path, open file or ``"-"`` (stdout): a table with step, t, whether guided,
        loss mean/min/max of ``x̂0``, fraction satisfying the objective (when it has
        ``satisfied``), number of structures whose guidance gradient was not finite
        (zeroed) since the last line, and step time.
    loginterval : int
        Log and trajectory interval in steps.
    forward_strength, backward_strength : float, optional
        ``g`` and ``k`` (default 0.01 each); with ``normalize`` these are step lengths
        (fractional units for positions, Å for the lattice).
    backward_steps : int, optional
        ``m``, gradient steps on ``x̂0`` per pass (default 2).
    recurrence : int, optional
        ``K``, passes per guided step (default 3; 1 = no self-recurrence).
    normalize : bool, optional
        Normalise gradients per structure and per field (default ``True``).
    start : float, optional
        Fraction of the trajectory before guidance begins: guidance acts only at
        diffusion times ``t < 1 - start`` (``t``: 1 = noise, 0 = data). The default 0.1
        is the authors' setting, guidance for ``t < 0.9``.
    every : int, optional
        Guidance acts only on steps whose index is a multiple of ``every`` (default 1).
    forward_schedule, backward_schedule : str or callable, optional
        ``"constant"`` (default), ``"increasing"`` (``2 (1 - t)``), ``"decreasing"``
        (``2 t``) or a callable of ``t``: multiplier of the strength.
    fields : sequence of str, optional
        Guided fields, among ``("positions", "lattice")`` (default both).
    floor : float, optional
        Gradient-norm floor of the normalisation (default
        :data:`~aseguide.sampling.settings.DEFAULT_FLOOR`).
    settings : GuidanceSettings, optional
        All the guidance settings above as one
        :class:`~aseguide.sampling.settings.GuidanceSettings`, instead of the keywords
        (giving both is an error). The keywords left ``None`` take the defaults of
        :class:`~aseguide.sampling.settings.GuidanceSettings`.
    guidance_factor : float, optional
        Classifier-free guidance factor (MatterGen's ``diffusion_guidance_factor``);
        ``None``: 2.0 when any condition is given, else 1.0.
    precision : str, optional
        Precision policy of the network (``"mixed"``, ``"fp32"``, ``"bf16"``; see
        :mod:`aseguide.precision`), passed to ``model.session`` when the backend lists it in
        ``model.precisions`` (MatterGen); a backend without a network (the analytic one)
        ignores it. ``None``: the backend's default.

    Raises
    ------
    ValueError
        At construction, for any invalid setting (naming the value); for a condition the
        model was not trained on or a bad condition value, naming the value and the
        conditions the model accepts.
    """

    def __init__(
        self,
        model: ScoreBackend,
        objective=None,
        *,
        batch_size: int | None = None,
        num_atoms=None,
        chemical_system: str | Sequence[str] | None = None,
        steps: int | None = None,
        seed: int = 0,
        device: torch.device | str | None = None,
        trajectory=None,
        trajectory_kind: str = "x0",
        logfile=None,
        loginterval: int = 1,
        forward_strength: float | None = None,
        backward_strength: float | None = None,
        backward_steps: int | None = None,
        recurrence: int | None = None,
        normalize: bool | None = None,
        start: float | None = None,
        every: int | None = None,
        forward_schedule: str | Callable[[float], float] | None = None,
        backward_schedule: str | Callable[[float], float] | None = None,
        fields: Sequence[str] | None = None,
        guidance_factor: float | None = None,
        floor: float | None = None,
        precision: str | None = None,
        settings: GuidanceSettings | None = None,
        seeds: Atoms | Sequence[Atoms] | None = None,
        start_time: float | None = None,
        samples_per_seed: int | None = None,
        composition: str | None = None,
        formula_units: int | None = None,
        fix_cell: bool = False,
        **conditions: Any,
    ) -> None:
        if not isinstance(model, ScoreBackend):
            raise ValueError(f"model must be a ScoreBackend (e.g. from load_model), got {type(model).__name__}")
        if objective is not None and not callable(getattr(objective, "loss", None)):
            raise ValueError(f"objective {objective!r} has no loss(batch) method")
        self.model = model
        self.objective = objective
        if seeds is not None and not isinstance(seeds, Atoms):
            seeds = list(seeds)                      # a generator is read once
        known, counts_given, batch_size, num_atoms = _known_parts(
            model, batch_size=batch_size, num_atoms=num_atoms, seeds=seeds, start_time=start_time,
            samples_per_seed=samples_per_seed, composition=composition, formula_units=formula_units,
            fix_cell=fix_cell)
        self.batch_size = check_integer("batch_size", batch_size, 1)
        self.steps = check_integer("steps", model.default_steps if steps is None else steps, 1)
        self.seed = check_integer("seed", seed, 0)
        self.loginterval = check_integer("loginterval", loginterval, 1)
        arguments = locals()
        self.settings = _guidance_settings(settings, {name: arguments[name] for name in GUIDANCE_KEYS})
        if trajectory_kind not in _KINDS:
            raise ValueError(f"trajectory_kind must be one of {_KINDS}, got {trajectory_kind!r}")
        self.trajectory_kind = trajectory_kind
        _check_fields(model, objective, self.settings.fields)
        conditions = _check_conditions(model, {"chemical_system": chemical_system, **conditions})
        self.chemical_system = conditions.get("chemical_system")
        self.conditions = conditions
        if guidance_factor is None:
            guidance_factor = 2.0 if conditions else 1.0
        self.guidance_factor = check_number("guidance_factor", guidance_factor)
        self.num_atoms_request = num_atoms
        self.precision = None if precision is None else check_precision(precision)
        #: the seed crystals as given (``None`` without seeds)
        self.seeds = None if seeds is None else ([seeds] if isinstance(seeds, Atoms) else list(seeds))
        self.start_time = None if seeds is None else (1.0 if start_time is None else float(start_time))
        self.samples_per_seed = None if seeds is None else (samples_per_seed or 1)
        self.composition, self.formula_units, self.fix_cell = composition, formula_units, bool(fix_cell)
        if known is not None and isinstance(self.chemical_system, str):
            allowed = set(symbols_to_numbers(normalize_chemical_system(self.chemical_system)))
            outside = sorted(set(known.batch.numbers[known.species].tolist()) - allowed)
            if outside:
                what = f"composition {composition!r}" if composition is not None else "a FixAtoms seed atom"
                raise ValueError(f"{what} has element(s) {symbols_from(outside)} outside "
                                 f"chemical_system={self.chemical_system!r}")
        if counts_given is not None:
            self.num_atoms_request = counts_given[0] if composition is not None else list(counts_given)
            counts = torch.as_tensor(counts_given, dtype=torch.long)
        else:
            counts = sample_num_atoms(num_atoms, self.batch_size, self.seed, model.max_atoms)
        self._known = known

        super().__init__(None, logfile=logfile, trajectory=None)
        self._logging = logfile is not None
        self._open_session(counts, device)
        self._times_cpu = [float(t) for t in self._times.detach().cpu()]
        #: number of timesteps this dynamics takes (the schedule's tail from ``start_time`` on)
        self.run_steps = len(self._times_cpu)
        self.num_atoms = self.session.num_atoms
        S = self.batch_size
        self._nonfinite_steps = torch.zeros(S, dtype=torch.long, device=self._x.device)
        self._bad_since_log = torch.zeros(S, dtype=torch.bool, device=self._x.device)
        self._last = None           # (x_in, t, scores) of the last pass of the last step
        self._cache: dict[str, Any] = {}
        self._guided = False
        self._step_time = 0.0
        self._header_written = False

        self.trajectory = trajectory
        if trajectory is not None:
            writer = FrameWriter(trajectory)
            if not hasattr(trajectory, "write"):
                self.closelater(writer)
            self._frames = writer
            self.attach(self._write_frame, interval=self.loginterval)

    def _open_session(self, counts: torch.Tensor, device: torch.device | str | None) -> None:
        """Seed torch, open the model's session and draw the prior, on the sampler's own random stream."""
        options = {}
        if self.precision is not None and self.precision in self.model.precisions:
            options["precision"] = self.precision
        # the device whose RNG the session will use: the requested one, else the model's
        self.device = torch.device(device) if device is not None else torch.device(getattr(self.model, "device", "cpu"))
        self._rng_devs = _rng_devices(self.device)
        with torch.random.fork_rng(devices=self._rng_devs):
            torch.manual_seed(self.seed)
            self.session = self.model.session(counts, self.steps, conditions=self.conditions or None,
                                              guidance_factor=self.guidance_factor, device=device, **options)
            times = self.session.timesteps()
            #: index in the model's schedule of the first timestep taken
            self.first_step = 0
            if self._known is None:
                self._x: CrystalBatch = self.session.prior()
            else:
                self.session = ConstrainedSession(self.session, self._known)
                if self.start_time is None:
                    self._x = self.session.prior()
                else:
                    # the first timestep <= t0 (a float32 hair of tolerance for times like 1 - i/steps)
                    self.first_step = int((times > self.start_time + 1e-6).sum())
                    times = times[self.first_step:]
                    if len(times):
                        self._x = self.session.start(times[:1].expand(len(counts)))
                    else:  # no timestep <= t0: nothing to generate, the seeds come back as given
                        self.session = self.session.everything_known()
                        self._x = self.session.known
            self._times = times
            self._rng = self._get_rng()

    # ------------------------------------------------------------------ RNG
    def _get_rng(self):
        state = [torch.get_rng_state()]
        if self.device.type == "cuda":
            state.append(torch.cuda.get_rng_state(self.device))
        return state

    def _set_rng(self, state) -> None:
        torch.set_rng_state(state[0])
        if len(state) > 1:
            torch.cuda.set_rng_state(state[1], self.device)

    # ------------------------------------------------------------------ properties
    @property
    def finished(self) -> bool:
        """Whether every timestep of the schedule has been taken."""
        return self.nsteps >= self.run_steps

    @property
    def t(self) -> float:
        """Diffusion time of the current state (after ``nsteps`` steps)."""
        if not self._times_cpu:
            return 0.0
        if self.nsteps == 0:
            return self._times_cpu[0]
        return max(self._times_cpu[self.nsteps - 1] + self.session.dt, 0.0) if self.finished \
            else self._times_cpu[self.nsteps]

    @property
    def state(self) -> CrystalBatch:
        """The current noisy state ``x_t`` on the session device, in the model's frame (no copy).

        Before the first step: the prior, or the seeds noised to the first timestep
        (species may hold the backend's mask token).
        """
        return self._x

    def strengths(self, step: int) -> tuple[float, float]:
        """``(g_t, k_t)`` at step index ``step`` of this run (zero where guidance does not act).

        The ``every`` grid counts steps of the model's schedule (``first_step + step``).
        """
        if self.objective is None:
            return 0.0, 0.0
        return self.settings.strengths(self._times_cpu[step], self.first_step + step)

    def __getattr__(self, name: str) -> Any:
        # the guidance settings read as attributes of the dynamics (opt.recurrence, ...)
        if name in GUIDANCE_KEYS and "settings" in self.__dict__:
            return getattr(self.settings, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------------ dynamics
    def step(self) -> None:
        """Take one diffusion timestep (index ``nsteps``) of the whole batch."""
        if self.finished:
            raise RuntimeError(f"the schedule has {self.run_steps} steps and all were taken")
        i = self.nsteps
        g, k = self.strengths(i)
        self._guided = g > 0 or k > 0
        t = self._times[i].repeat(self.batch_size)
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=self._rng_devs):
            self._set_rng(self._rng)
            if self._guided:
                settings = self.settings.at(self._times_cpu[i], self.first_step + i)
                result = diffusion_step(self.session, self._x, t, self.objective, settings)
            else:
                result = diffusion_step(self.session, self._x, t)
            self._rng = self._get_rng()
        if self._logging and self._x.device.type == "cuda":
            torch.cuda.synchronize(self._x.device)
        self._step_time = time.perf_counter() - t0
        self._x = result.x
        self._last = (result.x_in, t, result.scores)
        self._cache = {}
        if result.ok is not None:
            bad = ~result.ok
            self._nonfinite_steps += bad
            self._bad_since_log |= bad

    def irun(self, steps: int | None = None):
        """Run as a generator: yields after every diffusion step (``True`` once finished).

        Parameters
        ----------
        steps : int, optional
            Maximum number of steps to take; ``None``: the rest of the schedule.

        Unlike ASE's ``MolecularDynamics``, nothing is logged or observed at step 0:
        the prior holds no crystal yet.
        """
        remaining = self.run_steps - self.nsteps
        n = remaining if steps is None else min(check_integer("steps", steps, 0), remaining)
        self.max_steps = self.nsteps + n
        for _ in range(n):
            self.step()
            self.nsteps += 1
            if self.nsteps % self.loginterval == 0 or self.finished:
                self.log()
            self.call_observers()
            yield self.finished

    def run(self, steps: int | None = None) -> bool:
        """Run ``steps`` timesteps (default: the rest of the schedule); ``True`` once finished."""
        for _ in self.irun(steps):
            pass
        return self.finished

    def attach(self, function, interval: int = 1, *args, **kwargs) -> None:
        """Call ``function(*args, **kwargs)`` every ``interval`` steps (ASE semantics).

        A writer — an object with a ``write`` method (e.g. an open
        ``ase.io.Trajectory``), or the ``write`` method of an ``ase.io.Trajectory`` /
        :class:`~aseguide.sampling.writers.FrameWriter` given without arguments (the ASE idiom
        ``dyn.attach(traj.write, interval=n)``) — instead receives every structure of
        the current batch (kind ``trajectory_kind``, with the ``atoms.info`` of
        :meth:`current_atoms`).
        """
        writer = None
        if not callable(function) and hasattr(function, "write"):
            writer = function
        elif not args and not kwargs and _is_writer_method(function):
            writer = function.__self__
        if writer is not None:
            def function():
                images = self.current_atoms(self.trajectory_kind)
                if isinstance(writer, FrameWriter):
                    writer.write(images)
                else:
                    for atoms in images:
                        writer.write(atoms)

        super().attach(function, interval, *args, **kwargs)

    # ------------------------------------------------------------------ lazy views
    def _require_step(self) -> None:
        if self._last is None:
            raise RuntimeError("no diffusion step taken yet: the prior holds no crystal")

    def current_batch(self, kind: str = "x0") -> CrystalBatch:
        """Current batch on the session device (no copy): ``"x0"`` or ``"xt"`` (see ``trajectory_kind``).

        Once the run is finished, both kinds are the generated crystals of
        :meth:`final_batch`, so that the last trajectory frame of a structure is the
        structure :meth:`get_structures` returns.
        """
        self._require_step()
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
        if "x0" not in self._cache:
            if self.finished:
                self._cache["x0"] = self.final_batch()
            else:
                x_in, t, scores = self._last
                with torch.no_grad():
                    self._cache["x0"] = self.session.tweedie(x_in, t, scores).detach()
        if kind == "x0" or self.finished:
            return self._cache["x0"]
        return self._x.replace(numbers=self._cache["x0"].numbers)

    def current_atoms(self, kind: str = "x0") -> list:
        """Current structures as ``ase.Atoms`` (copied to the CPU only when called).

        ``atoms.info`` holds what :meth:`get_structures` gives the final structures
        (``index``, ``seed``, ``nonfinite_steps``, ``finite``, ``guidance``, and with an
        objective ``loss`` and ``satisfied`` of the current ``x̂0``), plus ``step``,
        ``t`` and ``kind``.
        """
        batch = self.current_batch(kind)
        images = self.session.to_atoms(batch)
        self._annotate(images, self.current_losses(), self.current_satisfied())
        t = self._times_cpu[self.nsteps - 1]
        for i, atoms in enumerate(images):
            atoms.info.update(step=self.nsteps, t=t, index=i, kind=kind)
        return images

    def current_losses(self) -> np.ndarray | None:
        """Per-structure loss of the current ``x̂0`` (``None`` without objective)."""
        if self.objective is None:
            return None
        self._require_step()
        if "loss" not in self._cache:
            with torch.no_grad():
                self._cache["loss"] = self.objective.loss(self.current_batch("x0")).detach().cpu().numpy()
        return self._cache["loss"]

    def current_satisfied(self) -> np.ndarray | None:
        """Per-structure ``objective.satisfied`` of the current ``x̂0`` (``None`` if unavailable)."""
        if self.objective is None or not callable(getattr(self.objective, "satisfied", None)):
            return None
        self._require_step()
        if "satisfied" not in self._cache:
            self._cache["satisfied"] = np.asarray(
                torch.as_tensor(self.objective.satisfied(self.current_batch("x0"))).cpu(), dtype=bool)
        return self._cache["satisfied"]

    @property
    def nonfinite_steps(self) -> np.ndarray:
        """Per structure, the number of guided steps whose guidance gradient was not finite (zeroed)."""
        return self._nonfinite_steps.cpu().numpy()

    # ------------------------------------------------------------------ output
    def _write_frame(self) -> None:
        self._frames.write(self.current_atoms(self.trajectory_kind))

    def log(self) -> None:
        """Write one line of the per-step table (when a logfile was given)."""
        if not self._logging:
            return
        if not self._header_written:
            self.logfile.write(f"{'':15s} {'step':>6s} {'t':>7s} {'guided':>6s} {'loss_mean':>10s} "
                               f"{'loss_min':>10s} {'loss_max':>10s} {'satisfied':>9s} {'nonfinite':>9s} "
                               f"{'time[s]':>8s}\n")
            self._header_written = True
        losses, sat = self.current_losses(), self.current_satisfied()
        bad = torch.nonzero(self._bad_since_log).flatten().tolist()
        self._bad_since_log.zero_()
        if losses is None:
            cols = f"{'-':>10s} {'-':>10s} {'-':>10s}"
        else:
            cols = f"{np.nanmean(losses):10.4e} {np.nanmin(losses):10.4e} {np.nanmax(losses):10.4e}" \
                if np.isfinite(losses).any() else f"{'nan':>10s} {'nan':>10s} {'nan':>10s}"
        sat_col = f"{sat.mean():9.3f}" if sat is not None else f"{'-':>9s}"
        self.logfile.write(f"{'GuidedDiffusion:':15s} {self.nsteps:6d} {self._times_cpu[self.nsteps - 1]:7.4f} "
                           f"{'yes' if self._guided else 'no':>6s} {cols} {sat_col} {len(bad):9d} "
                           f"{self._step_time:8.4f}\n")
        if bad:
            self.logfile.write(f"# non-finite guidance gradient zeroed for structures {bad}\n")

    def final_batch(self) -> CrystalBatch:
        """The generated batch (the noise-free mean of the last predictor step when the backend gives it)."""
        if not self.finished:
            raise RuntimeError(f"the run is not finished ({self.nsteps}/{self.run_steps} steps); "
                               "use current_atoms() for intermediate states")
        mean = self.session.last_mean()
        return (mean if mean is not None else self._x).detach()

    def get_structures(self) -> list:
        """The generated crystals as ``ase.Atoms``.

        ``atoms.info`` holds ``index``, ``seed``, ``loss`` and ``satisfied`` (with an
        objective), ``nonfinite_steps`` (guided steps whose gradient was zeroed),
        ``finite`` (all coordinates finite) and ``guidance`` (the JSON of :meth:`todict`).
        """
        batch = self.final_batch()
        images = self.session.to_atoms(batch)
        losses = sat = None
        if self.objective is not None:
            with torch.no_grad():
                losses = self.objective.loss(batch).detach().cpu().numpy()
            if callable(getattr(self.objective, "satisfied", None)):
                sat = np.asarray(torch.as_tensor(self.objective.satisfied(batch)).cpu(), dtype=bool)
        self._annotate(images, losses, sat)
        return images

    def _annotate(self, images: list, losses: np.ndarray | None, sat: np.ndarray | None) -> None:
        """The ``atoms.info`` of final structures and observed frames alike."""
        settings = json.dumps(self.todict())
        bad = self.nonfinite_steps
        for i, atoms in enumerate(images):
            atoms.info.update(index=i, seed=self.seed, nonfinite_steps=int(bad[i]),
                              finite=bool(np.isfinite(atoms.positions).all() and np.isfinite(atoms.cell.array).all()),
                              guidance=settings)
            if losses is not None:
                atoms.info["loss"] = float(losses[i])
            if sat is not None:
                atoms.info["satisfied"] = bool(sat[i])
            if self.seeds is not None:
                atoms.info.update(seed_index=i // self.samples_per_seed, start_time=self.start_time)

    def write(self, path, format: str | None = None) -> int:
        """Write the generated crystals (extxyz, CIF, traj, ...; non-finite ones skipped with a warning)."""
        return write_structures(path, self.get_structures(), format=format)

    def todict(self) -> dict[str, Any]:
        """ASE-style description of the dynamics and all its settings."""
        guidance = self.settings.todict()
        floor = guidance.pop("floor")
        objective = self.objective
        if objective is not None:
            objective = objective.todict() if callable(getattr(objective, "todict", None)) else type(objective).__name__
        model = self.model.todict() if callable(getattr(self.model, "todict", None)) else type(self.model).__name__
        request = self.num_atoms_request
        if not isinstance(request, (int, str)):
            request = {str(k): float(v) for k, v in request.items()} if isinstance(request, Mapping) \
                else [int(n) for n in request]
        return {
            "type": "diffusion", "diffusion-type": "GuidedDiffusion", "model": model, "objective": objective,
            "batch_size": self.batch_size, "num_atoms": request, "chemical_system": self.chemical_system,
            "conditions": dict(self.conditions),
            "steps": self.steps, "seed": self.seed, **guidance,
            "guidance_factor": self.guidance_factor, "floor": floor,
            "seeds": None if self.seeds is None else [_describe_seed(a) for a in self.seeds],
            "start_time": self.start_time, "first_step": self.first_step, "samples_per_seed": self.samples_per_seed,
            "composition": self.composition, "formula_units": self.formula_units, "fix_cell": self.fix_cell,
        }
