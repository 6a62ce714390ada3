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
    model_card.md             data, split, sizes, parameters, steps, time, losses

Example
-------
>>> config = TrainConfig.tiny(output="runs/tiny-carbon", subset=32, steps=2)  # doctest: +SKIP
>>> summary = train(config)                                                   # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["TrainConfig", "TrainSummary", "DEFAULT_DATA", "CARBON_AVERAGE_DENSITY", "read_dataset", "split_indices",
           "average_density", "to_chemgraphs", "chemgraph_to_atoms", "train", "register", "run_train"]

#: carbon_24 (val + test) as shipped in ``../shared/data`` (CIF column + energy_per_atom).
DEFAULT_DATA = ("../shared/data/carbon_24/val.csv", "../shared/data/carbon_24/test.csv")

#: Periodic training state in ``<output>/checkpoints/`` (read by ``--resume``).
RESUME_FILE = "resume.pt"

#: Settings that may change between sittings of one run (everything else must match).
RESUMABLE_CHANGES = ("steps", "max_minutes", "checkpoint_minutes", "eval_every", "eval_batches", "device", "output",
                     "sampling_steps", "max_atoms")

#: Mean atomic density (atoms/Å^3) of carbon_24, measured on a training split of it.
CARBON_AVERAGE_DENSITY = 0.1587


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
    sampling_steps: int = 250
    max_atoms: int = 24
    seed: int = 0
    device: str = "auto"

    @classmethod
    def tiny(cls, **overrides: Any) -> TrainConfig:
        """A configuration that trains in seconds on a CPU (tests, smoke runs).

        Example
        -------
        >>> TrainConfig.tiny(steps=3).hidden_dim
        16
        """
        from aseguide.testing import TINY_SIZE

        sizes = {k: v for k, v in TINY_SIZE.items() if k != "max_cell_images_per_dim"}
        settings = dict(sizes, name="carbon-24-tiny", held_out=8, subset=32, batch_size=8, steps=5,
                        max_minutes=5.0, eval_every=5, eval_batches=1, ema_decay=0.9, device="cpu")
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a mapping; ``preset: tiny`` starts from :meth:`tiny`. Unknown keys raise ``ValueError``.

        Example
        -------
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
        if not self.checkpoint_minutes >= 0:
            raise ValueError(f"checkpoint_minutes must be >= 0, got {self.checkpoint_minutes!r}")

    def model_sizes(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~aseguide.models.mattergen_config.lightning_module_config`."""
        keys = ("hidden_dim", "num_blocks", "num_radial", "num_spherical", "emb_size_trip", "emb_size_rbf",
                "emb_size_cbf", "emb_size_bil_trip", "cutoff", "max_neighbors")
        return {k: getattr(self, k) for k in keys}


@dataclasses.dataclass
class TrainSummary:
    """What :func:`train` did (also written to ``model_card.md``)."""

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


# ------------------------------------------------------------------------- data
def read_dataset(paths: Sequence[str | os.PathLike]):
    """Concatenate CSV files of structures into one table with a ``row`` column (0, 1, ...).

    Parameters
    ----------
    paths : sequence of path
        CSV files with at least ``material_id`` and ``cif`` columns.

    Returns
    -------
    pandas.DataFrame

    Example
    -------
    >>> table = read_dataset(DEFAULT_DATA)  # doctest: +SKIP
    >>> len(table)                          # doctest: +SKIP
    4062
    """
    import pandas as pd

    frames = []
    for path in paths:
        frame = pd.read_csv(path)
        missing = {"material_id", "cif"} - set(frame.columns)
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        frame = frame[[c for c in ("material_id", "cif", "energy_per_atom") if c in frame.columns]]
        frames.append(frame.assign(source=os.path.basename(str(path))))
    table = pd.concat(frames, ignore_index=True)
    if table["material_id"].duplicated().any():
        raise ValueError("material_id is not unique across the data files")
    return table.assign(row=np.arange(len(table)))


def split_indices(n: int, held_out: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, disjoint (training rows, held-out rows), each sorted.

    Example
    -------
    >>> train_rows, test_rows = split_indices(10, 3, seed=0)
    >>> len(train_rows), len(test_rows), len(set(train_rows) & set(test_rows))
    (7, 3, 0)
    """
    if not 0 < held_out < n:
        raise ValueError(f"held_out must be between 1 and {n - 1}, got {held_out}")
    permutation = np.random.default_rng(seed).permutation(n)
    return np.sort(permutation[held_out:]), np.sort(permutation[:held_out])


def _atoms_from_cif(text: str):
    import io

    from ase.io import read

    return read(io.StringIO(text), format="cif")


def average_density(cifs: Sequence[str]) -> float:
    """Mean number density (atoms/Å^3) over structures given as CIF texts.

    Example
    -------
    >>> from ase.build import bulk
    >>> import io
    >>> from ase.io import write
    >>> buffer = io.BytesIO(); write(buffer, bulk("C", "diamond", a=3.567), format="cif")
    >>> round(average_density([buffer.getvalue().decode()]), 3)
    0.176
    """
    densities = []
    for text in cifs:
        atoms = _atoms_from_cif(text)
        densities.append(len(atoms) / atoms.get_volume())
    return float(np.mean(densities))


def to_chemgraphs(table, cache_dir: str | os.PathLike) -> list:
    """Convert rows to MatterGen ChemGraphs with MatterGen's own data pipeline.

    Writes the rows as a CSV and builds :class:`mattergen.common.data.dataset.CrystalDataset`
    with ``from_csv`` (pymatgen primitive cell, Niggli reduction, numpy cache in
    ``cache_dir``) and MatterGen's lattice transform ``symmetrize_lattice``, applied
    here once. (``set_chemical_system`` is left out: the model is unconditional, and a
    multi-hot ``chemical_system`` field breaks MatterGen's element mask in eval mode.)

    Example
    -------
    >>> graphs = to_chemgraphs(read_dataset(DEFAULT_DATA).head(2), "cache")  # doctest: +SKIP
    """
    from aseguide.models._mattergen_compat import prepare_mattergen

    prepare_mattergen()
    import contextlib
    import io

    from mattergen.common.data.dataset import CrystalDataset
    from mattergen.common.data.transform import symmetrize_lattice

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    csv = cache_dir / "structures.csv"
    table[["material_id", "cif"]].to_csv(csv, index=False)
    with contextlib.redirect_stdout(io.StringIO()):
        dataset = CrystalDataset.from_csv(str(csv), str(cache_dir / "numpy"),
                                          transforms=[symmetrize_lattice])
    order = {mid: i for i, mid in enumerate(dataset.structure_id)}
    return [dataset[order[mid]] for mid in table["material_id"]]


def chemgraph_to_atoms(graph):
    """An :class:`ase.Atoms` of one (unbatched) ChemGraph (fractional positions, cell in Å).

    Example
    -------
    >>> atoms = chemgraph_to_atoms(to_chemgraphs(table.head(1), "cache")[0])  # doctest: +SKIP
    """
    from ase import Atoms

    return Atoms(numbers=graph.atomic_numbers.detach().cpu().numpy(),
                 scaled_positions=graph.pos.detach().cpu().numpy() % 1.0,
                 cell=graph.cell.detach().cpu().numpy().reshape(3, 3), pbc=True)


# --------------------------------------------------------------------- training
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


@torch.no_grad()
def _held_out_loss(diffusion_module, graphs: list, batch_size: int, batches: int, seed: int) -> float:
    """Mean loss over fixed held-out batches with fixed noise (comparable across steps)."""
    from mattergen.common.data.collate import collate

    was_training = diffusion_module.training
    diffusion_module.eval()
    losses = []
    cuda = [graphs[0].pos.device] if graphs[0].pos.is_cuda else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        for k in range(batches):
            chunk = [graphs[(k * batch_size + i) % len(graphs)] for i in range(min(batch_size, len(graphs)))]
            loss, _ = diffusion_module.calc_loss(collate(chunk))
            losses.append(float(loss))
    diffusion_module.train(was_training)
    return float(np.mean(losses))


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

    Example
    -------
    >>> summary = train(TrainConfig.tiny(output="runs/tiny", steps=2))  # doctest: +SKIP
    >>> load_model("runs/tiny")                                         # doctest: +SKIP
    """
    from aseguide.models._mattergen_compat import prepare_mattergen
    from aseguide.models.mattergen_config import lightning_module_config

    config.check()
    prepare_mattergen()
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    output = Path(config.output)
    (output / "checkpoints").mkdir(parents=True, exist_ok=True)
    device = _device(config.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    table = read_dataset(config.data)
    train_rows, held_rows = split_indices(len(table), config.held_out, config.split_seed)
    if config.subset is not None:
        permuted = np.random.default_rng(config.split_seed + 1).permutation(train_rows)
        train_rows = np.sort(permuted[: config.subset])
    train_table, held_table = table.iloc[train_rows], table.iloc[held_rows]
    (output / "split.json").write_text(json.dumps({
        "data": [str(p) for p in config.data], "seed": config.split_seed, "subset": config.subset,
        "held_out_rows": held_rows.tolist(), "held_out_ids": held_table["material_id"].tolist(),
        "train_rows": train_rows.tolist(), "train_ids": train_table["material_id"].tolist(),
    }, indent=1))
    density = average_density(train_table["cif"])

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        train_graphs = [g.to(device) for g in to_chemgraphs(train_table, Path(tmp) / "train")]
        held_graphs = [g.to(device) for g in to_chemgraphs(held_table, Path(tmp) / "held_out")]
    conversion_seconds = time.perf_counter() - t0

    model_config = lightning_module_config(**config.model_sizes(), average_density=density,
                                           learning_rate=config.learning_rate)
    torch.manual_seed(config.seed)
    module = instantiate(OmegaConf.create(model_config)["lightning_module"]).to(device)
    diffusion_module = module.diffusion_module
    ema = copy.deepcopy(diffusion_module).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    optimizer = module.configure_optimizers()
    if isinstance(optimizer, dict):
        optimizer = optimizer["optimizer"]
    num_parameters = sum(p.numel() for p in diffusion_module.parameters())

    generator = torch.Generator().manual_seed(config.seed)
    sampler = _Sampler(train_graphs, config.batch_size, generator)
    log = ["step,seconds,train_loss,held_out_loss"]
    losses: list[float] = []
    held_losses: list[tuple[int, float]] = []
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
    log_file = output / "train_log.csv"
    log_file.write_text("\n".join(log) + "\n")

    def save_state() -> None:
        _atomic_save({"model": diffusion_module.state_dict(), "ema": ema.state_dict(),
                      "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                      "torch_rng": torch.get_rng_state(), "step": step,
                      "seconds": previous_seconds + time.perf_counter() - start, "losses": losses,
                      "held_losses": held_losses, "log": log, "train_config": dataclasses.asdict(config)},
                     resume_file)
        _save_sampling_checkpoint(ema, model_config, output, config, step,
                                  previous_seconds + time.perf_counter() - start, density)

    diffusion_module.train()
    start = time.perf_counter()
    last_save = start
    first_step = step
    with open(log_file, "a") as log_stream:
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
                held_value = _held_out_loss(ema, held_graphs, config.batch_size, config.eval_batches, config.seed)
                held_losses.append((step, held_value))
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
        held_losses.append((step, _held_out_loss(ema, held_graphs, config.batch_size, config.eval_batches,
                                                 config.seed)))
    save_state()
    checkpoint = output / "checkpoints" / "last.ckpt"

    window = max(1, min(50, len(losses) // 10 or 1))
    summary = TrainSummary(
        output=output, steps=step, seconds=seconds, num_parameters=num_parameters,
        num_train=len(train_graphs), num_held_out=len(held_graphs), average_density=density,
        first_loss=float(np.mean(losses[:window])), final_loss=float(np.mean(losses[-window:])),
        held_out_loss=held_losses[-1][1], best_held_out_loss=min(v for _, v in held_losses),
        checkpoint_bytes=checkpoint.stat().st_size,
    )
    _write_model_card(output / "model_card.md", config, summary, device, conversion_seconds, held_losses)
    return summary


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


def _load_resume(path: Path, config: TrainConfig) -> dict[str, Any]:
    """Read a periodic checkpoint and check that it belongs to the same run settings."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same message
        raise ValueError(f"cannot read the periodic checkpoint {path} ({type(error).__name__}: {error}); "
                         "it holds the training state written every checkpoint_minutes") from error
    before = saved.get("train_config", {})
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


def _write_model_card(path: Path, config: TrainConfig, summary: TrainSummary, device: torch.device,
                      conversion_seconds: float, held_losses: list[tuple[int, float]]) -> None:
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
        f"- training loss: {summary.first_loss:.4g} (first steps) -> {summary.final_loss:.4g} (last steps)",
        f"- held-out loss (EMA weights): {summary.held_out_loss:.4g} final, {summary.best_held_out_loss:.4g} best",
        f"- held-out curve (step: loss): {curve}",
        "",
        "## Evaluation",
        "Not yet run: `python -m aseguide.evaluation` (see `examples/carbon/README.md`).",
        "",
    ]
    path.write_text("\n".join(lines))


# -------------------------------------------------------------------------- CLI
def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train`` sub-command.

    Example
    -------
    >>> from aseguide.cli import build_parser
    >>> build_parser().parse_args(["train", "--preset", "tiny", "--steps", "2"]).steps
    2
    """
    p = subparsers.add_parser(
        "train",
        help="train a small MatterGen score model (carbon_24 by default)",
        description="Train a MatterGen-architecture score model with MatterGen's own modules and save it in "
                    "MatterGen's checkpoint layout (loadable by load_model). Settings from CONFIG (YAML, keys of "
                    "aseguide.train.TrainConfig, optional 'preset: tiny') and/or flags (flags win).",
    )
    p.add_argument("config", nargs="?", help="YAML configuration file (e.g. examples/carbon/train.yaml)")
    p.add_argument("--preset", choices=["default", "tiny"], help="'tiny': a CPU smoke run in seconds")
    p.add_argument("--data", action="append", metavar="CSV", help="data CSV (repeatable; replaces the default)")
    p.add_argument("--output", "-o")
    p.add_argument("--steps", type=int)
    p.add_argument("--max-minutes", type=float, dest="max_minutes")
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--held-out", type=int, dest="held_out")
    p.add_argument("--subset", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUTPUT from its last periodic checkpoint (checkpoints/resume.pt)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.set_defaults(func=run_train)
    return p


def _check_preset_agrees(preset: str, config_path: str, values: dict[str, Any]) -> None:
    """``--preset`` with a CONFIG file: refuse settings of the file that contradict the preset."""
    from aseguide.cli import UsageError

    if "preset" in values and values["preset"] != preset:
        raise UsageError(f"--preset {preset} contradicts 'preset: {values['preset']}' in {config_path}")
    base = dataclasses.asdict(TrainConfig.tiny() if preset == "tiny" else TrainConfig())
    neutral = {"data", "output", "name", "device", "preset"}
    conflicts = sorted(k for k, v in values.items() if k not in neutral and k in base and base[k] != v)
    if conflicts:
        detail = ", ".join(f"{k}={values[k]!r} (preset {base[k]!r})" for k in conflicts)
        raise UsageError(f"--preset {preset} and {config_path} disagree: {detail}; drop --preset to use the file, "
                         "or override single settings with flags")


class _ProgressBar:
    """One status line on stderr: step, loss, elapsed time and ETA (tqdm when installed)."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total, self.enabled, self.bar = total, enabled, None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:  # pragma: no cover - tqdm comes with MatterGen's dependencies
                return
            self.bar = tqdm(total=total, unit="step", dynamic_ncols=True, mininterval=2.0)

    def update(self, step: int, seconds: float, loss: float, eta: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix_str(f"loss {loss:.4f} eta {eta / 60:.1f} min", refresh=False)
            self.bar.refresh()
        elif step == 1 or step % 100 == 0:
            print(f"step {step}/{self.total}  {seconds:.0f} s  loss {loss:.4f}  eta {eta / 60:.1f} min", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_train(args: argparse.Namespace) -> int:
    """Run ``aseguide train`` with parsed arguments; returns the exit code."""
    import yaml

    from aseguide.cli import UsageError

    values: dict[str, Any] = {}
    if args.config:
        try:
            values = yaml.safe_load(Path(args.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise UsageError(f"cannot read {args.config}: {error}") from error
        if not isinstance(values, dict):
            raise UsageError(f"{args.config}: expected a mapping of settings")
    if args.preset and args.config:
        _check_preset_agrees(args.preset, args.config, values)
    for key in ("preset", "data", "output", "steps", "max_minutes", "batch_size", "held_out", "subset", "seed",
                "device"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    try:
        config = TrainConfig.from_dict(values)
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from error
    for path in config.data:
        if not Path(path).is_file():
            raise UsageError(f"data file not found: {path}")

    bar = _ProgressBar(config.steps, enabled=not args.quiet)
    try:
        summary = train(config, progress=bar.update, resume=args.resume)
    except ValueError as error:
        raise UsageError(str(error)) from error
    finally:
        bar.close()
    print(f"{summary.steps} steps in {summary.seconds:.1f} s; loss {summary.first_loss:.4g} -> "
          f"{summary.final_loss:.4g}, held-out {summary.held_out_loss:.4g}; "
          f"{summary.num_parameters:,} parameters, model in {summary.output}")
    if not math.isfinite(summary.final_loss):
        return 1
    return 0
