"""Training and evaluation of small MatterGen-architecture score models (``aseguide train``).

==============  ===============================================================
``config``      :class:`TrainConfig`: the settings, the ``tiny`` preset
``data``        dataset reading, the held-out split, ChemGraphs, mean density
``loop``        :func:`train`: the loop, EMA, periodic checkpoints, ``--resume``
``card``        :class:`TrainSummary` and ``model_card.md``
``evaluation``  :func:`evaluate_model`: generated structures against held-out data
==============  ===============================================================

Examples
--------
>>> TrainConfig.tiny(steps=3).steps
3
"""

from aseguide.training.card import TrainSummary
from aseguide.training.config import TrainConfig
from aseguide.training.evaluation import evaluate_model, load_held_out
from aseguide.training.loop import train

__all__ = ["TrainConfig", "TrainSummary", "train", "evaluate_model", "load_held_out"]
