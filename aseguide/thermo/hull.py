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

Example
-------
>>> from aseguide.calculators import ReferenceHull
>>> hull = ReferenceHull.from_records(
...     [("Li", -1.9), ("O2", -9.8), ("Li2O", -14.3)], energy="total")
>>> hull.chemical_system
'Li-O'
>>> round(hull.e_above_hull("Li2O", -14.3 / 3), 6)  # a hull vertex
0.0
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from ase import Atoms
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Element, Structure
from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

if TYPE_CHECKING:  # pragma: no cover
    from ase.calculators.calculator import Calculator

    from aseguide.potentials import BatchedPotential

__all__ = ["ReferenceHull", "parse_chemical_system", "as_composition", "ENERGY_KINDS"]

#: Accepted values of the ``energy=`` flag of :meth:`ReferenceHull.from_table`.
ENERGY_KINDS = ("total", "per_atom", "formation_per_atom")

EnergyKind = Literal["total", "per_atom", "formation_per_atom"]

_SYMBOL = re.compile(r"[A-Z][a-z]?")

_FORMULA_COLUMNS = ("formula", "composition", "reduced_formula", "pretty_formula", "formula_pretty")
_ENERGY_COLUMNS = (
    "energy",
    "total_energy",
    "energy_per_atom",
    "formation_energy_per_atom",
    "e_form",
    "formation_energy",
    "target",
)


# --------------------------------------------------------------------------- helpers
def parse_chemical_system(system: str | Iterable[str | Element]) -> tuple[str, ...]:
    """Parse a chemical system into a sorted tuple of element symbols.

    Parameters
    ----------
    system:
        ``"Li-Co-O"``, ``"Li Co O"``, ``"LiCoO"`` or a sequence of symbols / ``Element``.

    Returns
    -------
    tuple of str
        Unique element symbols, sorted alphabetically.

    Raises
    ------
    ValueError
        For an unknown element symbol (named) or an empty system.

    Example
    -------
    >>> parse_chemical_system("Li-Co-O")
    ('Co', 'Li', 'O')
    """
    if isinstance(system, str):
        text = system.strip()
        if "-" in text or " " in text or "," in text:
            parts = [p for p in text.replace(",", " ").replace("-", " ").split() if p]
        else:  # "LiCoO": split on capital letters
            parts, current = [], ""
            for ch in text:
                if ch.isupper() and current:
                    parts.append(current)
                    current = ch
                else:
                    current += ch
            if current:
                parts.append(current)
    else:
        parts = [str(p) for p in system]
    symbols = []
    for p in parts:
        if not Element.is_valid_symbol(p):
            raise ValueError(f"unknown element {p!r} in chemical system {system!r}")
        symbols.append(p)
    if not symbols:
        raise ValueError(f"empty chemical system {system!r}")
    return tuple(sorted(set(symbols)))


def as_composition(obj: Any) -> Composition:
    """Composition of a formula, dict, ``Composition``, ``ase.Atoms``, ``Structure`` or entry.

    Raises
    ------
    ValueError
        If the formula cannot be parsed or the composition is empty.
    TypeError
        For an object that carries no composition.

    Example
    -------
    >>> as_composition("LiCoO2").reduced_formula
    'LiCoO2'
    """
    if isinstance(obj, Composition):
        comp = obj
    elif isinstance(obj, Atoms):
        comp = Composition(obj.get_chemical_formula(mode="hill"))
    elif isinstance(obj, (Structure, PDEntry, ComputedEntry)):
        comp = obj.composition
    elif isinstance(obj, str):
        try:
            comp = Composition(obj)
            _element_symbols(comp)
        except Exception as exc:  # pymatgen raises several types
            raise ValueError(f"cannot parse formula {obj!r}: {exc}") from exc
    elif isinstance(obj, Mapping):
        comp = Composition(obj)
    else:
        raise TypeError(f"cannot take a composition from a {type(obj).__name__}: {obj!r}")
    if comp.num_atoms <= 0:
        raise ValueError(f"empty composition {obj!r}")
    return comp


def _element_symbols(comp: Composition) -> set[str]:
    """Element symbols of a composition; pymatgen reads unknown symbols as dummy species."""
    bad = [str(el) for el in comp.elements if not isinstance(el, Element)]
    if bad:
        raise ValueError(f"unknown element(s) {', '.join(bad)}")
    return {el.symbol for el in comp.elements}


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", newline="")
    return open(path, newline="")


def _pick_column(fieldnames: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str, path) -> str:
    if wanted is not None:
        if wanted not in fieldnames:
            raise ValueError(f"{path}: no column {wanted!r} ({what}); columns are {list(fieldnames)}")
        return wanted
    lower = {f.strip().lower(): f for f in fieldnames}
    found = [lower[c] for c in candidates if c in lower]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ValueError(
            f"{path}: cannot tell which column holds the {what} among {list(fieldnames)}; "
            f"pass {what}_column="
        )
    raise ValueError(f"{path}: several possible {what} columns {found}; pass {what}_column= to choose one")


def _elemental_mu(references: Any) -> dict[str, float]:
    """Energy per atom of each element's lowest reference (eV/atom)."""
    if isinstance(references, ReferenceHull):
        if references.is_formation:
            raise ValueError("elemental references must be absolute energies, not a formation-energy hull")
        entries: Iterable = references.entries
    elif isinstance(references, Mapping) and references and all(
        isinstance(v, (int, float, np.floating, np.integer)) for v in references.values()
    ):
        mu = {}
        for el, value in references.items():
            sym = parse_chemical_system([str(el)])[0]
            if not math.isfinite(float(value)):
                raise ValueError(f"elemental reference energy of {sym} is {value!r}, not a finite number")
            mu[sym] = float(value)
        return mu
    else:
        entries = _load_entries(references)
    mu: dict[str, float] = {}
    for e in entries:
        comp = e.composition
        if len(comp.elements) != 1:
            continue
        sym = comp.elements[0].symbol
        value = e.energy / comp.num_atoms
        if sym not in mu or value < mu[sym]:
            mu[sym] = value
    if not mu:
        raise ValueError("no elemental entries found in the elemental references")
    return mu


def _load_entries(source: Any) -> list[PDEntry]:
    """Entries from a JSON(.gz) path, a list/dict of entries or of their dicts."""
    if isinstance(source, (str, os.PathLike)):
        from monty.serialization import loadfn

        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"entries file not found: {path}")
        with warnings.catch_warnings():  # noble gases: "No Pauling electronegativity"
            warnings.simplefilter("ignore", UserWarning)
            data = loadfn(path)
    else:
        data = source
    if isinstance(data, Mapping):
        if "@class" in data or "energy" in data and "composition" in data:
            data = [data]
        else:  # e.g. {"B": entry, "Li": entry}
            data = list(data.values())
    if isinstance(data, (PDEntry, ComputedEntry)):
        data = [data]
    entries: list[PDEntry] = []
    for i, item in enumerate(data):
        if isinstance(item, (PDEntry, ComputedEntry)):
            entries.append(item)
        elif isinstance(item, Mapping):
            cls_name = item.get("@class", "ComputedEntry")
            if cls_name == "ComputedStructureEntry":
                entries.append(ComputedStructureEntry.from_dict(item))
            elif cls_name == "PDEntry":
                entries.append(PDEntry.from_dict(item))
            else:
                entries.append(ComputedEntry.from_dict(item))
        else:
            raise TypeError(f"item {i} is a {type(item).__name__}, not a pymatgen entry or its dict")
    if not entries:
        raise ValueError("no entries given")
    for e in entries:
        if not math.isfinite(e.energy):
            raise ValueError(f"entry {getattr(e, 'entry_id', None) or e.composition.formula} has energy {e.energy!r}")
    return entries


# --------------------------------------------------------------------------- the hull
class ReferenceHull:
    """Convex hull of reference entries of one chemical system.

    Parameters
    ----------
    entries:
        pymatgen entries (``PDEntry``, ``ComputedEntry``, ``ComputedStructureEntry``);
        ``entry.energy`` is the total energy of the formula unit written in the entry.
    chemical_system:
        Restrict the hull to this system (``"Li-Co-O"`` or a list of symbols); entries
        with other elements are dropped. Default: all elements of the entries.
    is_formation:
        ``True`` when the energies are formation energies (queries then take formation
        energies per atom too).
    name:
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

    Example
    -------
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
        self.phase_diagram = PhaseDiagram(entries, elements=[Element(el) for el in elements])
        # per-instance memo of hull energies (reduced composition -> eV/atom)
        self._hull_energy_memo: dict[tuple, float] = {}

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
        records:
            Pairs of a formula (or ``Composition``, ``Atoms``, ``Structure``) and an energy.
        energy:
            What the numbers are: ``"total"`` (eV per formula as written, e.g. ``Li16O16``
            is 32 atoms), ``"per_atom"`` (eV/atom) or ``"formation_per_atom"`` (eV/atom,
            elements at 0).
        chemical_system:
            Restrict the entries to this system.
        elemental_references:
            Only with ``"formation_per_atom"``: absolute energies of the elements
            (``{"B": -6.679}`` in eV/atom, entries, an entries JSON path, or an absolute
            ``ReferenceHull``). The hull is then absolute. Without it, it stays a
            formation-energy hull.

        Example
        -------
        >>> h = ReferenceHull.from_records([("B", 0.0), ("B", 0.03)], "formation_per_atom",
        ...                                elemental_references={"B": -6.679})
        >>> round(h.hull_energy_per_atom("B"), 3), h.is_formation
        (-6.679, False)
        """
        if energy not in ENERGY_KINDS:
            raise ValueError(f"energy={energy!r} is not one of {ENERGY_KINDS}")
        if elemental_references is not None and energy != "formation_per_atom":
            raise ValueError(
                f"elemental_references only applies to energy='formation_per_atom', not energy={energy!r}"
            )
        comps_energies = []
        for i, (formula, value) in enumerate(records):
            comp = as_composition(formula)
            try:
                value = float(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"record {i} ({formula!r}): energy {value!r} is not a number") from exc
            if not math.isfinite(value):
                raise ValueError(f"record {i} ({formula!r}): energy {value!r} is not finite")
            comps_energies.append((comp, value, f"{name}:{i}"))
        if not comps_energies:
            raise ValueError(f"{name}: no records")
        if chemical_system is not None:
            allowed = set(parse_chemical_system(chemical_system))
            comps_energies = [c for c in comps_energies if {el.symbol for el in c[0].elements} <= allowed]
            elements = sorted(allowed)
        else:
            elements = sorted({el.symbol for comp, _, _ in comps_energies for el in comp.elements})
        entries = []
        for comp, value, entry_id in comps_energies:
            total = value if energy == "total" else value * comp.num_atoms
            entries.append(PDEntry(comp, total, name=comp.reduced_formula, attribute=entry_id))
        is_formation = energy == "formation_per_atom"
        if is_formation:
            # elements are at zero formation energy by definition: add missing terminals
            have = {e.composition.elements[0].symbol for e in entries if len(e.composition.elements) == 1}
            for el in elements:
                if el not in have:
                    entries.append(PDEntry(Composition(el), 0.0, name=el, attribute="element at 0 (definition)"))
            if elemental_references is not None:
                mu = _elemental_mu(elemental_references)
                lacking = [el for el in elements if el not in mu]
                if lacking:
                    raise ValueError(f"elemental references lack element(s) {', '.join(lacking)}")
                entries = [
                    PDEntry(
                        e.composition,
                        e.energy + sum(n * mu[el.symbol] for el, n in e.composition.items()),
                        name=e.name,
                        attribute=e.attribute,
                    )
                    for e in entries
                ]
                is_formation = False
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
        path:
            CSV file (optionally ``.gz``) with a header line.
        energy:
            ``"total"`` (eV per formula as written), ``"per_atom"`` (eV/atom) or
            ``"formation_per_atom"`` (eV/atom). Required: the table cannot say which.
        chemical_system:
            Keep only rows inside this system (e.g. ``"B"`` out of all of MP).
        formula_column, energy_column:
            Column names; by default guessed from common names (``formula``/``Formula``,
            ``energy``/``Energy``/``target``/...) and an error asks for them when ambiguous.
        elemental_references:
            See :meth:`from_records`.

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            For an unknown ``energy`` flag, a missing column, an unparsable row (its line
            number is named) or a system with a missing element.

        Example
        -------
        >>> hull = ReferenceHull.from_table("mattergenbis_vb_LiCoO.csv", energy="total")  # doctest: +SKIP
        >>> hull.e_above_hull("LiCoO2", -5.85)  # doctest: +SKIP
        """
        if energy not in ENERGY_KINDS:
            raise ValueError(f"energy={energy!r} is not one of {ENERGY_KINDS}")
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"reference table not found: {path}")
        allowed = set(parse_chemical_system(chemical_system)) if chemical_system is not None else None
        records = []
        with _open_text(path) as fh:
            reader = csv.DictReader(fh, skipinitialspace=True)
            if not reader.fieldnames:
                raise ValueError(f"{path}: empty table (no header line)")
            fcol = _pick_column(reader.fieldnames, formula_column, _FORMULA_COLUMNS, "formula", path)
            ecol = _pick_column(reader.fieldnames, energy_column, _ENERGY_COLUMNS, "energy", path)
            for line, row in enumerate(reader, start=2):
                formula = (row.get(fcol) or "").strip()
                raw = (row.get(ecol) or "").strip()
                if allowed is not None and not set(_SYMBOL.findall(formula)) <= allowed:
                    continue
                try:
                    comp = Composition(formula)
                    symbols = _element_symbols(comp)
                    if comp.num_atoms <= 0:
                        raise ValueError("empty composition")
                except Exception as exc:
                    raise ValueError(f"{path}:{line}: cannot parse formula {formula!r}: {exc}") from exc
                if allowed is not None and not symbols <= allowed:
                    continue
                try:
                    value = float(raw)
                except ValueError as exc:
                    raise ValueError(f"{path}:{line}: energy {raw!r} of {formula} is not a number") from exc
                if not math.isfinite(value):
                    raise ValueError(f"{path}:{line}: energy {raw!r} of {formula} is not finite")
                records.append((comp, value))
        if not records:
            where = f" inside {'-'.join(sorted(allowed))}" if allowed else ""
            raise ValueError(f"{path}: no rows{where}")
        return cls.from_records(
            records,
            energy,
            chemical_system=chemical_system,
            elemental_references=elemental_references,
            name=path.name,
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
        path_or_entries:
            A ``.json``/``.json.gz`` file (a list of entry dicts, or a dict of them, as
            the MP elemental reference file), or entries / entry dicts in memory.
            ``entry.energy`` (corrected energy when corrections are attached) is used.
        chemical_system:
            Keep only entries inside this system.

        Example
        -------
        >>> from pymatgen.entries.computed_entries import ComputedEntry
        >>> hull = ReferenceHull.from_entries([ComputedEntry("B", -6.679)])
        >>> hull.elements
        ('B',)
        """
        name = str(path_or_entries) if isinstance(path_or_entries, (str, os.PathLike)) else "entries"
        entries = _load_entries(path_or_entries)
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
        structures:
            ``ase.Atoms`` or pymatgen ``Structure`` objects; must include every element
            of the system on its own.
        calculator:
            A potential name (``"chgnet"``...), an ASE calculator, or a
            :class:`~aseguide.potentials.BatchedPotential`.
        chemical_system:
            Keep only structures inside this system.
        batch_size:
            Structures per batched potential call.

        Raises
        ------
        ValueError
            If the potential fails on a reference structure (named by its index).

        Example
        -------
        >>> from ase.build import bulk
        >>> hull = ReferenceHull.from_structures([bulk("Si")], "chgnet")  # doctest: +SKIP
        """
        from aseguide.potentials import get_potential
        from aseguide.state import CrystalBatch

        structures = list(structures)
        if not structures:
            raise ValueError("no reference structures given")
        potential = get_potential(calculator, **({"device": device} if device else {}))
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be >= 1")
        allowed = set(parse_chemical_system(chemical_system)) if chemical_system is not None else None
        keep = [
            (i, s) for i, s in enumerate(structures)
            if allowed is None or {el.symbol for el in as_composition(s).elements} <= allowed
        ]
        if not keep:
            raise ValueError("no reference structure lies inside the chemical system")
        entries = []
        for start in range(0, len(keep), batch_size):
            chunk = keep[start:start + batch_size]
            batch = CrystalBatch.from_any([s for _, s in chunk])
            energies = potential.energy(batch, grad=False).detach().cpu().numpy()
            for (i, s), e in zip(chunk, energies):
                if not np.isfinite(e):
                    raise ValueError(
                        f"the potential failed on reference structure {i} ({as_composition(s).formula})"
                    )
                pmg = s if isinstance(s, Structure) else _atoms_to_structure(s)
                entries.append(ComputedStructureEntry(pmg, float(e), entry_id=f"structure-{i}"))
        return cls(entries, chemical_system, name=f"structures@{potential.name}")

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
        chemsys:
            ``"Li-Co-O"`` or a list of symbols; all subsystems are included.
        api_key:
            Materials Project API key; default: the ``MP_API_KEY`` environment variable.
        chemical_system:
            Further restriction of the entries.
        **query:
            Passed to ``get_entries_in_chemsys`` (e.g. ``additional_criteria=``).

        Raises
        ------
        ImportError
            Without ``mp-api`` (``pip install aseguide[mp]``).
        ValueError
            Without an API key.

        Example
        -------
        >>> hull = ReferenceHull.from_materials_project("Li-Co-O")  # doctest: +SKIP
        """
        elements = list(parse_chemical_system(chemsys))
        try:
            from mp_api.client import MPRester
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "ReferenceHull.from_materials_project needs mp-api: pip install 'aseguide[mp]'"
            ) from exc
        key = api_key or os.environ.get("MP_API_KEY")
        if not key:
            raise ValueError(
                "no Materials Project API key: pass api_key= or set the MP_API_KEY environment variable"
            )
        with MPRester(key) as mpr:
            entries = mpr.get_entries_in_chemsys(elements, **query)
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

        Example
        -------
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
        composition_or_atoms:
            Formula, ``Composition``, ``ase.Atoms``, ``Structure`` or entry.
        energy_per_atom:
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

        Example
        -------
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


def _atoms_to_structure(atoms: Atoms) -> Structure:
    from pymatgen.io.ase import AseAtomsAdaptor

    return AseAtomsAdaptor.get_structure(atoms)
