"""aseguide: training-free universal guidance for crystal diffusion models, the ASE way.

Guidance objectives are ASE constraints and calculators (:mod:`aseguide.constraints`,
:mod:`aseguide.calculators`); the guided sampler :class:`GuidedDiffusion` is an ASE
dynamics object driving a pretrained MatterGen model loaded with :func:`load_model`.
"""

__version__ = "0.1.0"

import aseguide._started  # noqa: F401  (first: the time aseguide generate prints counts from here)
import aseguide.constraints  # noqa: F401  (registers the objectives with ase.constraints for .traj files)
from aseguide.models import load_model
from aseguide.optimize import GuidedDiffusion
from aseguide.state import CrystalBatch

__all__ = ["CrystalBatch", "GuidedDiffusion", "load_model", "__version__"]
