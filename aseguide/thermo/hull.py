"""Reference convex hulls of a chemical system, built with pymatgen's ``PhaseDiagram``.

A :class:`ReferenceHull` holds the reference entries of a chemical system (e.g. Li-Co-O)
and answers one question: how far above the convex hull of those references is a
structure of a given composition and energy per atom? The hull itself is pymatgen's
:class:`~pymatgen.analysis.phase_diagram.PhaseDiagram`; nothing here re-implements hull
geometry.

Energies are in eV. A hull is either *absolute* (total energies, the default, what a
machine-learning potential predicts) or *formation* (formation energies per atom, as in
the matbench ``mp_e_form`` table, elements at 0 by definition). An absolute hull answers
queries with total energies per atom; a formation hull answers queries with formation
energies per atom. A formation table becomes absolute when elemental reference energies
are given (``elemental_references=``), since ``E_total/atom = E_form/atom + sum_i x_i mu_i``.

Examples
--------
>>> from aseguide.thermo import ReferenceHull
>>> hull = ReferenceHull.from_records(
...     [("Li", -1.9), ("O2", -9.8), ("Li2O", -14.3)], energy="total")
>>> hull.chemical_system
'Li-O'
>>> round(hull.e_above_hull("Li2O", -14.3 / 3), 6)  # a hull vertex
0.0
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Element, Structure

from aseguide.composition import as_composition, parse_chemical_system
from aseguide.thermo import sources
from aseguide.thermo.sources import EnergyKind

if TYPE_CHECKING:  # pragma: no cover
    from ase.calculators.calculator import Calculator

    from aseguide.potentials import BatchedPotential

__all__ = ["ReferenceHull"]


# --------------------------------------------------------------------------- the hull
class ReferenceHull:
    """Convex hull of reference entries of one chemical system.

    Parameters
    ----------
    entries : sequence of PDEntry
        pymatgen entries (``PDEntry``, ``ComputedEntry``, ``ComputedStructureEntry``);
        ``entry.energy`` is the total energy of the formula unit written in the entry.
    chemical_system : str or iterable of str, optional
        Restrict the hull to this system (``"Li-Co-O"`` or a list of symbols); entries
        with other elements are dropped. Default: all elements of the entries.
    is_formation : bool
        ``True`` when the energies are formation energies (queries then take formation
        energies per atom too).
    name : str
        Where the entries come from, for ``repr`` and logs.

    Raises
    ------
    ValueError
        If no entry is left, or an element of the system has no elemental entry
        (the hull needs every terminal).

    Attributes
    ----------
    phase_diagram : pymatgen.analysis.phase_diagram.PhaseDiagram
    elements : tuple of str
        The elements of the system, sorted.
    entries : list
        The entries kept.

    Examples
    --------
    >>> from pymatgen.analysis.phase_diagram import PDEntry
    >>> hull = ReferenceHull([PDEntry("B", -6.68), PDEntry("B", -6.60)])
    >>> round(hull.e_above_hull("B12", -6.60), 3)
    0.08
    """

    def __init__(
        self,
        entries: Sequence[PDEntry],
        chemical_system: str | Iterable[str] | None = None,
        *,
        is_formation: bool = False,
        name: str = "",
    ) -> None:
        entries = list(entries)
        if not entries:
            raise ValueError("a reference hull needs at least one entry")
        if chemical_system is None:
            elements = tuple(sorted({el.symbol for e in entries for el in e.composition.elements}))
        else:
            elements = parse_chemical_system(chemical_system)
            allowed = set(elements)
            entries = [e for e in entries if {el.symbol for el in e.composition.elements} <= allowed]
            if not entries:
                raise ValueError(f"no reference entry lies inside the chemical system {'-'.join(elements)}")
        present = {e.composition.elements[0].symbol for e in entries if len(e.composition.elements) == 1}
        missing = [el for el in elements if el not in present]
        if missing:
            raise ValueError(
                f"the reference hull of {'-'.join(elements)} has no entry for element(s) "
                f"{', '.join(missing)}: add elemental references (e.g. the MP elemental "
                "reference entries) for every element of the system"
            )
        self.elements: tuple[str, ...] = elements
        self.entries: list[PDEntry] = entries
        self.is_formation = bool(is_formation)
        self.name = name
        self.phase_diagram = self._phase_diagram(entries, elements)
        # per-instance memo of hull energies (reduced composition -> eV/atom)
        self._hull_energy_memo: dict[tuple, float] = {}

    @staticmethod
    def _phase_diagram(entries: list[PDEntry], elements: tuple[str, ...]) -> PhaseDiagram:
        """pymatgen's phase diagram of the entries, its axes in the order of ``elements``."""
        return PhaseDiagram(entries, elements=[Element(el) for el in elements])

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_records(
        cls,
        records: Iterable[tuple[Any, float]],
        energy: EnergyKind = "total",
        *,
        chemical_system: str | Iterable[str] | None = None,
        elemental_references: Any = None,
        name: str = "records",
    ) -> ReferenceHull:
        """Hull from ``(formula_or_composition, energy)`` pairs.

        Parameters
        ----------
        records : iterable of (formula, float)
            Pairs of a formula (or ``Composition``, ``Atoms``, ``Structure``) and an energy.
        energy : {"total", "per_atom", "formation_per_atom"}
            What the numbers are: ``"total"`` (eV per formula as written, e.g. ``Li16O16``
            is 32 atoms), ``"per_atom"`` (eV/atom) or ``"formation_per_atom"`` (eV/atom,
            elements at 0).
        chemical_system : str or iterable of str, optional
            Restrict the entries to this system.
        elemental_references : optional
            Only with ``"formation_per_atom"``: absolute energies of the elements
            (``{"B": -6.679}`` in eV/atom, entries, an entries JSON path, or an absolute
            ``ReferenceHull``). The hull is then absolute. Without it, it stays a
            formation-energy hull.

        Examples
        --------
        >>> h = ReferenceHull.from_records([("B", 0.0), ("B", 0.03)], "formation_per_atom",
        ...                                elemental_references={"B": -6.679})
        >>> round(h.hull_energy_per_atom("B"), 3), h.is_formation
        (-6.679, False)
        """
        entries, is_formation = sources.entries_from_records(
            records, energy, chemical_system=chemical_system, elemental_references=elemental_references, name=name
        )
        return cls(entries, chemical_system, is_formation=is_formation, name=name)

    @classmethod
    def from_table(
        cls,
        path: str | os.PathLike,
        energy: EnergyKind,
        *,
        chemical_system: str | Iterable[str] | None = None,
        formula_column: str | None = None,
        energy_column: str | None = None,
        elemental_references: Any = None,
    ) -> ReferenceHull:
        """Hull from a CSV table of formulas and energies.

        Parameters
        ----------
        path : str or os.PathLike
            CSV file (optionally ``.gz``) with a header line.
        energy : {"total", "per_atom", "formation_per_atom"}
            ``"total"`` (eV per formula as written), ``"per_atom"`` (eV/atom) or
            ``"formation_per_atom"`` (eV/atom). Required: the table cannot say which.
        chemical_system : str or iterable of str, optional
            Keep only rows inside this system (e.g. ``"B"`` out of all of MP).
        formula_column, energy_column : str, optional
            Column names; by default guessed from common names (``formula``/``Formula``,
            ``energy``/``Energy``/``target``/...) and an error asks for them when ambiguous.
        elemental_references : optional
            See :meth:`from_records`.

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            For an unknown ``energy`` flag, a missing column, an unparsable row (its line
            number is named) or a system with a missing element.

        Examples
        --------
        >>> hull = ReferenceHull.from_table("mattergenbis_vb_LiCoO.csv", energy="total")  # doctest: +SKIP
        >>> hull.e_above_hull("LiCoO2", -5.85)  # doctest: +SKIP
        """
        sources.check_energy_kind(energy)
        records = sources.records_from_table(
            path, chemical_system=chemical_system, formula_column=formula_column, energy_column=energy_column
        )
        return cls.from_records(
            records,
            energy,
            chemical_system=chemical_system,
            elemental_references=elemental_references,
            name=Path(path).name,
        )

    @classmethod
    def from_entries(
        cls,
        path_or_entries: str | os.PathLike | Iterable[Any] | Mapping[str, Any],
        *,
        chemical_system: str | Iterable[str] | None = None,
    ) -> ReferenceHull:
        """Hull from pymatgen ``ComputedEntry`` / ``ComputedStructureEntry`` objects or JSON.

        Parameters
        ----------
        path_or_entries : str, os.PathLike, iterable or Mapping
            A ``.json``/``.json.gz`` file (a list of entry dicts, or a dict of them, as
            the MP elemental reference file), or entries / entry dicts in memory.
            ``entry.energy`` (corrected energy when corrections are attached) is used.
        chemical_system : str or iterable of str, optional
            Keep only entries inside this system.

        Examples
        --------
        >>> from pymatgen.entries.computed_entries import ComputedEntry
        >>> hull = ReferenceHull.from_entries([ComputedEntry("B", -6.679)])
        >>> hull.elements
        ('B',)
        """
        name = str(path_or_entries) if isinstance(path_or_entries, (str, os.PathLike)) else "entries"
        entries = sources.load_entries(path_or_entries)
        return cls(entries, chemical_system, name=Path(name).name)

    @classmethod
    def from_structures(
        cls,
        structures: Sequence[Atoms | Structure],
        calculator: str | Calculator | BatchedPotential,
        *,
        chemical_system: str | Iterable[str] | None = None,
        batch_size: int = 64,
        device: str | None = None,
    ) -> ReferenceHull:
        """Hull from reference structures whose energies a potential computes ("joint estimation").

        The energies of the references and of the generated structures then come from
        the same potential, so its systematic errors largely cancel in the energy above
        the hull (the paper's protocol). No relaxation is done.

        Parameters
        ----------
        structures : sequence of ase.Atoms or Structure
            ``ase.Atoms`` or pymatgen ``Structure`` objects; must include every element
            of the system on its own.
        calculator : str, ASE calculator or BatchedPotential
            A potential name (``"chgnet"``...), an ASE calculator, or a
            :class:`~aseguide.potentials.BatchedPotential`.
        chemical_system : str or iterable of str, optional
            Keep only structures inside this system.
        batch_size : int
            Structures per batched potential call.
        device : str, optional
            Device of a potential given by name.

        Raises
        ------
        ValueError
            If the potential fails on a reference structure (named by its index).

        Examples
        --------
        >>> from ase.build import bulk
        >>> hull = ReferenceHull.from_structures([bulk("Si")], "chgnet")  # doctest: +SKIP
        """
        entries, potential_name = sources.entries_from_structures(
            structures, calculator, chemical_system=chemical_system, batch_size=batch_size, device=device
        )
        return cls(entries, chemical_system, name=f"structures@{potential_name}")

    @classmethod
    def from_materials_project(
        cls,
        chemsys: str | Iterable[str],
        api_key: str | None = None,
        *,
        chemical_system: str | Iterable[str] | None = None,
        **query: Any,
    ) -> ReferenceHull:
        """Hull from the Materials Project entries of a chemical system (needs ``mp-api``).

        Uses ``MPRester.get_entries_in_chemsys`` (GGA/GGA+U/r2SCAN mixed, MP2020-corrected
        entries, as on materialsproject.org).

        Parameters
        ----------
        chemsys : str or iterable of str
            ``"Li-Co-O"`` or a list of symbols; all subsystems are included.
        api_key : str, optional
            Materials Project API key; default: the ``MP_API_KEY`` environment variable.
        chemical_system : str or iterable of str, optional
            Further restriction of the entries.
        **query
            Passed to ``get_entries_in_chemsys`` (e.g. ``additional_criteria=``).

        Raises
        ------
        ImportError
            Without ``mp-api`` (``pip install aseguide[mp]``).
        ValueError
            Without an API key.

        Examples
        --------
        >>> hull = ReferenceHull.from_materials_project("Li-Co-O")  # doctest: +SKIP
        """
        entries, elements = sources.entries_from_materials_project(chemsys, api_key, **query)
        return cls(entries, chemical_system or elements, name=f"materials-project:{'-'.join(elements)}")

    # ------------------------------------------------------------------ queries
    @property
    def chemical_system(self) -> str:
        """The system as ``"Co-Li-O"`` (sorted symbols)."""
        return "-".join(self.elements)

    @property
    def stable_entries(self) -> list[PDEntry]:
        """Entries on the hull."""
        return list(self.phase_diagram.stable_entries)

    def _check_inside(self, comp: Composition) -> None:
        outside = sorted({el.symbol for el in comp.elements} - set(self.elements))
        if outside:
            raise ValueError(
                f"composition {comp.formula} has element(s) {', '.join(outside)} outside the "
                f"reference hull's chemical system {self.chemical_system}"
            )

    def contains(self, composition_or_atoms: Any) -> bool:
        """Whether a composition lies inside the hull's chemical system."""
        comp = as_composition(composition_or_atoms)
        return {el.symbol for el in comp.elements} <= set(self.elements)

    def hull_energy_per_atom(self, composition_or_atoms: Any) -> float:
        """Energy per atom of the hull at a composition (eV/atom).

        Raises
        ------
        ValueError
            If the composition has an element outside the system (named).

        Examples
        --------
        >>> h = ReferenceHull.from_records([("Li", -1.9), ("O", -4.9)], "per_atom")
        >>> round(h.hull_energy_per_atom("Li2O2"), 6)  # halfway between the elements
        -3.4
        """
        comp = as_composition(composition_or_atoms)
        self._check_inside(comp)
        frac = comp.fractional_composition
        key = tuple(sorted((el.symbol, round(float(x), 12)) for el, x in frac.items()))
        value = self._hull_energy_memo.get(key)
        if value is None:
            value = float(self.phase_diagram.get_hull_energy_per_atom(comp))
            self._hull_energy_memo[key] = value
        return value

    def e_above_hull(self, composition_or_atoms: Any, energy_per_atom: float) -> float:
        """Energy above the hull per atom: ``energy_per_atom - hull_energy_per_atom(composition)``.

        Parameters
        ----------
        composition_or_atoms : str, Composition, ase.Atoms, Structure or entry
            Formula, ``Composition``, ``ase.Atoms``, ``Structure`` or entry.
        energy_per_atom : float
            Energy of the structure in eV/atom: total energy per atom for an absolute
            hull, formation energy per atom for a formation hull (``is_formation``).

        Returns
        -------
        float
            eV/atom; 0 on the hull, positive above, negative below (a new stable phase).

        Raises
        ------
        ValueError
            For a composition outside the system or a non-finite energy.

        Examples
        --------
        >>> h = ReferenceHull.from_records([("Li", -1.9), ("O", -4.9), ("Li2O", -14.3)], "total")
        >>> round(h.e_above_hull("Li2O", -14.3 / 3 + 0.1), 6)
        0.1
        """
        value = float(energy_per_atom)
        if not math.isfinite(value):
            raise ValueError(f"energy_per_atom={energy_per_atom!r} is not finite")
        return value - self.hull_energy_per_atom(composition_or_atoms)

    def e_above_hull_many(self, compositions: Sequence[Any], energies_per_atom: Sequence[float]) -> np.ndarray:
        """Vector of :meth:`e_above_hull` for many structures (eV/atom)."""
        compositions = list(compositions)
        energies = np.asarray(energies_per_atom, dtype=float).reshape(-1)
        if len(compositions) != energies.shape[0]:
            raise ValueError(f"{len(compositions)} compositions but {energies.shape[0]} energies")
        return np.array([self.e_above_hull(c, e) for c, e in zip(compositions, energies)])

    def merged(self, other: ReferenceHull | Iterable[PDEntry]) -> ReferenceHull:
        """A hull with the entries of both (same energy kind), on the union of the systems."""
        if isinstance(other, ReferenceHull):
            if other.is_formation != self.is_formation:
                raise ValueError("cannot merge a formation-energy hull with an absolute-energy hull")
            more = other.entries
            elements = sorted(set(self.elements) | set(other.elements))
        else:
            more = list(other)
            elements = None
        return ReferenceHull(self.entries + list(more), elements, is_formation=self.is_formation,
                             name=f"{self.name}+{getattr(other, 'name', 'entries')}")

    def todict(self) -> dict[str, Any]:
        """JSON-able form: the system, the energy kind and the *stable* entries.

        The hull (hence every energy above hull) depends only on its stable entries, so
        the unstable ones are left out; :meth:`from_dict` rebuilds an equivalent hull.
        """
        return {
            "chemical_system": self.chemical_system,
            "is_formation": self.is_formation,
            "name": self.name,
            "entries": [[e.composition.formula.replace(" ", ""), float(e.energy)] for e in self.stable_entries],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceHull:
        """Rebuild a hull from :meth:`todict` output."""
        try:
            entries = [PDEntry(Composition(f), float(e)) for f, e in data["entries"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a ReferenceHull description: {exc}") from exc
        return cls(entries, data.get("chemical_system"), is_formation=bool(data.get("is_formation", False)),
                   name=str(data.get("name", "")))

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        kind = "formation" if self.is_formation else "total"
        return (
            f"ReferenceHull({self.chemical_system}, {len(self.entries)} entries, "
            f"{len(self.phase_diagram.stable_entries)} stable, energies={kind}, source={self.name!r})"
        )
