"""Old path of :mod:`aseguide.thermo.hull` (reference convex hulls), kept for compatibility."""

from aseguide.composition import as_composition, parse_chemical_system
from aseguide.thermo.hull import ReferenceHull
from aseguide.thermo.sources import ENERGY_KINDS

__all__ = ["ReferenceHull", "parse_chemical_system", "as_composition", "ENERGY_KINDS"]
