"""Thermodynamic references: convex hulls of reference energies and their sources."""

from aseguide.thermo.hull import ReferenceHull

__all__ = ["ReferenceHull"]
