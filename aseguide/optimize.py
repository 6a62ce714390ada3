"""Compatibility path: GuidedDiffusion now lives in :mod:`aseguide.sampling.dynamics`."""

from aseguide.sampling.dynamics import (  # noqa: F401
    GuidedDiffusion,
    sample_num_atoms,
)

__all__ = [
    "GuidedDiffusion",
    "sample_num_atoms",
]
