"""Where reference hulls come from.

Records, CSV tables, pymatgen entries, structures and a potential, the Materials Project.

Each function returns the entries a :class:`~aseguide.thermo.ReferenceHull` is built
from; the hull's constructors (``ReferenceHull.from_table`` ...) call them.

Examples
--------
>>> entries, is_formation = entries_from_records([("Li", -1.9), ("O2", -9.8)], "total")
>>> [e.name for e in entries], is_formation
(['Li', 'O2'], False)
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
from typing import Any, Literal

import numpy as np
from ase import Atoms
from pymatgen.analysis.phase_diagram import PDEntry
from pymatgen.core import Composition, Structure
from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

from aseguide.composition import as_composition, element_symbols, parse_chemical_system
from aseguide.potentials import get_potential, total_energies

__all__ = [
    "ENERGY_KINDS",
    "EnergyKind",
    "check_energy_kind",
    "elemental_mu",
    "entries_from_materials_project",
    "entries_from_records",
    "entries_from_structures",
    "load_entries",
    "records_from_table",
]

#: Accepted values of the ``energy=`` flag of ``ReferenceHull.from_table`` / ``from_records``.
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


def check_energy_kind(energy: str) -> None:
    """Raise ``ValueError`` unless ``energy`` is one of :data:`ENERGY_KINDS`.

    Parameters
    ----------
    energy : str
        The flag to check.

    Examples
    --------
    >>> check_energy_kind("total")
    """
    if energy not in ENERGY_KINDS:
        raise ValueError(f"energy={energy!r} is not one of {ENERGY_KINDS}")


# --------------------------------------------------------------------------- records
def _checked_records(records: Iterable[tuple[Any, float]], name: str) -> list[tuple[Composition, float, str]]:
    out = []
    for i, (formula, value) in enumerate(records):
        comp = as_composition(formula)
        try:
            value = float(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"record {i} ({formula!r}): energy {value!r} is not a number") from exc
        if not math.isfinite(value):
            raise ValueError(f"record {i} ({formula!r}): energy {value!r} is not finite")
        out.append((comp, value, f"{name}:{i}"))
    if not out:
        raise ValueError(f"{name}: no records")
    return out


def _absolute(entries: list[PDEntry], elements: Sequence[str], references: Any) -> list[PDEntry]:
    """Formation-energy entries shifted by the elemental energies: total energies."""
    mu = elemental_mu(references)
    lacking = [el for el in elements if el not in mu]
    if lacking:
        raise ValueError(f"elemental references lack element(s) {', '.join(lacking)}")
    return [
        PDEntry(
            e.composition,
            e.energy + sum(n * mu[el.symbol] for el, n in e.composition.items()),
            name=e.name,
            attribute=e.attribute,
        )
        for e in entries
    ]


def entries_from_records(
    records: Iterable[tuple[Any, float]],
    energy: EnergyKind = "total",
    *,
    chemical_system: str | Iterable[str] | None = None,
    elemental_references: Any = None,
    name: str = "records",
) -> tuple[list[PDEntry], bool]:
    """Entries from ``(formula_or_composition, energy)`` pairs (see ``ReferenceHull.from_records``).

    Parameters
    ----------
    records : iterable of (formula, float)
        Formulas (or compositions, structures) and energies.
    energy : {"total", "per_atom", "formation_per_atom"}
        What the numbers are.
    chemical_system : str or iterable of str, optional
        Keep only the records inside this system.
    elemental_references : optional
        With ``"formation_per_atom"``: absolute elemental energies (the entries become absolute).
    name : str
        Source name, for the entries' ids and messages.

    Returns
    -------
    entries : list of PDEntry
        Total energies per formula as written.
    is_formation : bool
        Whether the energies are formation energies.

    Examples
    --------
    >>> entries, is_formation = entries_from_records([("B", 0.0)], "formation_per_atom",
    ...                                              elemental_references={"B": -6.679})
    >>> round(entries[0].energy, 3), is_formation
    (-6.679, False)
    """
    check_energy_kind(energy)
    if elemental_references is not None and energy != "formation_per_atom":
        raise ValueError(
            f"elemental_references only applies to energy='formation_per_atom', not energy={energy!r}"
        )
    comps_energies = _checked_records(records, name)
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
            entries = _absolute(entries, elements, elemental_references)
            is_formation = False
    return entries, is_formation


# --------------------------------------------------------------------------- tables
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


def _table_row(path: Path, line: int, formula: str, raw: str, allowed: set[str] | None) -> tuple | None:
    """``(composition, energy)`` of a table row, ``None`` when outside ``allowed``."""
    if allowed is not None and not set(_SYMBOL.findall(formula)) <= allowed:
        return None
    try:
        comp = Composition(formula)
        symbols = element_symbols(comp)
        if comp.num_atoms <= 0:
            raise ValueError("empty composition")
    except Exception as exc:
        raise ValueError(f"{path}:{line}: cannot parse formula {formula!r}: {exc}") from exc
    if allowed is not None and not symbols <= allowed:
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{path}:{line}: energy {raw!r} of {formula} is not a number") from exc
    if not math.isfinite(value):
        raise ValueError(f"{path}:{line}: energy {raw!r} of {formula} is not finite")
    return comp, value


def records_from_table(
    path: str | os.PathLike,
    *,
    chemical_system: str | Iterable[str] | None = None,
    formula_column: str | None = None,
    energy_column: str | None = None,
) -> list[tuple[Composition, float]]:
    """``(composition, energy)`` rows of a CSV table (see ``ReferenceHull.from_table``).

    Parameters
    ----------
    path : str or os.PathLike
        CSV file (optionally ``.gz``) with a header line.
    chemical_system : str or iterable of str, optional
        Keep only rows inside this system.
    formula_column, energy_column : str, optional
        Column names; guessed from common names by default.

    Returns
    -------
    list of (Composition, float)
        The rows kept, in file order.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        For a missing column, an unparsable row (its line is named) or no row kept.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> table = pathlib.Path(tempfile.mkdtemp()) / "refs.csv"
    >>> _ = table.write_text("formula,energy\\nLi,-1.9\\nO2,-9.8\\n")
    >>> [(c.formula, e) for c, e in records_from_table(table)]
    [('Li1', -1.9), ('O2', -9.8)]
    """
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
            record = _table_row(path, line, formula, raw, allowed)
            if record is not None:
                records.append(record)
    if not records:
        where = f" inside {'-'.join(sorted(allowed))}" if allowed else ""
        raise ValueError(f"{path}: no rows{where}")
    return records


# --------------------------------------------------------------------------- entries
def _entry(item: Any, i: int) -> PDEntry:
    if isinstance(item, (PDEntry, ComputedEntry)):
        return item
    if isinstance(item, Mapping):
        cls_name = item.get("@class", "ComputedEntry")
        if cls_name == "ComputedStructureEntry":
            return ComputedStructureEntry.from_dict(item)
        if cls_name == "PDEntry":
            return PDEntry.from_dict(item)
        return ComputedEntry.from_dict(item)
    raise TypeError(f"item {i} is a {type(item).__name__}, not a pymatgen entry or its dict")


def load_entries(source: Any) -> list[PDEntry]:
    """Entries from a JSON(.gz) path, a list/dict of entries or of their dicts.

    Parameters
    ----------
    source : str, os.PathLike, entry, Mapping or iterable
        A ``.json``/``.json.gz`` file (a list of entry dicts, or a dict of them), or
        entries / entry dicts in memory.

    Returns
    -------
    list of PDEntry
        The entries (their energies checked finite).

    Examples
    --------
    >>> [e.energy for e in load_entries([ComputedEntry("B", -6.679)])]
    [-6.679]
    """
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
    entries = [_entry(item, i) for i, item in enumerate(data)]
    if not entries:
        raise ValueError("no entries given")
    for e in entries:
        if not math.isfinite(e.energy):
            raise ValueError(f"entry {getattr(e, 'entry_id', None) or e.composition.formula} has energy {e.energy!r}")
    return entries


def elemental_mu(references: Any) -> dict[str, float]:
    """Energy per atom of each element's lowest reference (eV/atom).

    Parameters
    ----------
    references : Mapping, ReferenceHull, entries or path
        ``{"B": -6.679}`` (eV/atom), an absolute-energy hull, or entries (as for
        :func:`load_entries`).

    Returns
    -------
    dict of str to float
        Symbol -> eV/atom.

    Examples
    --------
    >>> elemental_mu([PDEntry("B2", -13.0), PDEntry("B", -6.4)])
    {'B': -6.5}
    """
    if hasattr(references, "is_formation") and hasattr(references, "phase_diagram"):  # a ReferenceHull
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
        entries = load_entries(references)
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


# --------------------------------------------------------------------------- structures
def _atoms_to_structure(atoms: Atoms) -> Structure:
    from pymatgen.io.ase import AseAtomsAdaptor

    return AseAtomsAdaptor.get_structure(atoms)


def entries_from_structures(
    structures: Sequence[Atoms | Structure],
    calculator: Any,
    *,
    chemical_system: str | Iterable[str] | None = None,
    batch_size: int = 64,
    device: str | None = None,
) -> tuple[list[ComputedStructureEntry], str]:
    """Entries of reference structures with a potential's energies (see ``ReferenceHull.from_structures``).

    Parameters
    ----------
    structures : sequence of ase.Atoms or Structure
        The references.
    calculator : str, ASE calculator or BatchedPotential
        The potential.
    chemical_system : str or iterable of str, optional
        Keep only structures inside this system.
    batch_size : int
        Structures per batched potential call.
    device : str, optional
        Device of a potential given by name.

    Returns
    -------
    entries : list of ComputedStructureEntry
        Total energies (eV).
    potential_name : str
        The potential's name.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from ase.calculators.emt import EMT
    >>> entries, name = entries_from_structures([bulk("Cu")], EMT())
    >>> round(entries[0].energy, 4), name
    (-0.0057, 'EMT')
    """
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
    energies = total_energies([s for _, s in keep], potential, batch_size=batch_size)
    entries = []
    for (i, s), e in zip(keep, energies):
        if not np.isfinite(e):
            raise ValueError(f"the potential failed on reference structure {i} ({as_composition(s).formula})")
        pmg = s if isinstance(s, Structure) else _atoms_to_structure(s)
        entries.append(ComputedStructureEntry(pmg, float(e), entry_id=f"structure-{i}"))
    return entries, potential.name


# --------------------------------------------------------------------------- Materials Project
def entries_from_materials_project(
    chemsys: str | Iterable[str], api_key: str | None = None, **query: Any
) -> tuple[list[ComputedEntry], list[str]]:
    """Materials Project entries of a chemical system and its subsystems (needs ``mp-api``).

    Parameters
    ----------
    chemsys : str or iterable of str
        ``"Li-Co-O"`` or a list of symbols.
    api_key : str, optional
        Materials Project API key; default: the ``MP_API_KEY`` environment variable.
    **query
        Passed to ``MPRester.get_entries_in_chemsys``.

    Returns
    -------
    entries : list of ComputedEntry
    elements : list of str
        The system's elements, sorted.

    Examples
    --------
    >>> entries, elements = entries_from_materials_project("Li-Co-O")  # doctest: +SKIP
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
    return entries, elements
