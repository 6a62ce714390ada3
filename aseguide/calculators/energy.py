"""Calculator view of the energy-above-hull objective.

:class:`EnergyAboveHull` here is a :class:`~aseguide.calculators.GuidanceCalculator`
around the objective :class:`aseguide.constraints.EnergyAboveHull`: ``energy`` is the
objective's loss (with ``target=None`` and ``scale=None``: exactly the energy above
the reference hull in eV/atom), ``forces = -dloss/dpositions``, ``stress =
(1/V) dloss/dstrain``.

Examples
--------
>>> from aseguide.calculators import EnergyAboveHull, ReferenceHull
>>> hull = ReferenceHull.from_table("mattergenbis_vb_LiCoO.csv", "total")   # doctest: +SKIP
>>> atoms.calc = EnergyAboveHull("chgnet", hull, scale=None)               # doctest: +SKIP
>>> atoms.get_potential_energy()   # eV/atom above the hull                 # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from aseguide.calculators.guidance import GuidanceCalculator
from aseguide.constraints import energy as objectives

__all__ = ["EnergyAboveHull"]


class EnergyAboveHull(GuidanceCalculator):
    """ASE calculator: the energy-above-hull loss as a potential energy.

    Parameters
    ----------
    calculator, hull, target:
        As for :class:`aseguide.constraints.EnergyAboveHull` (the potential is loaded
        once, here, and kept).
    **kwargs:
        Objective options (``loss``, ``delta``, ``scale``, ``failure_value``,
        ``calculator_kwargs``, ``strength``, ``tolerance``); any other keyword goes to
        :class:`ase.calculators.calculator.Calculator`.

    Attributes
    ----------
    objective : aseguide.constraints.EnergyAboveHull

    Examples
    --------
    >>> from ase.build import bulk
    >>> from ase.calculators.emt import EMT
    >>> from pymatgen.analysis.phase_diagram import PDEntry
    >>> from aseguide.calculators import ReferenceHull
    >>> atoms = bulk("Cu", a=3.7)
    >>> atoms.calc = EnergyAboveHull(EMT(), ReferenceHull([PDEntry("Cu", 0.0)]), scale=None)
    >>> round(atoms.get_potential_energy(), 4)
    0.0303
    """

    _objective_keys = ("loss", "delta", "scale", "failure_value", "calculator_kwargs", "strength", "tolerance")

    def __init__(self, calculator: Any, hull: Any, target: Any = None, **kwargs: Any) -> None:
        objective_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in self._objective_keys}
        objective = objectives.EnergyAboveHull(calculator, hull, target, **objective_kwargs)
        super().__init__(objective, **kwargs)
