"""Guided sampling: the guidance settings, the pure guidance math and the ``GuidedDiffusion`` dynamics.

Examples
--------
>>> from aseguide.sampling import GuidedDiffusion
>>> GuidedDiffusion.__name__
'GuidedDiffusion'
"""

from aseguide.sampling.dynamics import GuidedDiffusion
from aseguide.sampling.num_atoms import sample_num_atoms
from aseguide.sampling.settings import PRESETS, GuidanceSettings

__all__ = ["GuidedDiffusion", "GuidanceSettings", "PRESETS", "sample_num_atoms"]
