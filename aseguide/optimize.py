"""Compatibility path: GuidedDiffusion now lives in :mod:`aseguide.sampling.dynamics`."""

from aseguide.sampling.dynamics import GuidedDiffusion  # noqa: F401
from aseguide.sampling.num_atoms import sample_num_atoms  # noqa: F401

__all__ = ["GuidedDiffusion", "sample_num_atoms"]
