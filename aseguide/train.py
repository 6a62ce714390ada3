"""Old path of :mod:`aseguide.training` and :mod:`aseguide.cli.train` (``aseguide train``)."""

from aseguide.cli.train import register, run_train
from aseguide.training.card import TrainSummary
from aseguide.training.config import DEFAULT_DATA, TrainConfig
from aseguide.training.data import (
    CARBON_AVERAGE_DENSITY,
    average_density,
    chemgraph_to_atoms,
    read_dataset,
    split_indices,
    to_chemgraphs,
)
from aseguide.training.data import atoms_from_cif as _atoms_from_cif
from aseguide.training.loop import train

__all__ = ["TrainConfig", "TrainSummary", "DEFAULT_DATA", "CARBON_AVERAGE_DENSITY", "read_dataset", "split_indices",
           "average_density", "to_chemgraphs", "chemgraph_to_atoms", "train", "register", "run_train",
           "_atoms_from_cif"]
