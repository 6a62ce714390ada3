"""Property conditions: MatterGen's names, units and the checks of requested values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aseguide.models.conditions import (
    PROPERTY_CONDITIONS,
    check_condition,
    check_conditions,
    describe_accepted,
)


def test_every_mattergen_property_is_known():
    from aseguide.models._mattergen_compat import prepare_mattergen

    prepare_mattergen()
    from mattergen.common.utils.globals import PROPERTY_SOURCE_IDS

    assert set(PROPERTY_CONDITIONS) == set(PROPERTY_SOURCE_IDS)


@pytest.mark.parametrize("name, value, expected", [
    ("space_group", 225, 225),
    ("space_group", np.int64(1), 1),
    ("space_group", 230.0, 230),
    ("dft_band_gap", 1, 1.0),
    ("dft_band_gap", np.float32(2.5), 2.5),
    ("dft_mag_density", 0.15, 0.15),
    ("hhi_score", 1500, 1500.0),
    ("ml_bulk_modulus", 400, 400.0),
    ("energy_above_hull", 0.0, 0.0),
    ("formation_energy_per_atom", -2.0, -2.0),
    ("chemical_system", "Li-Co-O", "Li-Co-O"),
    ("chemical_system", ["Fe", "Nd", "B"], "Fe-Nd-B"),
])
def test_good_values_are_normalised_to_plain_python(name, value, expected):
    checked = check_condition(name, value)
    assert checked == expected and type(checked) is type(expected)


@pytest.mark.parametrize("name, value, message", [
    ("space_group", 0, "space_group=0 is not a space group number"),
    ("space_group", 231, "space_group=231 is not a space group number"),
    ("space_group", 12.5, "space_group=12.5 must be an integer"),
    ("space_group", "225", "space_group='225' must be an integer"),
    ("space_group", True, "space_group=True must be an integer"),
    ("dft_band_gap", -0.1, r"dft_band_gap=-0.1 is outside the sensible range \[0, 20\] eV"),
    ("dft_band_gap", "1.5", "dft_band_gap='1.5' must be a number"),
    ("dft_band_gap", math.inf, "dft_band_gap=inf must be finite"),
    ("dft_band_gap", math.nan, "dft_band_gap=nan must be finite"),
    ("dft_mag_density", 3.0, "dft_mag_density=3.0 is outside"),
    ("hhi_score", 10001, "hhi_score=10001 is outside"),
    ("ml_bulk_modulus", 0.0, r"ml_bulk_modulus=0.0 is outside the sensible range \(0, 1000\] GPa"),
    ("energy_above_hull", -0.05, "energy_above_hull=-0.05 is outside"),
    ("chemical_system", "Li-Xx", "Xx"),
    ("chemical_system", 3, "chemical_system=3 must be a string"),
    ("band_gap", 1.0, "unknown condition band_gap=1.0"),
])
def test_bad_values_are_named(name, value, message):
    with pytest.raises(ValueError, match=message):
        check_condition(name, value)


def test_conditions_are_checked_against_what_the_checkpoint_accepts():
    accepted = ("dft_mag_density", "hhi_score")
    assert check_conditions({"hhi_score": 1500, "dft_mag_density": None}, accepted=accepted) == {"hhi_score": 1500.0}
    with pytest.raises(ValueError) as error:
        check_conditions({"space_group": 225}, accepted=accepted, model="dft_mag_density_hhi_score")
    text = str(error.value)
    assert "'dft_mag_density_hhi_score' cannot be conditioned on 'space_group' (space_group=225 given)" in text
    assert "dft_mag_density (DFT magnetic moment per volume, μB/Å³, 0 to 1)" in text and "hhi_score (" in text
    with pytest.raises(ValueError, match=r"hhi_score=-3 is outside.*model 'm' accepts: dft_mag_density"):
        check_conditions({"hhi_score": -3}, accepted=accepted, model="m")
    with pytest.raises(ValueError, match="accepts: no condition"):
        check_conditions({"dft_band_gap": 1.0}, accepted=(), model="mattergen_base")
    with pytest.raises(ValueError, match="must be a mapping"):
        check_conditions([("dft_band_gap", 1.0)])
    assert describe_accepted(["space_group"]) == "space_group (international space group number, 1 to 230)"
