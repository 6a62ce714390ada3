"""Settings of ``aseguide train``: :class:`TrainConfig` and its presets.

The field names are the keys of a training YAML file (``examples/carbon/train.yaml``)
and of the ``train_config`` record saved with every checkpoint.

Examples
--------
>>> TrainConfig.from_dict({"preset": "tiny", "steps": 2}).steps
2
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aseguide.models.tiny import TINY_SIZE

__all__ = ["TrainConfig", "DEFAULT_DATA"]

#: carbon_24 (val + test) as shipped in ``../shared/data`` (CIF column + energy_per_atom).
DEFAULT_DATA = ("../shared/data/carbon_24/val.csv", "../shared/data/carbon_24/test.csv")


@dataclasses.dataclass
class TrainConfig:
    """Settings of a training run; the defaults are the ``carbon-24-small`` CPU run.

    Attributes
    ----------
    data : list of str
        CSV files (columns ``material_id``, ``cif``, optional ``energy_per_atom``), concatenated.
    output : str
        Output folder (checkpoint layout, see the module docstring).
    name : str
        Model name recorded in the model card.
    held_out, split_seed : int
        Size and seed of the held-out set (a seeded permutation of the rows).
    subset : int or None
        Use only the first ``subset`` rows of the permuted training rows (tests).
    hidden_dim, num_blocks, num_radial, num_spherical, emb_size_trip, emb_size_rbf, emb_size_cbf, emb_size_bil_trip
        GemNet-T sizes. Default hidden 96, 2 blocks: 1.11 M parameters, a 4.5 MB checkpoint
        (chosen on 2 CPU cores with ``benchmarks/train_candidates.py``).
    cutoff, max_neighbors : float, int
        Radius graph (5 Å and 16 neighbours hold carbon's first two shells, 1.4-2.6 Å).
    batch_size, steps, max_minutes : int, int, float
        Structures per step; the run stops after ``steps`` steps in total (over all
        sittings) or after ``max_minutes`` of this sitting.
    learning_rate, grad_clip, ema_decay : float
        Adam learning rate (MatterGen's optimizer partial), gradient-norm clip, EMA decay.
    eval_every, eval_batches : int
        Held-out loss every ``eval_every`` steps, averaged over ``eval_batches`` batches.
    sampling_steps, max_atoms : int
        Sampling defaults recorded in the checkpoint: the number of diffusion steps
        :func:`aseguide.load_model` users get when they do not choose one, and the
        largest cell (atoms) the model is offered for (carbon_24 has up to 24).
    position_loss_weight, lattice_loss_weight, species_loss_weight : float
        Weights of the three terms of MatterGen's loss (``MaterialsLoss.weights``); the
        defaults 0.1 / 1 / 1 are those of MatterGen's released checkpoints. With 1 / 1 / 1
        the position term (a sum over atoms) dominates and the lattice score is learnt
        so slowly that sampled cells blow up (carbon-24-small's first sitting).
    init_from : str or None
        A model folder (``config.yaml`` + ``checkpoints/last.ckpt``), a ``last.ckpt`` or a
        periodic ``resume.pt``, whose weights (EMA weights where saved) start this run
        instead of a random initialisation (fine-tuning, or continuing with new settings).
        The architecture must match; the optimizer starts afresh.
    checkpoint_minutes : float
        Wall time between periodic checkpoints (``checkpoints/resume.pt`` for ``--resume``,
        and the EMA weights in ``checkpoints/last.ckpt``, usable while the run goes on).
    seed : int
        Seed of the initialisation and of the training noise.
    device : str
        ``"auto"`` (cuda when available), ``"cpu"``, ``"cuda"``...
    """

    data: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_DATA))
    output: str = "runs/carbon-24-small"
    name: str = "carbon-24-small"
    held_out: int = 300
    split_seed: int = 0
    subset: int | None = None
    hidden_dim: int = 96
    num_blocks: int = 2
    num_radial: int = 128
    num_spherical: int = 7
    emb_size_trip: int = 64
    emb_size_rbf: int = 16
    emb_size_cbf: int = 16
    emb_size_bil_trip: int = 64
    cutoff: float = 5.0
    max_neighbors: int = 16
    batch_size: int = 64
    steps: int = 9000
    max_minutes: float = 140.0
    learning_rate: float = 3e-4
    grad_clip: float = 0.5
    ema_decay: float = 0.999
    eval_every: int = 500
    eval_batches: int = 4
    checkpoint_minutes: float = 5.0
    position_loss_weight: float = 0.1
    lattice_loss_weight: float = 1.0
    species_loss_weight: float = 1.0
    init_from: str | None = None
    sampling_steps: int = 250
    max_atoms: int = 24
    seed: int = 0
    device: str = "auto"

    @classmethod
    def tiny(cls, **overrides: Any) -> TrainConfig:
        """A configuration that trains in seconds on a CPU (tests, smoke runs).

        Examples
        --------
        >>> TrainConfig.tiny(steps=3).hidden_dim
        16
        """
        sizes = {k: v for k, v in TINY_SIZE.items() if k != "max_cell_images_per_dim"}
        settings = dict(sizes, name="carbon-24-tiny", held_out=8, subset=32, batch_size=8, steps=5,
                        max_minutes=5.0, eval_every=5, eval_batches=1, ema_decay=0.9, device="cpu")
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a mapping; ``preset: tiny`` starts from :meth:`tiny`. Unknown keys raise ``ValueError``.

        Examples
        --------
        >>> TrainConfig.from_dict({"preset": "tiny", "steps": 2}).steps
        2
        """
        values = dict(values)
        preset = values.pop("preset", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown training settings {sorted(unknown)}; known: {sorted(known)}")
        if preset not in (None, "tiny", "default"):
            raise ValueError(f"unknown preset {preset!r}; known: 'tiny', 'default'")
        if isinstance(values.get("data"), str):
            values["data"] = [values["data"]]
        config = cls.tiny(**values) if preset == "tiny" else cls(**values)
        config.check()
        return config

    def check(self) -> None:
        """Raise ``ValueError`` for a setting out of range."""
        for key in ("held_out", "batch_size", "steps", "hidden_dim", "num_blocks", "eval_every", "eval_batches",
                    "sampling_steps", "max_atoms"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{key} must be at least 1, got {getattr(self, key)!r}")
        if self.subset is not None and self.subset < 1:
            raise ValueError(f"subset must be at least 1, got {self.subset!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if not (self.learning_rate > 0 and self.max_minutes > 0 and self.cutoff > 0):
            raise ValueError("learning_rate, max_minutes and cutoff must be positive")
        for key in ("position_loss_weight", "lattice_loss_weight", "species_loss_weight"):
            if not float(getattr(self, key)) >= 0.0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)!r}")
        if self.init_from is not None and not isinstance(self.init_from, str):
            raise ValueError(f"init_from must be a path (str), got {self.init_from!r}")
        if not self.checkpoint_minutes >= 0:
            raise ValueError(f"checkpoint_minutes must be >= 0, got {self.checkpoint_minutes!r}")

    def model_sizes(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~aseguide.models.mattergen_config.lightning_module_config`."""
        keys = ("hidden_dim", "num_blocks", "num_radial", "num_spherical", "emb_size_trip", "emb_size_rbf",
                "emb_size_cbf", "emb_size_bil_trip", "cutoff", "max_neighbors")
        return {k: getattr(self, k) for k in keys}

    def loss_weights(self) -> dict[str, float]:
        """``MaterialsLoss.weights`` of this run (MatterGen's field names).

        Examples
        --------
        >>> TrainConfig().loss_weights()
        {'pos': 0.1, 'cell': 1.0, 'atomic_numbers': 1.0}
        """
        return {"pos": float(self.position_loss_weight), "cell": float(self.lattice_loss_weight),
                "atomic_numbers": float(self.species_loss_weight)}
