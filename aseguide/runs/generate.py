"""The ``aseguide generate`` loop: batches of guided structures written one by one into a run folder.

:func:`generate` draws ``num_structures`` crystals in batches with
:class:`~aseguide.sampling.dynamics.GuidedDiffusion` and writes each finished batch at
once into the run folder (:mod:`aseguide.runs.folder`), so an interrupted run keeps
everything already generated and ``resume=True`` continues where it stopped. Resuming
with a larger ``num_structures`` appends new batches (seeds continue
``seed + batch``); fewer than are already done is refused. A batch that runs out of
memory is split and retried (:mod:`aseguide.runs.batching`); batches already written are
never touched. With ``cluster: ray`` (:mod:`aseguide.runs.cluster`) the batches run on
Ray workers, each holding the model once; batch ``b`` keeps its seed ``seed + b`` and
this process writes the batches in order, so the run folder is the same, byte for byte,
as that of a run in one process, whatever the number of workers.

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

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from aseguide.runs.batching import auto_batch_size, is_out_of_memory, release_memory, run_batch
from aseguide.runs.cluster import parse_cluster, require_ray
from aseguide.runs.config import GenerateConfig, build_objective
from aseguide.runs.folder import RunFolder

__all__ = ["generate", "RunSummary", "GenerateWorker", "pickle_model", "unpickle_model"]


@dataclass
class RunSummary:
    """What a run produced.

    ``num_structures`` and ``batches_done`` are those recorded in ``progress.json``
    (what the files hold, resumed batches included); ``seconds`` is the generation time,
    ``load_seconds`` the time spent loading the model (or starting the cluster's
    workers) before it, ``total_seconds`` both with the checks of the run folder.
    ``workers`` is the number of processes that generated (1 without a cluster),
    ``retried_batches`` the batches (or parts) run again after their worker was lost.
    """

    output: Path
    num_structures: int
    batches_done: int
    seconds: float
    resumed_batches: int = 0
    load_seconds: float = 0.0
    total_seconds: float = 0.0
    workers: int = 1
    retried_batches: int = 0


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


def _plan(done_batches: int, produced: int, batch_size: int, total: int) -> list[tuple[int, int, int]]:
    """``(batch index, index of its first structure, size)`` of every batch still to run."""
    plan = []
    batch, first = done_batches, produced
    while first < total:
        size = min(batch_size, total - first)
        plan.append((batch, first, size))
        batch, first = batch + 1, first + size
    return plan


class GenerateWorker:
    """What a Ray worker of a generation run holds: the model (loaded once) and the objective.

    Parameters
    ----------
    config : GenerateConfig
        The run's configuration.
    model : ScoreBackend or bytes, optional
        An already loaded backend, or one pickled (:func:`pickle_model`: a MatterGen
        model unpickles only once aseguide has prepared MatterGen's imports); default:
        load ``config.model`` in the worker.
    threads : int, optional
        Torch threads of the worker.

    Examples
    --------
    >>> from aseguide.models.analytic import GaussianBackend
    >>> worker = GenerateWorker(GenerateConfig(num_atoms=3, steps=3), model=GaussianBackend())
    >>> len(worker.run(2, 0))
    2
    """

    def __init__(self, config: GenerateConfig, model=None, threads: int | None = None) -> None:
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        self.config = config
        self.objective = build_objective(config.objectives, config.combine)
        if isinstance(model, bytes):
            model = unpickle_model(model)
        self.model = model if model is not None else _load_model(config)

    def check(self, size: int, seed: int, first_index: int = 0) -> None:
        """Build (and drop) the dynamics of a batch: the model rejects bad settings here."""
        try:
            self.config.dynamics(self.model, self.objective, size, seed, first_index=first_index)
        except RuntimeError as error:  # the prior alone did not fit: the batch itself is split
            if not is_out_of_memory(error):
                raise
        release_memory()

    def batch_size(self) -> int:
        """``batch_size="auto"`` on this worker's device (see :func:`auto_batch_size`)."""
        return auto_batch_size(self.model, self.config, self.objective)

    def run(self, size: int, seed: int, path: str = "", first_index: int = 0) -> list[Atoms]:
        """The structures of one batch (or part ``path`` of a split one), split on out-of-memory.

        ``first_index`` is the run-wide index of the part's first structure (a seeded run
        starts each structure from its own seed crystal).
        """
        def dynamics_for(n: int, s: int, index: int):
            return self.config.dynamics(self.model, self.objective, n, s, first_index=index)

        return run_batch(dynamics_for, size, seed, None, path, first_index)


def pickle_model(model) -> bytes:
    """A loaded backend as bytes, for :class:`GenerateWorker` (see :func:`unpickle_model`).

    Examples
    --------
    >>> from aseguide.models.analytic import GaussianBackend
    >>> type(unpickle_model(pickle_model(GaussianBackend()))).__name__
    'GaussianBackend'
    """
    try:
        from ray import cloudpickle as pickler
    except ImportError:
        import pickle as pickler

    return pickler.dumps(model)


def unpickle_model(data: bytes):
    """The backend of :func:`pickle_model`, MatterGen's imports prepared first.

    A MatterGen model's classes import ``torch_scatter``, whose pure-PyTorch stand-in
    aseguide registers (:mod:`aseguide.models._mattergen_compat`) before unpickling.
    """
    import pickle

    try:
        from aseguide.models._mattergen_compat import prepare_mattergen

        prepare_mattergen()
    except Exception:  # noqa: BLE001 - no MatterGen: the backend is another one
        pass
    return pickle.loads(data)


def _check_first(plan: list[tuple[int, int, int]], config: GenerateConfig, pool, dynamics_for):
    """Build the first batch's dynamics (on a worker with a cluster): bad settings fail before any file.

    Returns the dynamics to run first locally (``None`` with a cluster, or when the
    prior alone ran out of memory: the batch loop splits that batch).
    """
    if not plan:
        return None
    batch, first_index, size = plan[0]
    if pool is not None:
        pool.call("check", size, config.seed + batch, first_index)
        return None
    try:
        return dynamics_for(size, config.seed + batch, first_index)
    except RuntimeError as error:
        if not is_out_of_memory(error):
            raise
    release_memory()
    return None


def _batches(plan: list[tuple[int, int, int]], config: GenerateConfig, pool, dynamics_for, first):
    """The structures of each planned batch, in batch order: here, or from the cluster's workers."""
    if pool is not None:
        tasks = ((size, config.seed + batch, "", first_index) for batch, first_index, size in plan)
        for _, structures in pool.map("run", tasks, split=_split_part, join=_join_parts):
            yield structures
        return
    prepared = first
    for batch, first_index, size in plan:
        yield run_batch(dynamics_for, size, config.seed + batch, prepared, "", first_index)
        prepared = None


def _split_part(task: tuple) -> list[tuple] | None:
    """The halves of a batch (part) whose worker ran out of host memory (see :func:`run_batch`)."""
    size, seed, path, first_index = task
    if size <= 1:
        return None
    first = (size + 1) // 2
    return [(first, seed, path + "a", first_index), (size - first, seed, path + "b", first_index + first)]


def _join_parts(parts: list[list[Atoms]]) -> list[Atoms]:
    return [atoms for part in parts for atoms in part]


def generate(
    config: GenerateConfig,
    *,
    resume: bool = False,
    model=None,
    progress: Callable[[int, int, float], None] | None = None,
) -> RunSummary:
    """Run (or resume) a generation; see :mod:`aseguide.runs.folder` for the files written.

    With ``config.cluster`` other than ``local``, the batches run on worker actors of a
    Ray cluster (:mod:`aseguide.runs.cluster`), each holding the model once; this
    process alone writes the run folder, batch after batch in batch order, so the files
    are exactly those of a run in one process and ``resume`` works the same.

    Parameters
    ----------
    config : GenerateConfig
        The validated configuration.
    resume : bool
        Continue an interrupted run in ``config.output`` (the stored configuration must
        match; the ``cluster`` setting may differ); without it, an output folder that
        already holds results is an error.
    model : ScoreBackend, optional
        An already loaded backend (default: load ``config.model``; on a cluster, in
        every worker: then it must be a name or a path every node can read). Given one,
        on a cluster it is sent to the workers.
    progress : callable, optional
        Called after each batch with (structures done, total, seconds elapsed).

    Returns
    -------
    RunSummary
        What the run folder holds and how long it took.

    Examples
    --------
    >>> import tempfile
    >>> config = GenerateConfig(num_structures=4, batch_size=2, num_atoms=3, steps=3,
    ...                         cluster={"address": "local", "workers": 2},
    ...                         output=tempfile.mkdtemp() + "/run")
    >>> generate(config).num_structures  # doctest: +SKIP
    4
    """
    begin = time.perf_counter()
    settings = parse_cluster(config.cluster)
    if not settings.is_local:
        require_ray()  # before any file or compute: says what to install
    folder = RunFolder(config.output)
    record = folder.read_progress(config, resume)
    done_batches = int(record.get("batches_done", 0))
    produced = int(record.get("structures", 0))
    objective = build_objective(config.objectives, config.combine)
    pool = None
    if settings.is_local:
        model = model if model is not None else _load_model(config)
    else:
        from aseguide.runs.cluster import WorkerPool

        threads = max(1, int(settings.cpus_per_worker))
        blob = pickle_model(model) if model is not None else None
        pool = WorkerPool(GenerateWorker, settings, (config, blob, threads), name="aseguide-generate")
    try:
        if pool is not None:
            pool.start()  # every worker loads the model: the cluster's share of load_seconds
        return _generate(config, folder, record, model, objective, pool, progress, begin,
                         time.perf_counter() - begin, done_batches, produced)
    finally:
        if pool is not None:
            pool.close()


def _generate(config: GenerateConfig, folder: RunFolder, record: dict, model, objective, pool, progress,
              begin: float, load_seconds: float, done_batches: int, produced: int) -> RunSummary:
    """The body of :func:`generate` once the model (or the workers) are ready."""
    batch_size = config.batch_size
    if batch_size == "auto":
        if record.get("batch_size"):
            batch_size = int(record["batch_size"])
        else:
            batch_size = pool.call("batch_size") if pool else auto_batch_size(model, config, objective)
    plan = _plan(done_batches, produced, batch_size, config.num_structures)
    n_batches = done_batches + len(plan)

    def dynamics_for(size: int, seed: int, first_index: int = 0):
        return config.dynamics(model, objective, size, seed, first_index=first_index)

    # Settings the model rejects (conditions, sizes, strengths) fail here, before any file exists.
    first = _check_first(plan, config, pool, dynamics_for)
    folder.prepare(record)
    folder.write_config(config.todict())
    # recorded before any structure is appended, so that every later state can be continued
    folder.save_progress(batches_done=done_batches, structures=produced, batches_total=n_batches,
                         batch_size=batch_size)
    batches = _batches(plan, config, pool, dynamics_for, first)

    start_time = time.perf_counter()
    batch_index = done_batches
    for (batch, _, _), structures in zip(plan, batches):
        seed = config.seed + batch
        rows = _rows(structures, _objective_parts(objective, structures), produced, batch, seed, config)
        folder.append_batch(structures, rows, first_index=produced)
        produced += len(structures)
        batch_index = batch + 1
        folder.save_progress(batches_done=batch_index, structures=produced, batches_total=n_batches,
                             batch_size=batch_size)
        if progress is not None:
            progress(produced, config.num_structures, time.perf_counter() - start_time)
    now = time.perf_counter()
    return RunSummary(output=folder.path, num_structures=produced, batches_done=batch_index,
                      seconds=now - start_time, resumed_batches=done_batches,
                      load_seconds=load_seconds, total_seconds=now - begin,
                      workers=pool.workers if pool is not None else 1,
                      retried_batches=pool.retried if pool is not None else 0)
