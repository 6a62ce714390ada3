"""Batches of a generation run: out-of-memory splitting and retry, automatic batch size.

A batch that runs out of memory (``torch.cuda.OutOfMemoryError`` or a ``RuntimeError``
saying "out of memory") is split into two halves, each run with its own seed (see
:func:`split_seed`), recursively down to single structures; the structures of a split
batch record their part in ``atoms.info["split"]`` and their own seed in ``seed``.
``batch_size="auto"`` picks the largest batch that fits the free GPU memory
(:func:`auto_batch_size`, :func:`choose_batch_size`).

Examples
--------
>>> from aseguide.runs.batching import choose_batch_size, is_out_of_memory
>>> choose_batch_size(10e9, 1e9, 20)
7
>>> is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
True
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from aseguide.runs.config import GenerateConfig

__all__ = ["is_out_of_memory", "release_memory", "split_seed", "run_batch", "choose_batch_size", "auto_batch_size",
           "AUTO_BATCH_SIZE_CPU", "AUTO_PROBE_STRUCTURES"]

logger = logging.getLogger(__name__)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an out-of-memory error of torch (CUDA or another device)."""
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(error, oom):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error)


def release_memory() -> None:
    """Collect garbage and hand cached CUDA memory back (after an out-of-memory error)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def split_seed(batch_seed: int, path: str) -> int:
    """Seed of one part of a batch split after an out-of-memory error.

    A batch of seed ``s`` that does not fit is split into a first half ``"a"`` (the
    larger when the size is odd) and a second half ``"b"``; a half that does not fit
    either is split again (``"aa"``, ``"ab"``, ...). Part ``path`` gets the seed
    ``SeedSequence(s, spawn_key=(0 for a, 1 for b, ...)).generate_state(1, uint64)[0] >> 1``
    (numpy's :class:`~numpy.random.SeedSequence`, stable across platforms and
    versions): deterministic, independent of the other parts and of the unsplit seeds
    ``seed + batch``.

    Parameters
    ----------
    batch_seed : int
        Seed of the batch (``config.seed + batch``).
    path : str
        The part: a non-empty string of ``"a"`` and ``"b"``.

    Returns
    -------
    int
        A seed in ``[0, 2**63)``.

    Examples
    --------
    >>> split_seed(3, "a") == split_seed(3, "a") != split_seed(3, "b")
    True
    """
    if not path or set(path) - {"a", "b"}:
        raise ValueError(f"a split path is a non-empty string of 'a' and 'b', got {path!r}")
    key = tuple(0 if c == "a" else 1 for c in path)
    state = np.random.SeedSequence(int(batch_seed), spawn_key=key).generate_state(1, dtype=np.uint64)
    return int(state[0]) >> 1


def run_batch(dynamics_for: Callable[[int, int, int], Any], size: int, batch_seed: int, prepared=None,
               path: str = "", offset: int = 0) -> list:
    """Run one batch; on out-of-memory split it in halves (see :func:`split_seed`) down to 1 structure.

    ``dynamics_for(size, seed, offset)`` builds the dynamics of a part; ``offset`` is
    the index of the part's first structure within the batch (a seeded run starts each
    structure from its own seed crystal). Structures of a split batch carry
    ``atoms.info["split"]`` (their part, e.g. ``"ab"``) and ``atoms.info["seed"]`` (the
    part's seed). An out-of-memory error of a single structure is raised.
    """
    seed = split_seed(batch_seed, path) if path else batch_seed
    failed = None
    try:
        dynamics = prepared if prepared is not None else dynamics_for(size, seed, offset)
        prepared = None
        with dynamics:
            dynamics.run()
            structures = dynamics.get_structures()
    except RuntimeError as error:
        if size <= 1 or not is_out_of_memory(error):
            raise
        failed = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    if failed is None:
        if path:
            for atoms in structures:
                atoms.info.update({"split": path, "seed": seed})
        return structures
    # outside the except block: the traceback (and the tensors its frames hold) is gone
    dynamics = prepared = None
    release_memory()
    first = (size + 1) // 2
    logger.warning("batch of %d structures (seed %d%s) ran out of memory (%s); splitting into %d + %d",
                   size, batch_seed, f", part {path}" if path else "", failed, first, size - first)
    return (run_batch(dynamics_for, first, batch_seed, None, path + "a", offset)
            + run_batch(dynamics_for, size - first, batch_seed, None, path + "b", offset + first))


#: Batch size of ``batch_size="auto"`` off CUDA.
AUTO_BATCH_SIZE_CPU = 16
#: Structures of the probe batch whose peak memory gives the per-structure estimate.
AUTO_PROBE_STRUCTURES = 8


def choose_batch_size(free_bytes: float, per_structure_bytes: float, num_structures: int,
                      safety: float = 0.8) -> int:
    """Largest batch that fits ``safety * free_bytes``, then balanced over the batches needed.

    Parameters
    ----------
    free_bytes : float
        Free device memory.
    per_structure_bytes : float
        Peak memory one structure needs during a step.
    num_structures : int
        Structures requested in all.
    safety : float
        Fraction of the free memory to plan for.

    Returns
    -------
    int
        A batch size in ``[1, num_structures]``; ``num_structures`` split into the
        fewest batches that fit, of (nearly) equal size.

    Examples
    --------
    >>> choose_batch_size(100e9, 0.5e9, 1000)   # 160 fit; 7 batches of at most 143
    143
    """
    if per_structure_bytes <= 0:
        return num_structures
    largest = max(1, min(num_structures, int(safety * free_bytes // per_structure_bytes)))
    n_batches = math.ceil(num_structures / largest)
    return math.ceil(num_structures / n_batches)


def auto_batch_size(model, config: GenerateConfig, objective=None) -> int:
    """Batch size for ``batch_size="auto"``: the largest that fits the free GPU memory.

    On CUDA, one step of a probe batch of :data:`AUTO_PROBE_STRUCTURES` structures with
    the run's settings (a guided step when guidance acts, from the prior state) gives the
    peak memory per structure; :func:`choose_batch_size` turns it and
    ``torch.cuda.mem_get_info`` into a batch size. Off CUDA, :data:`AUTO_BATCH_SIZE_CPU`
    (at most ``num_structures``). An estimate that proves too large is still safe: a
    batch that runs out of memory is split and retried.
    """
    import torch

    device = torch.device(config.device) if config.device else torch.device(getattr(model, "device", "cpu"))
    if device.type != "cuda":
        return min(config.num_structures, AUTO_BATCH_SIZE_CPU)
    probe = min(AUTO_PROBE_STRUCTURES, config.num_structures)
    release_memory()
    torch.cuda.synchronize(device)
    baseline = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with config.dynamics(model, objective, probe, config.seed) as probe_run:
        guided = [i for i in range(probe_run.run_steps) if probe_run.strengths(i) != (0.0, 0.0)]
        probe_run.nsteps = guided[-1] if guided else probe_run.run_steps - 1
        probe_run.step()
        torch.cuda.synchronize(device)
        per_structure = (torch.cuda.max_memory_allocated(device) - baseline) / probe
    del probe_run
    release_memory()
    free, _ = torch.cuda.mem_get_info(device)
    size = choose_batch_size(free, per_structure, config.num_structures)
    logger.info("batch_size=auto: %.3f GiB per structure, %.1f GiB free -> %d", per_structure / 2**30,
                free / 2**30, size)
    return size
