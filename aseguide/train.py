"""Old path of :mod:`aseguide.training` (``aseguide train``)."""

from aseguide.training.loop import (
                                    CARBON_AVERAGE_DENSITY,
                                    DEFAULT_DATA,
                                    TrainConfig,
                                    TrainSummary,
                                    _atoms_from_cif,
                                    average_density,
                                    chemgraph_to_atoms,
                                    read_dataset,
                                    register,
                                    run_train,
                                    split_indices,
                                    to_chemgraphs,
                                    train,
)

__all__ = ["TrainConfig", "TrainSummary", "DEFAULT_DATA", "CARBON_AVERAGE_DENSITY", "read_dataset", "split_indices",
           "average_density", "to_chemgraphs", "chemgraph_to_atoms", "train", "register", "run_train",
           "_atoms_from_cif"]
