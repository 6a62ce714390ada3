"""The guidance settings: one frozen, self-validating object, and its schedule.

:class:`GuidanceSettings` holds every setting of universal guidance (strengths, number
of backward steps, self-recurrence, normalisation, when guidance acts and how its
strengths vary with the diffusion time). It checks its values when it is built, so a bad
value fails at once, naming the value, without building any sampler. The guidance math
(:mod:`aseguide.sampling.guidance`) and :class:`~aseguide.sampling.dynamics.GuidedDiffusion`
take it whole; each setting has one name all the way down.

Examples
--------
>>> settings = GuidanceSettings(backward_strength=0.05, start=0.5, backward_schedule="increasing")
>>> settings.strengths(0.25, 3)          # t = 0.25 (data side), step 3
(0.01, 0.07500000000000001)
>>> settings.strengths(0.75, 3)          # before start: no guidance
(0.0, 0.0)
>>> GuidanceSettings(recurrence=0)
Traceback (most recent call last):
...
ValueError: recurrence must be an integer >= 1, got 0
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aseguide.models.base import CONTINUOUS_FIELDS

__all__ = ["DEFAULT_FLOOR", "SCHEDULES", "GuidanceSettings", "UNGUIDED", "GUIDANCE_KEYS", "PRESETS",
           "schedule_weight", "is_guided_step"]

#: Norm below which a gradient is divided by the floor instead (zero stays zero).
DEFAULT_FLOOR = 1e-20

Schedule = str | Callable[[float], float]


def _increasing(t: float) -> float:
    return 2.0 * (1.0 - t)


def _decreasing(t: float) -> float:
    return 2.0 * t


def _constant(t: float) -> float:
    return 1.0


#: Named strength schedules: multiplier of the strength as a function of diffusion time
#: ``t`` (1 = noise, 0 = data). "increasing" grows as sampling proceeds (``2 (1 - t)``),
#: "decreasing" shrinks (``2 t``); both average 1 over ``t`` in [0, 1].
SCHEDULES: dict[str, Callable[[float], float]] = {
    "constant": _constant,
    "increasing": _increasing,
    "decreasing": _decreasing,
}


def schedule_weight(schedule: Schedule, t: float) -> float:
    """Multiplier of a strength at diffusion time ``t``.

    Parameters
    ----------
    schedule : str or callable
        A name in :data:`SCHEDULES` or a callable of ``t`` returning a non-negative number.
    t : float
        Diffusion time (1 = noise, 0 = data).

    Returns
    -------
    float
        The multiplier.

    Raises
    ------
    ValueError
        An unknown name, or a callable giving a negative, infinite or NaN value.

    Examples
    --------
    >>> schedule_weight("increasing", 0.25), schedule_weight(lambda t: t ** 2, 0.5)
    (1.5, 0.25)
    """
    if callable(schedule):
        w = float(schedule(t))
    else:
        try:
            w = SCHEDULES[schedule](t)
        except KeyError:
            raise ValueError(f"unknown schedule {schedule!r}: use one of {sorted(SCHEDULES)} or a callable") from None
    if not w >= 0.0 or w == float("inf"):
        raise ValueError(f"schedule {schedule!r} gave {w!r} at t={t}: strengths must be finite and >= 0")
    return w


def is_guided_step(t: float, step: int, start: float, every: int) -> bool:
    """Whether guidance acts at a step: ``t < 1 - start`` and ``step % every == 0``.

    Parameters
    ----------
    t : float
        Diffusion time of the step (1 = noise, 0 = data).
    step : int
        0-based index of the step in the schedule.
    start : float
        Fraction of the ``t: 1 -> 0`` trajectory left unguided before guidance begins
        (``start=0.1``: guidance for ``t < 0.9``, the authors' setting; ``start=0``:
        every step but the pure-noise one at ``t = 1``).
    every : int
        Guidance acts on every ``every``-th step.

    Returns
    -------
    bool
        Whether guidance acts.

    Examples
    --------
    >>> is_guided_step(0.95, 0, 0.1, 1), is_guided_step(0.5, 4, 0.1, 2), is_guided_step(0.5, 5, 0.1, 2)
    (False, True, False)
    """
    return t < 1.0 - start and step % every == 0


def check_number(name: str, value: Any, *, low: float = 0.0, high: float = math.inf) -> float:
    """``value`` as a float in ``[low, high]``; a :class:`ValueError` naming ``name`` and the value otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not (low <= v <= high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")
    return v


def check_integer(name: str, value: Any, low: int) -> int:
    """``value`` as an int ``>= low`` (not a bool); a :class:`ValueError` naming ``name`` and the value otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _schedule(name: str, value: Any) -> Schedule:
    if callable(value):
        return value
    if value not in SCHEDULES:
        raise ValueError(f"{name} must be one of {sorted(SCHEDULES)} or a callable of t, got {value!r}")
    return value


def _fields(value: Any) -> tuple[str, ...]:
    fields = (value,) if isinstance(value, str) else tuple(value)
    for f in fields:
        if f not in CONTINUOUS_FIELDS:
            raise ValueError(f"cannot guide field {f!r}: guidable fields are {CONTINUOUS_FIELDS}")
    return fields


def _schedule_name(schedule: Schedule) -> str:
    return schedule if isinstance(schedule, str) else getattr(schedule, "__name__", repr(schedule))


@dataclass(frozen=True)
class GuidanceSettings:
    """Every setting of universal guidance, checked when built.

    Parameters
    ----------
    forward_strength : float
        ``g``, strength of forward guidance (the gradient through the network); with
        ``normalize`` a step length (fractional units for positions, Å for the lattice).
    backward_strength : float
        ``k``, step length of the gradient descent on the clean estimate ``x̂0``.
    backward_steps : int
        ``m``, gradient steps on ``x̂0`` per pass.
    recurrence : int
        ``K``, passes per guided step (1 = no self-recurrence).
    normalize : bool
        Normalise gradients per structure and per field.
    start : float
        Fraction of the trajectory before guidance begins: guidance acts only at
        diffusion times ``t < 1 - start`` (``t``: 1 = noise, 0 = data).
    every : int
        Guidance acts only on steps whose index is a multiple of ``every``.
    forward_schedule, backward_schedule : str or callable
        ``"constant"``, ``"increasing"`` (``2 (1 - t)``), ``"decreasing"`` (``2 t``) or a
        callable of ``t``: multiplier of the strength.
    fields : sequence of str
        Guided fields, among ``("positions", "lattice")`` (a single name is accepted).
    floor : float
        Gradient-norm floor of the normalisation (> 0).

    Raises
    ------
    ValueError
        For any invalid value, naming the setting and the value.

    Examples
    --------
    >>> s = GuidanceSettings(fields="lattice", recurrence=1)
    >>> s.fields, s.recurrence
    (('lattice',), 1)
    >>> GuidanceSettings.from_dict(s.todict()) == s
    True
    """

    forward_strength: float = 0.01
    backward_strength: float = 0.01
    backward_steps: int = 2
    recurrence: int = 3
    normalize: bool = True
    start: float = 0.1
    every: int = 1
    forward_schedule: Schedule = "constant"
    backward_schedule: Schedule = "constant"
    fields: Sequence[str] = CONTINUOUS_FIELDS
    floor: float = DEFAULT_FLOOR

    def __post_init__(self) -> None:
        checked = {
            "forward_strength": check_number("forward_strength", self.forward_strength),
            "backward_strength": check_number("backward_strength", self.backward_strength),
            "backward_steps": check_integer("backward_steps", self.backward_steps, 0),
            "recurrence": check_integer("recurrence", self.recurrence, 1),
            "normalize": bool(self.normalize),
            "start": check_number("start", self.start, high=1.0),
            "every": check_integer("every", self.every, 1),
            "floor": check_number("floor", self.floor),
        }
        if checked["floor"] <= 0:
            raise ValueError(f"floor must be > 0 (zero gradients would become NaN), got {self.floor!r}")
        checked["forward_schedule"] = _schedule("forward_schedule", self.forward_schedule)
        checked["backward_schedule"] = _schedule("backward_schedule", self.backward_schedule)
        checked["fields"] = _fields(self.fields)
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @property
    def forward(self) -> bool:
        """Whether forward guidance acts (a positive strength and at least one field)."""
        return self.forward_strength > 0 and len(self.fields) > 0

    @property
    def backward(self) -> bool:
        """Whether backward guidance acts (a positive strength, steps and at least one field)."""
        return self.backward_strength > 0 and self.backward_steps > 0 and len(self.fields) > 0

    def strengths(self, t: float, index: int) -> tuple[float, float]:
        """``(g_t, k_t)``, the strengths at diffusion time ``t`` and step ``index``.

        Zero where guidance does not act (before ``start``, off the ``every`` grid);
        otherwise the strengths times their schedule's weight at ``t``.

        Parameters
        ----------
        t : float
            Diffusion time of the step (1 = noise, 0 = data).
        index : int
            0-based index of the step.

        Returns
        -------
        tuple of float
            Forward and backward strength of the step.

        Examples
        --------
        >>> GuidanceSettings(forward_schedule="decreasing").strengths(0.25, 0)
        (0.005, 0.01)
        """
        if not is_guided_step(t, index, self.start, self.every):
            return 0.0, 0.0
        g = self.forward_strength * schedule_weight(self.forward_schedule, t) if self.forward_strength else 0.0
        k = self.backward_strength * schedule_weight(self.backward_schedule, t) \
            if self.backward_strength and self.backward_steps else 0.0
        return g, k

    def at(self, t: float, index: int) -> GuidanceSettings:
        """The settings of one step: the strengths replaced by :meth:`strengths` ``(t, index)``.

        Examples
        --------
        >>> GuidanceSettings(backward_schedule="increasing").at(0.5, 0).backward_strength
        0.01
        """
        g, k = self.strengths(t, index)
        return dataclasses.replace(self, forward_strength=g, backward_strength=k)

    def todict(self) -> dict[str, Any]:
        """The settings as plain values (a callable schedule by its name).

        Examples
        --------
        >>> GuidanceSettings().todict()["fields"]
        ['positions', 'lattice']
        """
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["forward_schedule"] = _schedule_name(self.forward_schedule)
        data["backward_schedule"] = _schedule_name(self.backward_schedule)
        data["fields"] = list(self.fields)
        return data

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> GuidanceSettings:
        """Named settings from :data:`PRESETS`, with some keys overridden.

        Raises
        ------
        ValueError
            For an unknown name (the known ones are listed) or a bad override.

        Examples
        --------
        >>> s = GuidanceSettings.preset("energy", every=4)
        >>> s.backward_strength, s.backward_steps, s.fields, s.every
        (1.0, 1, ('positions',), 4)
        >>> GuidanceSettings.preset("fast")
        Traceback (most recent call last):
        ...
        ValueError: unknown guidance preset 'fast'; known: ['energy', 'paper']
        """
        if name not in PRESETS:
            raise ValueError(f"unknown guidance preset {name!r}; known: {sorted(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GuidanceSettings:
        """Settings from a mapping of some of :data:`GUIDANCE_KEYS` (the rest default).

        ``preset: NAME`` starts from the named settings of :data:`PRESETS` instead of the
        defaults; the other keys override them.

        Raises
        ------
        ValueError
            For a key that is no setting (the known keys are listed) or a bad value.

        Examples
        --------
        >>> GuidanceSettings.from_dict({"recurrence": 1}).recurrence
        1
        >>> GuidanceSettings.from_dict({"strength": 1})
        Traceback (most recent call last):
        ...
        ValueError: unknown guidance key(s) ['strength']; known: ['forward_strength', 'backward_strength', \
'backward_steps', 'recurrence', 'normalize', 'start', 'every', 'forward_schedule', 'backward_schedule', 'fields', \
'floor']
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"guidance must be a mapping, got {data!r}")
        if "preset" in data:
            data = dict(data)
            return cls.preset(data.pop("preset"), **data)
        unknown = sorted(set(data) - set(GUIDANCE_KEYS))
        if unknown:
            raise ValueError(f"unknown guidance key(s) {unknown}; known: {list(GUIDANCE_KEYS)}")
        return cls(**dict(data))


#: The guidance settings by name: the keywords of GuidedDiffusion and the keys of ``guidance:``.
GUIDANCE_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(GuidanceSettings))

#: Named guidance settings (``guidance: {preset: energy}``, :meth:`GuidanceSettings.preset`).
#: ``paper``: the defaults, the authors' (g = k = 0.01, m = 2, K = 3, t < 0.9), for geometric
#: objectives (coordination, volume, distances), which need the topology nudged early.
#: ``energy``: for a potential's energy (``EnergyAboveHull``), a local objective that needs
#: relaxation-sized moves late in sampling: backward only, k = 1 with m = 1 (a shift of x̂0
#: of which a step keeps about 5 % in the positions), positions only (late in sampling the
#: lattice keeps most of a shift, so k = 1 Å would strain the cell), every 2nd step
#: (half the potential's cost; with an even step count the last step, which keeps a shift
#: whole, is left alone) and t < 0.5. On the carbon model it lowered the median energy
#: above the CHGNet hull from 1.11 to 0.75 eV/atom (examples/carbon/README.md).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "energy": {"forward_strength": 0.0, "backward_strength": 1.0, "backward_steps": 1, "recurrence": 1,
               "every": 2, "start": 0.5, "fields": ["positions"]},
}

#: No guidance: one plain predictor-corrector pass per step.
UNGUIDED = GuidanceSettings(forward_strength=0.0, backward_strength=0.0, backward_steps=0, recurrence=1)
