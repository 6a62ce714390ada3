"""The record of a training run: :class:`TrainSummary` and ``model_card.md``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from aseguide.training.config import TrainConfig

__all__ = ["TrainSummary", "write_model_card"]


@dataclasses.dataclass
class TrainSummary:
    """What :func:`aseguide.training.loop.train` did (also written to ``model_card.md``)."""

    output: Path
    steps: int
    seconds: float
    num_parameters: int
    num_train: int
    num_held_out: int
    average_density: float
    first_loss: float
    final_loss: float
    held_out_loss: float
    best_held_out_loss: float
    checkpoint_bytes: int


def write_model_card(path: Path, config: TrainConfig, summary: TrainSummary, device: torch.device,
                      conversion_seconds: float, held_losses: list[tuple[int, float]]) -> None:
    """Write ``model_card.md``: data, split, model sizes, training settings and losses.

    Parameters
    ----------
    path : pathlib.Path
        The file to write.
    config : TrainConfig
        Settings of the run.
    summary : TrainSummary
        What the run did.
    device : torch.device
        Where it ran.
    conversion_seconds : float
        Wall time of the data conversion.
    held_losses : list of (int, float)
        Held-out loss by step (the last ten are written).
    """
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    curve = ", ".join(f"{s}: {v:.4g}" for s, v in held_losses[-10:])
    lines = [
        f"# {config.name}",
        "",
        "A MatterGen-architecture (GemNet-T) score model trained by `aseguide train` with MatterGen's own",
        "modules (DiffusionModule.calc_loss, MaterialsLoss, CrystalDataset.from_csv). Unconditional.",
        "",
        "## Data",
        f"- files: {', '.join(config.data)}",
        f"- split: seed {config.split_seed}, {summary.num_held_out} held out, {summary.num_train} for training"
        + (f" (subset of {config.subset})" if config.subset else "") + "; row indices and ids in `split.json`",
        f"- lattice prior average density (training data): {summary.average_density:.4f} atoms/Å³",
        "",
        "## Model",
        f"- GemNet-T hidden {config.hidden_dim}, {config.num_blocks} blocks, cutoff {config.cutoff} Å, "
        f"{config.max_neighbors} neighbours, radial {config.num_radial}, spherical {config.num_spherical}",
        f"- parameters: {summary.num_parameters:,}; checkpoint {summary.checkpoint_bytes / 1e6:.1f} MB "
        f"(EMA weights, decay {config.ema_decay})",
        "",
        "## Training",
        f"- device: {gpu}; torch {torch.__version__}",
        f"- steps: {summary.steps} at batch {config.batch_size}; {summary.seconds / 60:.2f} min "
        f"(+ {conversion_seconds:.0f} s data conversion)",
        f"- Adam lr {config.learning_rate}, gradient clip {config.grad_clip}, seed {config.seed}",
        f"- loss weights (MaterialsLoss): positions {config.position_loss_weight}, lattice "
        f"{config.lattice_loss_weight}, species {config.species_loss_weight}",
        f"- initial weights: {config.init_from}" if config.init_from else "- initial weights: random",
        f"- training loss: {summary.first_loss:.4g} (first steps) -> {summary.final_loss:.4g} (last steps)",
        f"- held-out loss (EMA weights): {summary.held_out_loss:.4g} final, {summary.best_held_out_loss:.4g} best",
        f"- held-out curve (step: loss): {curve}; unweighted terms per field in `held_out_log.csv`",
        "",
        "## Evaluation",
        "Not yet run: `python -m aseguide.evaluation` (see `examples/carbon/README.md`).",
        "",
    ]
    path.write_text("\n".join(lines))
