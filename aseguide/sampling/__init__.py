"""Guided sampling: the guidance settings, the pure guidance math and the ``GuidedDiffusion`` dynamics.

Examples
--------
>>> from aseguide.sampling import GuidedDiffusion
>>> GuidedDiffusion.__name__
'GuidedDiffusion'
"""

from aseguide.sampling.dynamics import GuidedDiffusion
from aseguide.sampling.num_atoms import sample_num_atoms

__all__ = ["GuidedDiffusion", "sample_num_atoms"]
