"""Old path of :mod:`aseguide.thermo.hull` (reference convex hulls), kept for compatibility."""

from aseguide.thermo.hull import ENERGY_KINDS, ReferenceHull, as_composition, parse_chemical_system

__all__ = ["ReferenceHull", "parse_chemical_system", "as_composition", "ENERGY_KINDS"]
