"""Reference hulls: hand-computed hull energies, real tables, clear errors."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from ase.build import bulk
from pymatgen.analysis.phase_diagram import PDEntry

from aseguide.calculators import ReferenceHull
from aseguide.composition import parse_chemical_system

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REFS = DATA / "references"
needs_data = pytest.mark.skipif(not REFS.is_dir(), reason=f"shared reference data not found at {REFS}")
MP_ELEMENTS = REFS / "mbd_2023-02-07-mp-elemental-reference-entries.json.gz"

# Li -2 eV/atom, O -4 eV/atom, Li2O -15 eV per formula (-5 eV/atom), LiO2 unstable
RECORDS = [("Li", -2.0), ("O2", -8.0), ("Li2O", -15.0), ("LiO2", -12.0)]


@pytest.fixture()
def li_o() -> ReferenceHull:
    return ReferenceHull.from_records(RECORDS, energy="total")


def test_hull_vertex_is_zero_and_points_above_are_hand_values(li_o):
    assert li_o.chemical_system == "Li-O"
    assert li_o.e_above_hull("Li2O", -5.0) == pytest.approx(0.0, abs=1e-12)
    assert li_o.e_above_hull("Li4O2", -5.0) == pytest.approx(0.0, abs=1e-12)  # same reduced composition
    # Li0.5O0.5 = 3/4 Li2O (x_O = 1/3) + 1/4 O  ->  hull = 0.75 * -5 + 0.25 * -4 = -4.75
    assert li_o.hull_energy_per_atom("LiO") == pytest.approx(-4.75)
    assert li_o.e_above_hull("LiO", -4.5) == pytest.approx(0.25)
    assert li_o.e_above_hull("LiO", -5.0) == pytest.approx(-0.25)  # below the hull: negative
    # the unstable LiO2 entry: -4 eV/atom against the hull at x_O = 2/3
    # (1/2 Li2O + 1/2 O -> -4.5)  ->  +0.5
    assert li_o.e_above_hull("LiO2", -12.0 / 3) == pytest.approx(0.5)
    assert {e.composition.reduced_formula for e in li_o.stable_entries} == {"Li", "O2", "Li2O"}


def test_total_and_per_atom_tables_give_the_same_hull(li_o):
    from pymatgen.core import Composition

    per_atom = [(f, e / Composition(f).num_atoms) for f, e in RECORDS]
    hull = ReferenceHull.from_records(per_atom, energy="per_atom")
    for formula in ("LiO", "Li3O", "LiO3", "Li2O"):
        assert hull.hull_energy_per_atom(formula) == pytest.approx(li_o.hull_energy_per_atom(formula))


def test_atoms_and_structures_are_accepted(li_o):
    atoms = bulk("Li", "bcc", a=3.5)
    assert li_o.e_above_hull(atoms, -1.9) == pytest.approx(0.1)
    from pymatgen.io.ase import AseAtomsAdaptor

    assert li_o.e_above_hull(AseAtomsAdaptor.get_structure(atoms), -1.9) == pytest.approx(0.1)


def test_errors_name_the_bad_value(li_o):
    with pytest.raises(ValueError, match="Co"):
        li_o.e_above_hull("LiCoO2", -5.0)
    with pytest.raises(ValueError, match="'bogus'"):
        ReferenceHull.from_records(RECORDS, energy="bogus")
    with pytest.raises(ValueError, match="nan"):
        li_o.e_above_hull("Li2O", float("nan"))
    with pytest.raises(ValueError, match="element.*O"):
        ReferenceHull.from_records([("Li", -2.0), ("Li2O", -15.0)], "total")
    with pytest.raises(ValueError, match="Xx"):
        parse_chemical_system("Li-Xx")
    with pytest.raises(ValueError, match="'abc'"):
        ReferenceHull.from_records([("Li", "abc")], "total")
    with pytest.raises(ValueError, match="elemental_references only applies"):
        ReferenceHull.from_records(RECORDS, "total", elemental_references={"Li": -2.0})


def test_chemical_system_restricts_entries(li_o):
    hull = ReferenceHull.from_records(RECORDS + [("Co", -7.0), ("CoO", -15.0)], "total", chemical_system="Li-O")
    assert hull.elements == ("Li", "O") and len(hull) == 4
    assert hull.hull_energy_per_atom("LiO") == pytest.approx(-4.75)


def test_formation_hull_and_elemental_references():
    records = [("LiO", -1.0), ("Li2O", -2.0)]  # formation energies per atom, elements at 0 added
    formation = ReferenceHull.from_records(records, "formation_per_atom")
    assert formation.is_formation
    assert formation.hull_energy_per_atom("Li") == 0.0
    assert formation.e_above_hull("Li2O", -1.9) == pytest.approx(0.1)
    mu = {"Li": -2.0, "O": -4.0}
    absolute = ReferenceHull.from_records(records, "formation_per_atom", elemental_references=mu)
    assert not absolute.is_formation
    # Li2O: -2 + (2/3)(-2) + (1/3)(-4) = -4.6667 eV/atom
    assert absolute.hull_energy_per_atom("Li2O") == pytest.approx(-2.0 - 4.0 / 3 - 4.0 / 3)
    assert absolute.e_above_hull("Li2O", -4.5) == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="lack element.*O"):
        ReferenceHull.from_records(records, "formation_per_atom", elemental_references={"Li": -2.0})


def test_todict_round_trip_keeps_the_hull(li_o):
    again = ReferenceHull.from_dict(li_o.todict())
    assert len(again) == 3  # only the stable entries are kept
    for formula in ("LiO", "Li3O", "LiO5"):
        assert again.hull_energy_per_atom(formula) == pytest.approx(li_o.hull_energy_per_atom(formula))
    merged = li_o.merged([PDEntry("LiO", -2 * 4.9)])
    assert merged.e_above_hull("LiO", -4.9) == pytest.approx(0.0, abs=1e-12)


@needs_data
def test_licoo_total_energy_table():
    hull = ReferenceHull.from_table(REFS / "mattergenbis_vb_LiCoO.csv", energy="total")
    assert hull.chemical_system == "Co-Li-O" and len(hull) == 597
    # LiCoO2 is a hull vertex of the table (Li4Co4O8 row: -90.5 eV / 16 atoms)
    assert hull.e_above_hull("LiCoO2", hull.hull_energy_per_atom("LiCoO2")) == 0.0
    assert hull.hull_energy_per_atom("LiCoO2") == pytest.approx(-5.65625)
    # the "O2, -5.9366" row: -2.9683 eV/atom against the O2 ground state -4.9615 eV/atom
    assert hull.e_above_hull("O2", -5.9366 / 2) == pytest.approx(-2.9683 + 4.9615)


@needs_data
def test_boron_formation_table_with_mp_elemental_reference():
    hull = ReferenceHull.from_table(
        REFS / "B_polymorphs_matbench_mp_e_form.csv", "formation_per_atom", elemental_references=MP_ELEMENTS
    )
    mu_b = ReferenceHull.from_entries(MP_ELEMENTS, chemical_system="B").hull_energy_per_atom("B")
    assert mu_b == pytest.approx(-6.679, abs=1e-3)
    assert hull.hull_energy_per_atom("B") == pytest.approx(mu_b)
    # B28 sits 0.026019 eV/atom above alpha-B12 in the table
    assert hull.e_above_hull("B28", mu_b + 0.026019434047618972) == pytest.approx(0.026019434047618972)


@needs_data
def test_mp_table_restricted_to_a_system():
    hull = ReferenceHull.from_table(REFS / "mp_2018_formation_energies.csv", "formation_per_atom",
                                    chemical_system="Li-Co-O")
    # the Li-Co-O rows of that table, as counted in target_systems_composition_energies.csv
    # (source crabnet_matbench_mp_e_form), plus the three elements at 0 when absent
    assert hull.is_formation and 377 <= len(hull) <= 380
    assert hull.hull_energy_per_atom("LiCoO2") < -1.5  # a strongly bound oxide


@needs_data
def test_table_errors(tmp_path):
    with pytest.raises(ValueError, match="several possible energy columns"):
        ReferenceHull.from_table(REFS / "target_systems_composition_energies.csv", "formation_per_atom")
    hull = ReferenceHull.from_table(REFS / "target_systems_composition_energies.csv", "formation_per_atom",
                                    energy_column="target", chemical_system="B")
    assert hull.elements == ("B",)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        ReferenceHull.from_table(tmp_path / "nope.csv", "total")
    bad = tmp_path / "bad.csv"
    bad.write_text("formula,energy\nLi,-2\nQq2,-3\n")
    with pytest.raises(ValueError, match=r"bad.csv:3.*Qq2"):
        ReferenceHull.from_table(bad, "total")


def test_materials_project_needs_a_key(monkeypatch):
    pytest.importorskip("mp_api")
    monkeypatch.delenv("MP_API_KEY", raising=False)
    with pytest.raises(ValueError, match="MP_API_KEY"):
        ReferenceHull.from_materials_project("Li-O")


@pytest.mark.network
@pytest.mark.skipif(not os.environ.get("MP_API_KEY"), reason="needs network and MP_API_KEY")
def test_materials_project_hull():  # pragma: no cover - offline here
    hull = ReferenceHull.from_materials_project("Li-O")
    assert hull.chemical_system == "Li-O"
    assert math.isclose(hull.e_above_hull("Li2O", hull.hull_energy_per_atom("Li2O")), 0.0)


def test_one_chemical_system_parser_and_the_old_paths():
    import aseguide.calculators.hull as old_hull
    import aseguide.calculators.potentials as old_potentials
    from aseguide import potentials, thermo
    from aseguide.composition import normalize_chemical_system
    from aseguide.models import mattergen

    assert mattergen.normalize_chemical_system is normalize_chemical_system
    assert normalize_chemical_system("Li-Co-O") == ["Li", "Co", "O"]
    assert normalize_chemical_system(["Fe", "Nd", "B"]) == ["Fe", "Nd", "B"]
    assert parse_chemical_system(["O", "Li", "O"]) == parse_chemical_system("LiO") == ("Li", "O")
    with pytest.raises(ValueError, match="repeats"):
        normalize_chemical_system("Li-Li")
    with pytest.raises(ValueError, match="'Xx'"):
        normalize_chemical_system("Li-Xx")
    assert old_hull.ReferenceHull is thermo.ReferenceHull is ReferenceHull
    assert old_potentials.get_potential is potentials.get_potential
