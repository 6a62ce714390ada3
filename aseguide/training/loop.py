"""Train a small MatterGen-architecture score model (``aseguide train``).

The model, the noise processes and the loss are MatterGen's own
(:class:`mattergen.diffusion.lightning_module.DiffusionLightningModule` built from the
``_target_`` configuration of
:func:`aseguide.models.mattergen_config.lightning_module_config`; the loss is
``DiffusionModule.calc_loss`` with :class:`mattergen.common.loss.MaterialsLoss`). The
data go through MatterGen's own pipeline (:meth:`CrystalDataset.from_csv`: primitive
cell, Niggli reduction; transform ``symmetrize_lattice``)
once, and the resulting ChemGraphs are kept on the device: the per-structure Lightning
input pipeline was measured to halve the throughput on a GPU. The training
loop is a plain PyTorch loop around ``calc_loss`` with an exponential moving average
(EMA) of the weights; the EMA weights are saved for sampling.

Output (``output`` folder), MatterGen's checkpoint layout plus records::

    config.yaml               {"lightning_module": ...}, loadable by aseguide.load_model
    checkpoints/last.ckpt     {"state_dict": EMA weights, keys "diffusion_module.*", "aseguide": {...}}
    split.json                seeded held-out / training split (row indices and material ids)
    train_log.csv             step, seconds, training loss, held-out loss
    held_out_log.csv          step, held-out loss and its unweighted terms (pos, cell, atomic_numbers)
    model_card.md             data, split, sizes, parameters, steps, time, losses

Examples
--------
>>> config = TrainConfig.tiny(output="runs/tiny-carbon", subset=32, steps=2)  # doctest: +SKIP
>>> summary = train(config)                                                   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aseguide.models.radius_graph import pruned_image_search
from aseguide.training.card import TrainSummary, write_model_card
from aseguide.training.config import TrainConfig
from aseguide.training.data import TrainingData, prepare_data

__all__ = ["train", "RESUME_FILE", "RESUMABLE_CHANGES"]

#: Periodic training state in ``<output>/checkpoints/`` (read by ``--resume``).
RESUME_FILE = "resume.pt"

#: Settings that may change between sittings of one run (everything else must match).
RESUMABLE_CHANGES = ("steps", "max_minutes", "checkpoint_minutes", "eval_every", "eval_batches", "device", "output",
                     "sampling_steps", "max_atoms")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class _Sampler:
    """Random batches of pre-transformed ChemGraphs kept on the device."""

    def __init__(self, graphs: list, batch_size: int, generator: torch.Generator) -> None:
        self.graphs = graphs
        self.batch_size = min(batch_size, len(graphs))
        self.generator = generator

    def batch(self):
        from mattergen.common.data.collate import collate

        index = torch.randperm(len(self.graphs), generator=self.generator)[: self.batch_size]
        return collate([self.graphs[i] for i in index.tolist()])


#: Columns of ``held_out_log.csv``: MatterGen's unweighted loss terms per field.
HELD_OUT_FIELDS = ("pos", "cell", "atomic_numbers")


@torch.no_grad()
def _held_out_loss(diffusion_module, graphs: list, batch_size: int, batches: int,
                   seed: int) -> tuple[float, dict[str, float]]:
    """Mean loss over fixed held-out batches with fixed noise (comparable across steps).

    Returns the weighted total and the unweighted term of each field
    (:data:`HELD_OUT_FIELDS`), which stay comparable when the loss weights change.
    """
    from mattergen.common.data.collate import collate

    was_training = diffusion_module.training
    diffusion_module.eval()
    losses = []
    terms: dict[str, list[float]] = {name: [] for name in HELD_OUT_FIELDS}
    cuda = [graphs[0].pos.device] if graphs[0].pos.is_cuda else []
    with torch.random.fork_rng(devices=cuda), pruned_image_search():
        torch.manual_seed(seed)
        for k in range(batches):
            chunk = [graphs[(k * batch_size + i) % len(graphs)] for i in range(min(batch_size, len(graphs)))]
            loss, metrics = diffusion_module.calc_loss(collate(chunk))
            losses.append(float(loss))
            for name in HELD_OUT_FIELDS:
                terms[name].append(float(metrics[name]))
    diffusion_module.train(was_training)
    return float(np.mean(losses)), {name: float(np.mean(values)) for name, values in terms.items()}


def _write_held_out_log(path: Path, rows: list[tuple[int, float, dict[str, float]]]) -> None:
    lines = ["step,held_out_loss," + ",".join(f"held_out_{name}" for name in HELD_OUT_FIELDS)]
    lines += [f"{step},{total:.6g}," + ",".join(f"{terms[name]:.6g}" for name in HELD_OUT_FIELDS)
              for step, total, terms in rows]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1.0 - decay)
        for e, b in zip(ema.buffers(), model.buffers()):
            e.copy_(b)


def train(config: TrainConfig, progress: Callable[[int, float, float, float], None] | None = None,
          resume: bool = False) -> TrainSummary:
    """Train a MatterGen score model and save it in MatterGen's checkpoint layout.

    Parameters
    ----------
    config : TrainConfig
        Settings (see :class:`TrainConfig`).
    progress : callable, optional
        Called as ``progress(step, seconds, training_loss, eta_seconds)`` after every step.
    resume : bool
        Continue from the periodic checkpoint ``checkpoints/resume.pt`` of ``config.output``
        (weights, EMA, optimizer state, step, random state, losses). ``steps`` is the total
        over all sittings; ``max_minutes`` bounds this sitting.

    Returns
    -------
    TrainSummary

    Examples
    --------
    >>> summary = train(TrainConfig.tiny(output="runs/tiny", steps=2))  # doctest: +SKIP
    >>> load_model("runs/tiny")                                         # doctest: +SKIP
    """
    from aseguide.models._mattergen_compat import prepare_mattergen

    config.check()
    prepare_mattergen()
    output = Path(config.output)
    (output / "checkpoints").mkdir(parents=True, exist_ok=True)
    device = _device(config.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    data = prepare_data(config.data, output, device, held_out=config.held_out, split_seed=config.split_seed,
                        subset=config.subset)
    train_graphs, held_graphs, density = data.train_graphs, data.held_graphs, data.density
    conversion_seconds = data.conversion_seconds

    model_config, diffusion_module, ema, optimizer = _build_model(config, density, device)
    num_parameters = sum(p.numel() for p in diffusion_module.parameters())

    generator = torch.Generator().manual_seed(config.seed)
    sampler = _Sampler(train_graphs, config.batch_size, generator)
    log = ["step,seconds,train_loss,held_out_loss"]
    losses: list[float] = []
    held_losses: list[tuple[int, float]] = []
    held_terms: list[tuple[int, float, dict[str, float]]] = []
    step = 0
    previous_seconds = 0.0
    resume_file = output / "checkpoints" / RESUME_FILE
    if resume:
        if not resume_file.is_file():
            raise ValueError(f"--resume: no periodic checkpoint {resume_file} (start the run without --resume)")
        saved = _load_resume(resume_file, config)
        diffusion_module.load_state_dict(saved["model"])
        ema.load_state_dict(saved["ema"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        step, previous_seconds = int(saved["step"]), float(saved["seconds"])
        losses, held_losses, log = list(saved["losses"]), list(saved["held_losses"]), list(saved["log"])
        held_terms = list(saved.get("held_terms", []))
    elif config.init_from is not None:
        _load_initial_weights(config.init_from, (diffusion_module, ema))
    log_file = output / "train_log.csv"
    log_file.write_text("\n".join(log) + "\n")

    def save_state() -> None:
        _atomic_save({"model": diffusion_module.state_dict(), "ema": ema.state_dict(),
                      "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                      "torch_rng": torch.get_rng_state(), "step": step,
                      "seconds": previous_seconds + time.perf_counter() - start, "losses": losses,
                      "held_losses": held_losses, "held_terms": held_terms, "log": log, "train_config": dataclasses.asdict(config)},
                     resume_file)
        _save_sampling_checkpoint(ema, model_config, output, config, step,
                                  previous_seconds + time.perf_counter() - start, density)

    diffusion_module.train()
    start = time.perf_counter()
    last_save = start
    first_step = step
    with open(log_file, "a") as log_stream, pruned_image_search():
        while step < config.steps and time.perf_counter() - start < 60.0 * config.max_minutes:
            loss, _ = diffusion_module.calc_loss(sampler.batch())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss at step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(diffusion_module.parameters(), config.grad_clip)
            optimizer.step()
            _ema_update(ema, diffusion_module, config.ema_decay)
            step += 1
            value = loss.item()
            losses.append(value)
            elapsed = time.perf_counter() - start
            held = ""
            if step % config.eval_every == 0 or step == config.steps:
                held_value, terms = _held_out_loss(ema, held_graphs, config.batch_size, config.eval_batches,
                                                   config.seed)
                held_losses.append((step, held_value))
                held_terms.append((step, held_value, terms))
                _write_held_out_log(output / "held_out_log.csv", held_terms)
                held = f"{held_value:.6g}"
            line = f"{step},{previous_seconds + elapsed:.3f},{value:.6g},{held}"
            log.append(line)
            log_stream.write(line + "\n")
            log_stream.flush()
            if progress is not None:
                progress(step, previous_seconds + elapsed, value,
                         _eta(step - first_step, elapsed, config.steps - step,
                              60.0 * config.max_minutes - elapsed))
            if time.perf_counter() - last_save >= 60.0 * config.checkpoint_minutes:
                save_state()
                last_save = time.perf_counter()
    seconds = previous_seconds + time.perf_counter() - start
    if not held_losses or held_losses[-1][0] != step:
        held_value, terms = _held_out_loss(ema, held_graphs, config.batch_size, config.eval_batches, config.seed)
        held_losses.append((step, held_value))
        held_terms.append((step, held_value, terms))
    _write_held_out_log(output / "held_out_log.csv", held_terms)
    save_state()
    summary = _summary(output, step, seconds, num_parameters, data, losses, held_losses)
    write_model_card(output / "model_card.md", config, summary, device, conversion_seconds, held_losses)
    return summary


def _build_model(config: TrainConfig, density: float, device: torch.device) -> tuple[dict[str, Any], Any, Any, Any]:
    """MatterGen's modules of ``config``'s sizes, seeded with ``config.seed``, on ``device``.

    Returns
    -------
    tuple
        The Hydra configuration (``{"lightning_module": ...}``), the diffusion module, its
        EMA copy (no gradients) and the optimizer of MatterGen's lightning module.
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from aseguide.models.mattergen_config import lightning_module_config

    model_config = lightning_module_config(**config.model_sizes(), average_density=density,
                                           learning_rate=config.learning_rate, loss_weights=config.loss_weights())
    torch.manual_seed(config.seed)
    module = instantiate(OmegaConf.create(model_config)["lightning_module"]).to(device)
    ema = copy.deepcopy(module.diffusion_module).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    optimizer = module.configure_optimizers()
    if isinstance(optimizer, dict):
        optimizer = optimizer["optimizer"]
    return model_config, module.diffusion_module, ema, optimizer


def _summary(output: Path, step: int, seconds: float, num_parameters: int, data: TrainingData,
             losses: list[float], held_losses: list[tuple[int, float]]) -> TrainSummary:
    """The :class:`TrainSummary` of a finished sitting (losses averaged over first and last steps)."""
    window = max(1, min(50, len(losses) // 10 or 1))
    return TrainSummary(
        output=output, steps=step, seconds=seconds, num_parameters=num_parameters,
        num_train=len(data.train_graphs), num_held_out=len(data.held_graphs), average_density=data.density,
        first_loss=float(np.mean(losses[:window])), final_loss=float(np.mean(losses[-window:])),
        held_out_loss=held_losses[-1][1], best_held_out_loss=min(v for _, v in held_losses),
        checkpoint_bytes=(output / "checkpoints" / "last.ckpt").stat().st_size,
    )


def _eta(done: int, elapsed: float, steps_left: int, seconds_left: float) -> float:
    """Seconds until the run stops: steps left at the measured rate, bounded by the time budget."""
    if done <= 0:
        return float("nan")
    return max(0.0, min(steps_left * elapsed / done, seconds_left))


def _atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a kill never leaves half a checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _initial_weights(source: str) -> dict[str, torch.Tensor]:
    """Diffusion-module weights of ``init_from``: a model folder, a ``last.ckpt`` or a ``resume.pt``."""
    path = Path(source)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise ValueError(f"init_from {source}: no such checkpoint (give a model folder with checkpoints/last.ckpt, "
                         "a last.ckpt or a resume.pt)")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same message
        raise ValueError(f"init_from {path}: cannot read it ({type(error).__name__}: {error})") from error
    if isinstance(saved, dict) and "ema" in saved:
        return dict(saved["ema"])
    if isinstance(saved, dict) and "state_dict" in saved:
        prefix = "diffusion_module."
        return {k[len(prefix):]: v for k, v in saved["state_dict"].items() if k.startswith(prefix)}
    raise ValueError(f"init_from {path}: neither a periodic checkpoint (key 'ema') nor a model checkpoint "
                     "(key 'state_dict')")


def _load_initial_weights(source: str, modules: tuple[torch.nn.Module, ...]) -> None:
    """Load the weights of ``init_from`` into the model and its EMA copy."""
    weights = _initial_weights(source)
    for module in modules:
        try:
            module.load_state_dict(weights)
        except RuntimeError as error:
            raise ValueError(f"init_from {source}: its weights do not fit this run's architecture "
                             f"({str(error).splitlines()[0]}...); use the sizes it was trained with") from error


#: Values of settings that runs written before the setting existed were trained with.
LEGACY_SETTINGS = {"position_loss_weight": 1.0, "lattice_loss_weight": 1.0, "species_loss_weight": 1.0,
                   "init_from": None}


def _load_resume(path: Path, config: TrainConfig) -> dict[str, Any]:
    """Read a periodic checkpoint and check that it belongs to the same run settings."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same message
        raise ValueError(f"cannot read the periodic checkpoint {path} ({type(error).__name__}: {error}); "
                         "it holds the training state written every checkpoint_minutes") from error
    before = {**LEGACY_SETTINGS, **saved.get("train_config", {})}
    now = dataclasses.asdict(config)
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and k in before and before[k] != now[k])
    if changed:
        detail = ", ".join(f"{k}: {before.get(k)!r} -> {now[k]!r}" for k in changed)
        raise ValueError(f"--resume with settings that differ from the saved run ({detail}); only "
                         f"{', '.join(RESUMABLE_CHANGES)} may change between sittings")
    return saved


def _save_sampling_checkpoint(ema: torch.nn.Module, model_config: dict[str, Any], output: Path,
                              config: TrainConfig, step: int, seconds: float, density: float) -> None:
    """Write ``config.yaml`` and the EMA weights as ``checkpoints/last.ckpt`` (MatterGen's layout)."""
    from omegaconf import OmegaConf

    state = {f"diffusion_module.{k}": v.detach().cpu() for k, v in ema.state_dict().items()}
    info = {"kind": "trained", "name": config.name, "weights": "ema", "ema_decay": config.ema_decay,
            "steps": step, "seconds": seconds, "average_density": density,
            "sampling": {"steps": config.sampling_steps, "max_atoms": config.max_atoms},
            "train_config": dataclasses.asdict(config)}
    OmegaConf.save(OmegaConf.create(model_config), output / "config.yaml")
    _atomic_save({"state_dict": state, "aseguide": info}, output / "checkpoints" / "last.ckpt")
