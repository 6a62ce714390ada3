"""Energies with a swappable ASE calculator and energies above a reference hull."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from aseguide.analysis import (
    PhaseDiagramHull,
    compute_energies,
    energies_above_hull,
    filter_references,
    stored_energies,
)


class TinyHull:
    """A hull built directly with pymatgen's PhaseDiagram (independent of aseguide code)."""

    def __init__(self, energies_per_atom: dict[str, float]):
        from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
        from pymatgen.core import Composition

        entries = [PDEntry(Composition(f), e * Composition(f).num_atoms) for f, e in energies_per_atom.items()]
        self.pd = PhaseDiagram(entries)

    def e_above_hull(self, atoms, energy_per_atom):
        from pymatgen.analysis.phase_diagram import PDEntry
        from pymatgen.core import Composition

        comp = Composition(atoms.get_chemical_formula())
        return self.pd.get_e_above_hull(PDEntry(comp, energy_per_atom * comp.num_atoms), allow_negative=True)


def _cu3au():
    atoms = bulk("Cu", "fcc", a=3.75, cubic=True)  # 4 atoms
    atoms[0].symbol = "Au"
    return atoms


def test_compute_energies_matches_direct_calculator_and_leaves_input_alone():
    structures = [bulk("Cu", "fcc", a=3.6), bulk("Au", "fcc", a=4.08).repeat(2), _cu3au()]
    e = compute_energies(structures, EMT())
    for atoms, value in zip(structures, e):
        direct = atoms.copy()
        direct.calc = EMT()
        assert value == pytest.approx(direct.get_potential_energy() / len(direct), rel=1e-12)
        assert atoms.calc is None
    # per atom: a supercell has the same value
    assert compute_energies([bulk("Au", "fcc", a=4.08)], EMT())[0] == pytest.approx(e[1], abs=1e-10)
    # a factory works as well as an instance
    assert compute_energies(structures[:1], EMT)[0] == pytest.approx(e[0])


def test_relaxation_is_optional_and_lowers_the_energy():
    from ase.filters import UnitCellFilter

    squeezed = bulk("Cu", "fcc", a=3.45, cubic=True)
    squeezed.rattle(0.1, seed=2)
    plain = compute_energies([squeezed], EMT())[0]
    positions_only = compute_energies([squeezed], EMT(), relax=True, cell_filter=None, steps=100)[0]
    with_cell = compute_energies([squeezed], EMT(), relax=True, cell_filter=UnitCellFilter, steps=100)[0]
    assert positions_only < plain - 0.01  # the rattle is relaxed away
    assert with_cell < positions_only - 0.05  # and the compression too
    assert compute_energies([squeezed], EMT())[0] == pytest.approx(plain)  # input not relaxed in place


def test_failed_energy_is_nan_with_a_warning():
    with pytest.warns(UserWarning, match="structure 1"):
        e = compute_energies([bulk("Cu", "fcc", a=3.6), bulk("Si")], EMT())  # EMT has no Si
    assert np.isfinite(e[0]) and np.isnan(e[1])


def test_energy_above_hull_against_hand_computation():
    calc = EMT()
    cu, au, alloy = bulk("Cu", "fcc", a=3.61), bulk("Au", "fcc", a=4.07), _cu3au()
    e_cu, e_au, e_alloy = compute_energies([cu, au, alloy], calc)
    hull = TinyHull({"Cu": e_cu, "Au": e_au})
    eh, problems = energies_above_hull([alloy], [e_alloy], hull)
    # only the elements on the hull: the tie line at x_Au = 1/4
    assert eh[0] == pytest.approx(e_alloy - (0.75 * e_cu + 0.25 * e_au), abs=1e-9)
    assert problems == [None]
    # with the alloy itself on the hull, a point 0.1 eV/atom above it
    hull2 = TinyHull({"Cu": e_cu, "Au": e_au, "Cu3Au": e_alloy})
    assert energies_above_hull([alloy], [e_alloy + 0.1], hull2)[0][0] == pytest.approx(0.1, abs=1e-9)
    # our adapter agrees with the independent one
    ours = PhaseDiagramHull.from_structures([cu, au], [e_cu, e_au])
    assert ours.e_above_hull(alloy, e_alloy) == pytest.approx(eh[0], abs=1e-12)


def test_species_absent_from_hull_is_flagged_not_dropped():
    hull = PhaseDiagramHull.from_energies({"Cu": -3.5, "Au": -3.8})
    structures = [bulk("Cu", "fcc", a=3.6), bulk("Ag", "fcc", a=4.09), bulk("Au", "fcc", a=4.08)]
    eh, problems = energies_above_hull(structures, [-3.4, -2.8, np.nan], hull)
    assert eh[0] == pytest.approx(0.1)
    assert np.isnan(eh[1]) and "Ag" in problems[1]
    assert np.isnan(eh[2]) and problems[2] == "no energy"
    with pytest.raises(ValueError, match="3 structures"):
        energies_above_hull(structures, [-1.0], hull)


def test_filter_references_by_energy_cutoff():
    refs = [bulk("Cu", "fcc", a=3.6), bulk("Cu", "bcc", a=2.88), bulk("Cu", "sc", a=2.4),
            bulk("Cu", "hcp", a=2.55), bulk("Cu", "fcc", a=3.2)]
    for atoms, e in zip(refs, [-3.50, -3.45, -2.80, None, -2.9]):
        if e is not None:
            atoms.info["energy_per_atom"] = e
    refs[4].info["e_above_hull"] = 0.2  # a database value wins over the energy
    kept, eh = filter_references(refs, 0.5)
    np.testing.assert_allclose(eh[:3], [0.0, 0.05, 0.70], atol=1e-9)
    assert np.isnan(eh[3]) and eh[4] == pytest.approx(0.2)
    assert [refs.index(a) for a in kept] == [0, 1, 3, 4]  # no energy: kept
    assert stored_energies(refs).tolist()[:3] == [-3.5, -3.45, -2.8]
