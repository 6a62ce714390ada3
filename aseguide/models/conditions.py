"""Property conditions of MatterGen checkpoints: names, units and value checks.

MatterGen's conditioned checkpoints are trained on properties named as in MatterGen
(``mattergen.common.utils.globals.PROPERTY_SOURCE_IDS``); a value is given in the units
of MatterGen's training data. :data:`PROPERTY_CONDITIONS` lists every property a
MatterGen checkpoint can be conditioned on, with the unit and the range of values that
make physical sense; :func:`check_conditions` checks a request against the conditions
a checkpoint accepts, naming the offending value and the accepted conditions.

==================================  ===========  ===================================
name                                unit         released checkpoint(s)
==================================  ===========  ===================================
``chemical_system``                 elements     ``chemical_system``,
                                                 ``chemical_system_energy_above_hull``
``space_group``                     1–230        ``space_group``
``dft_band_gap``                    eV           ``dft_band_gap``
``dft_mag_density``                 μB/Å³        ``dft_mag_density``,
                                                 ``dft_mag_density_hhi_score``
``hhi_score``                       0–10000      ``dft_mag_density_hhi_score``
``ml_bulk_modulus``                 GPa          ``ml_bulk_modulus``
``energy_above_hull``               eV/atom      ``chemical_system_energy_above_hull``
==================================  ===========  ===================================

Examples
--------
>>> check_conditions({"space_group": 225}, accepted=("space_group",), model="space_group")
{'space_group': 225}
>>> check_conditions({"dft_band_gap": -1.0}, accepted=("dft_band_gap",), model="dft_band_gap")
Traceback (most recent call last):
...
ValueError: dft_band_gap=-1.0 is outside the sensible range [0, 20] eV; model 'dft_band_gap' accepts: dft_band_gap (DFT band gap, eV, 0 to 20)
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aseguide.composition import normalize_chemical_system

__all__ = ["PropertyCondition", "PROPERTY_CONDITIONS", "RELEASED_CONDITIONS", "check_condition",
           "check_conditions", "checkpoint_conditions", "describe_accepted", "normalize_chemical_system"]


@dataclass(frozen=True)
class PropertyCondition:
    """One property a MatterGen checkpoint can be conditioned on.

    Parameters
    ----------
    name:
        MatterGen's name of the property.
    description:
        What it is, in words.
    unit:
        Unit of the values (MatterGen's training data).
    kind:
        ``"float"``, ``"int"`` (an integer label) or ``"elements"`` (a chemical system).
    low, high:
        Sensible range (inclusive) of a value.
    low_exclusive:
        The lower bound itself is excluded (a property learned on a log scale).
    """

    name: str
    description: str
    unit: str
    kind: str = "float"
    low: float = -math.inf
    high: float = math.inf
    low_exclusive: bool = False

    def summary(self) -> str:
        """``"dft_band_gap (DFT band gap, eV, 0 to 20)"``."""
        if self.kind == "elements":
            return f"{self.name} ({self.description}, e.g. 'Li-Co-O')"
        bound = f"{_format(self.low)} to {_format(self.high)}"
        if self.low_exclusive:
            bound = f"above {_format(self.low)} up to {_format(self.high)}"
        unit = f", {self.unit}" if self.unit else ""
        return f"{self.name} ({self.description}{unit}, {bound})"


def _format(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


#: Every property a MatterGen checkpoint can be conditioned on (MatterGen's names and units).
PROPERTY_CONDITIONS: dict[str, PropertyCondition] = {c.name: c for c in (
    PropertyCondition("chemical_system", "elements allowed in the structure", "", kind="elements"),
    PropertyCondition("space_group", "international space group number", "", kind="int", low=1, high=230),
    PropertyCondition("dft_band_gap", "DFT band gap", "eV", low=0.0, high=20.0),
    PropertyCondition("dft_mag_density", "DFT magnetic moment per volume", "μB/Å³", low=0.0, high=1.0),
    PropertyCondition("hhi_score", "Herfindahl-Hirschman index of the elements", "", low=0.0, high=10000.0),
    PropertyCondition("ml_bulk_modulus", "bulk modulus from an ML potential", "GPa", low=0.0, high=1000.0,
                      low_exclusive=True),
    PropertyCondition("dft_bulk_modulus", "DFT bulk modulus", "GPa", low=0.0, high=1000.0),
    PropertyCondition("dft_shear_modulus", "DFT shear modulus", "GPa", low=0.0, high=1000.0),
    PropertyCondition("energy_above_hull", "energy above the convex hull", "eV/atom", low=0.0, high=5.0),
    PropertyCondition("formation_energy_per_atom", "formation energy", "eV/atom", low=-10.0, high=5.0),
)}


#: Conditions of MatterGen's released checkpoints (from their ``config.yaml``), in MatterGen's order.
RELEASED_CONDITIONS: dict[str, tuple[str, ...]] = {
    "mattergen_base": (),
    "mp_20_base": (),
    "chemical_system": ("chemical_system",),
    "space_group": ("space_group",),
    "dft_band_gap": ("dft_band_gap",),
    "dft_mag_density": ("dft_mag_density",),
    "dft_mag_density_hhi_score": ("dft_mag_density", "hhi_score"),
    "ml_bulk_modulus": ("ml_bulk_modulus",),
    "chemical_system_energy_above_hull": ("chemical_system", "energy_above_hull"),
}


def checkpoint_conditions(name_or_path: str | os.PathLike) -> tuple[str, ...] | None:
    """The conditions a checkpoint was trained on, known without loading (or downloading) it.

    Parameters
    ----------
    name_or_path:
        A checkpoint folder (its ``config.yaml`` is read), a released checkpoint name
        (:data:`RELEASED_CONDITIONS`) or an aseguide random model name.

    Returns
    -------
    tuple of str or None
        The condition names, in the order of ``model.conditions`` after loading; ``None``
        when they cannot be known before loading.

    Examples
    --------
    >>> checkpoint_conditions("dft_mag_density_hhi_score")
    ('dft_mag_density', 'hhi_score')
    """
    from aseguide.models.registry import PACKAGED_MODELS_DIR, RANDOM_MODELS

    name = str(name_or_path)
    config_file = Path(os.fspath(name_or_path)).expanduser() / "config.yaml"
    if not config_file.is_file() and name not in RELEASED_CONDITIONS and "/" not in name and name:
        config_file = PACKAGED_MODELS_DIR / name / "config.yaml"
    if config_file.is_file():
        from omegaconf import OmegaConf

        try:
            denoiser = OmegaConf.select(OmegaConf.load(config_file), "lightning_module.diffusion_module.model")
        except Exception:  # an unreadable file is reported by load_model
            return None
        if denoiser is None:
            return None
        return tuple(list(denoiser.get("property_embeddings") or {})
                     + list(denoiser.get("property_embeddings_adapt") or {}))
    if name in RELEASED_CONDITIONS:
        return RELEASED_CONDITIONS[name]
    if name in RANDOM_MODELS:
        return ("chemical_system",) if RANDOM_MODELS[name] else ()
    return None


def describe_accepted(accepted: Iterable[str]) -> str:
    """The conditions a checkpoint accepts, in words (for error messages)."""
    accepted = list(accepted)
    if not accepted:
        return "no condition (an unconditional checkpoint)"
    return ", ".join(PROPERTY_CONDITIONS[name].summary() if name in PROPERTY_CONDITIONS else name
                     for name in accepted)


def check_condition(name: str, value: Any, *, where: str = "") -> Any:
    """Check one condition value against its property; return it normalised.

    Parameters
    ----------
    name:
        A key of :data:`PROPERTY_CONDITIONS`.
    value:
        The requested value: a number in the property's unit, an integer space group
        number, or a chemical system (``"Li-Co-O"`` or a list of symbols).
    where:
        Appended to error messages (e.g. the conditions a checkpoint accepts).

    Returns
    -------
    float, int or str
        A Python float, a Python int (``space_group``) or ``"Li-Co-O"``.

    Raises
    ------
    ValueError
        Unknown property, value of the wrong type, not finite, or outside the range.
    """
    if name not in PROPERTY_CONDITIONS:
        raise ValueError(f"unknown condition {name}={value!r}{where or ''}; MatterGen's conditions are "
                         f"{', '.join(PROPERTY_CONDITIONS)}")
    spec = PROPERTY_CONDITIONS[name]
    if spec.kind == "elements":
        if not isinstance(value, (str, list, tuple)):
            raise ValueError(f"{name}={value!r} must be a string such as 'Li-Co-O' or a list of "
                             f"element symbols{where}")
        try:
            return "-".join(normalize_chemical_system(value))
        except ValueError as error:
            raise ValueError(f"{name}={value!r}: {error}{where}") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        kind = "an integer" if spec.kind == "int" else "a number"
        raise ValueError(f"{name}={value!r} must be {kind} ({spec.summary()}){where}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name}={value!r} must be finite{where}")
    if spec.kind == "int":
        if not number.is_integer():
            raise ValueError(f"{name}={value!r} must be an integer ({spec.summary()}){where}")
        if not spec.low <= number <= spec.high:
            raise ValueError(f"{name}={value!r} is not a space group number (1 to 230){where}"
                             if name == "space_group" else
                             f"{name}={value!r} is outside {_format(spec.low)} to {_format(spec.high)}{where}")
        return int(number)
    too_low = number <= spec.low if spec.low_exclusive else number < spec.low
    if too_low or number > spec.high:
        opening = "(" if spec.low_exclusive else "["
        unit = f" {spec.unit}" if spec.unit else ""
        raise ValueError(f"{name}={value!r} is outside the sensible range {opening}{_format(spec.low)}, "
                         f"{_format(spec.high)}]{unit}{where}")
    return number


def check_conditions(conditions: Mapping[str, Any] | None, *, accepted: Iterable[str] | None = None,
                     model: str = "this model") -> dict[str, Any]:
    """Check a set of conditions; return them normalised (``None`` values dropped).

    Parameters
    ----------
    conditions:
        ``{name: value}`` in MatterGen's names and units.
    accepted:
        The conditions the checkpoint was trained on (``None``: any known property).
    model:
        The checkpoint's name, for messages.

    Raises
    ------
    ValueError
        A condition the checkpoint was not trained on, or a bad value (see
        :func:`check_condition`); the message names the value and the accepted conditions.
    """
    if conditions is not None and not isinstance(conditions, Mapping):
        raise ValueError(f"conditions must be a mapping {{name: value}}, got {conditions!r}")
    accepted = None if accepted is None else tuple(accepted)
    where = "" if accepted is None else f"; model {model!r} accepts: {describe_accepted(accepted)}"
    checked: dict[str, Any] = {}
    for name, value in (conditions or {}).items():
        if value is None:
            continue
        if accepted is not None and name not in accepted:
            raise ValueError(f"model {model!r} cannot be conditioned on {name!r} ({name}={value!r} given); "
                             f"it accepts: {describe_accepted(accepted)}")
        checked[name] = check_condition(name, value, where=where)
    return checked
