"""Energies of many structures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from aseguide.potentials.registry import get_potential

__all__ = ['compute_energies']


def compute_energies(structures: Sequence[Any], calculator: Any, *, batch_size: int = 64) -> np.ndarray:
    """Total energies (eV) of structures, in batches, without gradients (``nan`` on failure)."""
    pot = get_potential(calculator)
    structures = list(structures)
    out = []
    for s in range(0, len(structures), batch_size):
        out.append(pot.energy(structures[s:s + batch_size], grad=False).detach().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)
