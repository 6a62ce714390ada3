"""Chemical systems and compositions: the one parser of ``"Li-Co-O"`` and of formulas.

A chemical system is written ``"Li-Co-O"``, ``"Li,Co,O"``, ``"Li Co O"``, ``"LiCoO"`` or
given as a sequence of symbols; :func:`normalize_chemical_system` reads it in the order
written (each element once: MatterGen's condition), :func:`parse_chemical_system` as the
sorted set of its elements (a hull's system).
:func:`as_composition` takes the composition of a formula, a mapping, ``ase.Atoms``, a
pymatgen ``Structure`` or entry.

Examples
--------
>>> normalize_chemical_system("Li-Co-O")
['Li', 'Co', 'O']
>>> parse_chemical_system("LiCoO")
('Co', 'Li', 'O')
>>> as_composition("LiCoO2").reduced_formula
'LiCoO2'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ase import Atoms
from ase.data import chemical_symbols
from pymatgen.analysis.phase_diagram import PDEntry
from pymatgen.core import Composition, Element, Structure
from pymatgen.entries.computed_entries import ComputedEntry

__all__ = ["normalize_chemical_system", "parse_chemical_system", "as_composition", "element_symbols"]

_SYMBOLS = frozenset(chemical_symbols[1:])


def _split_text(text: str) -> list[str]:
    """Tokens of ``"Li-Co-O"`` / ``"Li,Co O"`` (separators), or of ``"LiCoO"`` (capital letters)."""
    text = text.strip()
    if "-" in text or " " in text or "," in text:
        return [p for p in text.replace(",", " ").replace("-", " ").split() if p]
    parts: list[str] = []
    for ch in text:
        if ch.isupper() or not parts:
            parts.append(ch)
        else:
            parts[-1] += ch
    return parts


def _symbols(system: str | Iterable[str | Element]) -> list[str]:
    """Element symbols of a chemical system as written (repeats kept); unknown or none: ``ValueError``."""
    parts = _split_text(system) if isinstance(system, str) else [str(p).strip() for p in system]
    for p in parts:
        if p not in _SYMBOLS:
            raise ValueError(f"unknown element {p!r} in chemical system {system!r}")
    if not parts:
        raise ValueError(f"empty chemical system {system!r}")
    return parts


def normalize_chemical_system(system: str | Iterable[str | Element]) -> list[str]:
    """The elements of a chemical system in the order written, each once.

    Parameters
    ----------
    system : str or iterable of str or Element
        ``"Li-Co-O"``, ``"Li,Co,O"``, ``"Li Co O"``, ``"LiCoO"`` or a sequence of symbols.

    Returns
    -------
    list of str
        The symbols, in the order given.

    Raises
    ------
    ValueError
        Empty system, unknown element (named) or a repeated element.

    Examples
    --------
    >>> normalize_chemical_system(["Fe", "Nd", "B"])
    ['Fe', 'Nd', 'B']
    """
    elements = _symbols(system)
    if len(set(elements)) != len(elements):
        raise ValueError(f"chemical system {system!r} repeats an element")
    return elements


def parse_chemical_system(system: str | Iterable[str | Element]) -> tuple[str, ...]:
    """Parse a chemical system into a sorted tuple of element symbols.

    Parameters
    ----------
    system : str or iterable of str or Element
        As for :func:`normalize_chemical_system` (repeats allowed here).

    Returns
    -------
    tuple of str
        Unique element symbols, sorted alphabetically.

    Raises
    ------
    ValueError
        For an unknown element symbol (named) or an empty system.

    Examples
    --------
    >>> parse_chemical_system("Li-Co-O")
    ('Co', 'Li', 'O')
    """
    return tuple(sorted(set(_symbols(system))))


def element_symbols(comp: Composition) -> set[str]:
    """Element symbols of a composition (pymatgen reads unknown symbols as dummy species).

    Parameters
    ----------
    comp : pymatgen.core.Composition
        The composition.

    Returns
    -------
    set of str
        Its element symbols.

    Raises
    ------
    ValueError
        For a species that is not an element (named).

    Examples
    --------
    >>> sorted(element_symbols(Composition("Li2O")))
    ['Li', 'O']
    """
    bad = [str(el) for el in comp.elements if not isinstance(el, Element)]
    if bad:
        raise ValueError(f"unknown element(s) {', '.join(bad)}")
    return {el.symbol for el in comp.elements}


def as_composition(obj: Any) -> Composition:
    """Composition of a formula, dict, ``Composition``, ``ase.Atoms``, ``Structure`` or entry.

    Parameters
    ----------
    obj : str, Mapping, Composition, ase.Atoms, Structure, PDEntry or ComputedEntry
        What to take the composition of.

    Returns
    -------
    pymatgen.core.Composition
        Its composition (``Atoms``: from the Hill formula).

    Raises
    ------
    ValueError
        If the formula cannot be parsed or the composition is empty.
    TypeError
        For an object that carries no composition.

    Examples
    --------
    >>> as_composition({"Li": 1, "Co": 1, "O": 2}).reduced_formula
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
            element_symbols(comp)
        except Exception as exc:  # pymatgen raises several types
            raise ValueError(f"cannot parse formula {obj!r}: {exc}") from exc
    elif isinstance(obj, Mapping):
        comp = Composition(obj)
    else:
        raise TypeError(f"cannot take a composition from a {type(obj).__name__}: {obj!r}")
    if comp.num_atoms <= 0:
        raise ValueError(f"empty composition {obj!r}")
    return comp
