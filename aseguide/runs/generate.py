"""The ``aseguide generate`` loop: batches of guided structures written one by one into a run folder.

:func:`generate` draws ``num_structures`` crystals in batches with
:class:`~aseguide.sampling.dynamics.GuidedDiffusion` and writes each finished batch at
once into the run folder (:mod:`aseguide.runs.folder`), so an interrupted run keeps
everything already generated and ``resume=True`` continues where it stopped. Resuming
with a larger ``num_structures`` appends new batches (seeds continue
``seed + batch``); fewer than are already done is refused. A batch that runs out of
memory is split and retried (:mod:`aseguide.runs.batching`); batches already written are
never touched.

Examples
--------
>>> import tempfile
>>> from aseguide.models.analytic import GaussianBackend
>>> from aseguide.runs.config import GenerateConfig
>>> config = GenerateConfig(num_structures=3, batch_size=2, num_atoms=3, steps=5,
...                         output=tempfile.mkdtemp() + "/run")
>>> summary = generate(config, model=GaussianBackend())
>>> summary.num_structures, summary.batches_done
(3, 2)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from aseguide.runs.batching import auto_batch_size, is_out_of_memory, release_memory, run_batch
from aseguide.runs.config import GenerateConfig, build_objective
from aseguide.runs.folder import RunFolder

__all__ = ["generate", "RunSummary"]


@dataclass
class RunSummary:
    """What a run produced.

    ``num_structures`` and ``batches_done`` are those recorded in ``progress.json``
    (what the files hold, resumed batches included); ``seconds`` is the generation time,
    ``load_seconds`` the time spent loading the model before it, ``total_seconds`` both
    with the checks of the run folder.
    """

    output: Path
    num_structures: int
    batches_done: int
    seconds: float
    resumed_batches: int = 0
    load_seconds: float = 0.0
    total_seconds: float = 0.0


def _load_model(config: GenerateConfig):
    from aseguide.models.mattergen import load_model

    return load_model(config.model, device=config.device, max_atoms=config.max_atoms)


def _objective_parts(objective, structures: Sequence[Atoms]) -> dict[str, np.ndarray]:
    """Per-structure value of every part of a combined objective (finite structures only)."""
    if objective is None or not hasattr(objective, "parts"):
        return {}
    from aseguide.state import CrystalBatch

    finite = [a for a in structures if a.info.get("finite", True)]
    if not finite:
        return {}
    values = objective.parts(CrystalBatch.from_atoms(finite))
    return {name: np.asarray(v.detach().cpu()) for name, v in values.items()}


def _rows(structures: Sequence[Atoms], parts: dict[str, np.ndarray], first_index: int, batch_index: int,
          seed: int, config: GenerateConfig | None = None) -> list[dict[str, Any]]:
    """The ``results.csv`` rows of a batch; also numbers the structures (``atoms.info``)."""
    rows = []
    for offset, atoms in enumerate(structures):
        index = first_index + offset
        part_seed = atoms.info.get("seed", seed)
        atoms.info.update({"index": index, "batch": batch_index, "seed": part_seed})
        row = {"index": index, "batch": batch_index, "seed": part_seed,
               "formula": atoms.get_chemical_formula(), "natoms": len(atoms),
               "loss": atoms.info.get("loss", ""), "satisfied": atoms.info.get("satisfied", ""),
               "finite": atoms.info.get("finite", True), "split": atoms.info.get("split", "")}
        seed_index = None if config is None else config.seed_index(index)
        if seed_index is not None:
            atoms.info["seed_index"] = row["seed_index"] = seed_index
        for name, value in parts.items():
            if offset < len(value):
                row[f"loss_{name}"] = float(value[offset])
                atoms.info[f"loss_{name}"] = float(value[offset])
        rows.append(row)
    return rows


def generate(
    config: GenerateConfig,
    *,
    resume: bool = False,
    model=None,
    progress: Callable[[int, int, float], None] | None = None,
) -> RunSummary:
    """Run (or resume) a generation; see :mod:`aseguide.runs.folder` for the files written.

    Parameters
    ----------
    config : GenerateConfig
        The validated configuration.
    resume : bool
        Continue an interrupted run in ``config.output`` (the stored configuration must
        match); without it, an output folder that already holds results is an error.
    model : ScoreBackend, optional
        An already loaded backend (default: load ``config.model``).
    progress : callable, optional
        Called after each batch with (structures done, total, seconds elapsed).

    Returns
    -------
    RunSummary
        What the run folder holds and how long it took.
    """
    begin = time.perf_counter()
    folder = RunFolder(config.output)
    record = folder.read_progress(config, resume)
    done_batches = int(record.get("batches_done", 0))
    produced = int(record.get("structures", 0))
    objective = build_objective(config.objectives, config.combine)
    model = model if model is not None else _load_model(config)
    load_seconds = time.perf_counter() - begin
    batch_size = config.batch_size
    if batch_size == "auto":
        batch_size = int(record["batch_size"]) if record.get("batch_size") else \
            auto_batch_size(model, config, objective)
    n_batches = done_batches + math.ceil((config.num_structures - produced) / batch_size)

    def size_after(done: int) -> int:
        return min(batch_size, config.num_structures - done)

    def dynamics_for(size: int, seed: int, offset: int = 0):
        return config.dynamics(model, objective, size, seed, first_index=produced + offset)

    # Settings the model rejects (conditions, sizes, strengths) fail here, before any file exists.
    first = None
    if produced < config.num_structures:
        try:
            first = dynamics_for(size_after(produced), config.seed + done_batches)
        except RuntimeError as error:  # the prior alone did not fit: the batch loop splits it
            if not is_out_of_memory(error):
                raise
            release_memory()
    folder.prepare(record)
    folder.write_config(config.todict())
    # recorded before any structure is appended, so that every later state can be continued
    folder.save_progress(batches_done=done_batches, structures=produced, batches_total=n_batches,
                         batch_size=batch_size)

    start_time = time.perf_counter()
    batch_index = done_batches
    while produced < config.num_structures:
        seed = config.seed + batch_index
        prepared, first = first, None
        structures = run_batch(dynamics_for, size_after(produced), seed, prepared)
        rows = _rows(structures, _objective_parts(objective, structures), produced, batch_index, seed, config)
        folder.append_batch(structures, rows, first_index=produced)
        produced += len(structures)
        batch_index += 1
        folder.save_progress(batches_done=batch_index, structures=produced, batches_total=n_batches,
                             batch_size=batch_size)
        if progress is not None:
            progress(produced, config.num_structures, time.perf_counter() - start_time)
    now = time.perf_counter()
    return RunSummary(output=folder.path, num_structures=produced, batches_done=batch_index,
                      seconds=now - start_time, resumed_batches=done_batches,
                      load_seconds=load_seconds, total_seconds=now - begin)
