"""Thermodynamic references: the reference convex hull and where its entries come from.

* :mod:`aseguide.thermo.hull` — :class:`ReferenceHull`, the convex hull of reference
  energies of a chemical system (pymatgen's ``PhaseDiagram``) and its queries;
* :mod:`aseguide.thermo.sources` — its entries from records, CSV tables, pymatgen
  entries, structures with a potential, the Materials Project.

Examples
--------
>>> hull = ReferenceHull.from_records([("Li", -1.9), ("O", -4.9)], "per_atom")
>>> round(hull.e_above_hull("Li2O2", -3.3), 6)
0.1
"""

from aseguide.thermo.hull import ReferenceHull
from aseguide.thermo.sources import ENERGY_KINDS

__all__ = ["ReferenceHull", "ENERGY_KINDS"]
