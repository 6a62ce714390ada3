"""Guided generation runs: a validated configuration, batch-by-batch output, resume.

:func:`generate` draws ``num_structures`` crystals in batches with
:class:`~aseguide.sampling.dynamics.GuidedDiffusion` and writes each finished batch at once into
the output folder, so an interrupted run keeps everything already generated and
``resume=True`` continues where it stopped:

``structures.extxyz``
    every structure (``atoms.info``: loss, descriptors, seed, batch, settings);
``cifs/gen_<index>.cif``
    one CIF per structure;
``results.csv``
    one row per structure: index, batch, seed, formula, number of atoms, loss,
    satisfied, finite, split and one column per objective part;
``config.json``
    the resolved configuration; ``progress.json`` the batches done.

A batch that runs out of memory (``torch.cuda.OutOfMemoryError`` or a ``RuntimeError``
saying "out of memory") is split into two halves, each run with its own seed (see
:func:`split_seed`), recursively down to single structures; the structures of a split
batch record their part in ``atoms.info["split"]`` and the ``split`` column, and their
own seed in ``seed``. Batches already written are never touched.

``progress.json`` is the single source of truth of the run folder: it is written
(atomically, through a temporary file and a rename) before the first structure and
after each batch, and records how many structures are done and the size of
``structures.extxyz`` and ``results.csv`` at that point. A run killed at any instruction
leaves a folder that ``resume=True`` continues exactly: bytes a killed batch appended
after the record are cut, temporary files are removed, and the batch is generated again
with its own seed (CIFs are written through a rename too). Resuming with a larger
``num_structures`` appends new batches (seeds continue ``seed + batch``); fewer than
are already done is refused. All files follow the umask.

Example
-------
>>> from aseguide.runs.generate import GenerateConfig
>>> config = GenerateConfig.from_dict({"model": "tiny-random", "num_structures": 4,
...                                    "batch_size": 2, "num_atoms": 4, "steps": 3,
...                                    "objectives": [{"type": "VolumePerAtom", "target": 12.0}]})
>>> config.batch_size, config.objectives[0]["type"]
(2, 'VolumePerAtom')
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GenerateConfig", "generate", "build_objective", "GUIDANCE_KEYS", "RunSummary", "split_seed",
           "is_out_of_memory", "auto_batch_size", "choose_batch_size", "AUTO_BATCH_SIZE_CPU"]

logger = logging.getLogger(__name__)

#: Keys of the ``guidance`` section, passed to :class:`~aseguide.sampling.dynamics.GuidedDiffusion`.
GUIDANCE_KEYS = (
    "forward_strength", "backward_strength", "backward_steps", "recurrence", "normalize", "start",
    "every", "forward_schedule", "backward_schedule", "fields",
)


@dataclass
class GenerateConfig:
    """Everything a generation run needs; validated on construction.

    Parameters
    ----------
    model:
        A released MatterGen name (``chemical_system``, ``mattergen_base``, ...), a local
        checkpoint directory, a packaged model, or ``tiny-random`` (a randomly initialised
        tiny MatterGen, for trying the pipeline: it generates no physical crystals).
    num_structures, batch_size:
        How many structures in all, and per batch. ``batch_size="auto"``: on CUDA the
        largest batch that fits the free GPU memory (see :func:`auto_batch_size`),
        elsewhere :data:`AUTO_BATCH_SIZE_CPU`; the size chosen is recorded in
        ``progress.json`` and reused on resume.
    num_atoms:
        Atoms per structure: an int, ``{n: weight}`` or a MatterGen distribution name.
    chemical_system, guidance_factor:
        Classifier-free conditioning (needs a conditioned checkpoint) and its factor.
    space_group, dft_band_gap, dft_mag_density, ml_bulk_modulus, hhi_score, energy_above_hull, \
dft_bulk_modulus, dft_shear_modulus, formation_energy_per_atom:
        The other property conditions, in MatterGen's names and units (space group
        number, eV, μB/Å³, GPa, HHI 0-10000, eV/atom; see
        :data:`aseguide.models.conditions.PROPERTY_CONDITIONS`), for checkpoints trained
        on them; values are checked here, and against the checkpoint before any output.
    steps, seed, device:
        Diffusion steps (``None``: the model's default, see
        :attr:`~aseguide.models.base.ScoreBackend.default_steps`), base seed (batch ``b``
        uses ``seed + b``), device.
    max_atoms:
        Largest cell the model is offered: ``"auto"`` (the model's own, 20 for MatterGen's
        checkpoints), a number, or ``None`` (no limit).
    objectives:
        A list of ``{"type": ClassName, **constructor arguments}`` of
        :mod:`aseguide.constraints`; several are combined with ``combine`` (``norm``,
        ``weights``). Empty: unguided sampling.
    guidance:
        Keyword arguments of :class:`~aseguide.sampling.dynamics.GuidedDiffusion` (see
        :data:`GUIDANCE_KEYS`).
    output:
        The output folder.
    precision:
        Precision policy of the network: ``"mixed"`` (TF32 + bf16 network on CUDA,
        plain float32 elsewhere), ``"fp32"`` (strict) or ``"bf16"``; see
        :mod:`aseguide.precision`.
    """

    model: str = "tiny-random"
    num_structures: int = 16
    batch_size: int | str = 16
    num_atoms: Any = 8
    chemical_system: str | None = None
    space_group: int | None = None
    dft_band_gap: float | None = None
    dft_mag_density: float | None = None
    ml_bulk_modulus: float | None = None
    hhi_score: float | None = None
    energy_above_hull: float | None = None
    dft_bulk_modulus: float | None = None
    dft_shear_modulus: float | None = None
    formation_energy_per_atom: float | None = None
    guidance_factor: float | None = None
    steps: int | None = None
    seed: int = 0
    device: str | None = None
    max_atoms: int | str | None = "auto"
    objectives: list = field(default_factory=list)
    combine: dict = field(default_factory=dict)
    guidance: dict = field(default_factory=dict)
    output: str = "aseguide-run"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GenerateConfig":
        """Build from a mapping; unknown keys are named in the error."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a configuration must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown configuration key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**dict(data))

    @classmethod
    def from_file(cls, path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> "GenerateConfig":
        """Read a YAML (or JSON) file, then apply ``overrides`` (non-``None`` values)."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"configuration file {str(path)!r} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, Mapping):
            raise ValueError(f"{str(path)!r} does not hold a mapping of settings")
        data = dict(data)
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls.from_dict(data)

    def validate(self) -> None:
        """Check every value; raise :class:`ValueError` naming the first bad one."""
        for name in ("num_structures", "batch_size", "steps"):
            value = getattr(self, name)
            if (name == "batch_size" and value == "auto") or (name == "steps" and value is None):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                alternative = " or 'auto'" if name == "batch_size" else ""
                raise ValueError(f"{name} must be a positive integer{alternative}, got {value!r}")
        if self.max_atoms not in (None, "auto") and (isinstance(self.max_atoms, bool)
                                                     or not isinstance(self.max_atoms, int) or self.max_atoms < 1):
            raise ValueError(f"max_atoms must be a positive integer, 'auto' or null, got {self.max_atoms!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        from aseguide.precision import check_precision

        check_precision(self.precision)
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a name or a path, got {self.model!r}")
        if self.guidance_factor is not None and not (isinstance(self.guidance_factor, (int, float))
                                                     and self.guidance_factor >= 0):
            raise ValueError(f"guidance_factor must be a number >= 0, got {self.guidance_factor!r}")
        from aseguide.models.conditions import check_conditions, checkpoint_conditions

        # against the checkpoint's conditions when they are known without loading (or downloading) it
        check_conditions({"chemical_system": self.chemical_system, **self.property_conditions()},
                         accepted=checkpoint_conditions(self.model), model=self.model)
        if not isinstance(self.objectives, list):
            raise ValueError(f"objectives must be a list of {{type: ..., ...}} entries, got {self.objectives!r}")
        if not isinstance(self.guidance, Mapping):
            raise ValueError(f"guidance must be a mapping, got {self.guidance!r}")
        unknown = sorted(set(self.guidance) - set(GUIDANCE_KEYS))
        if unknown:
            raise ValueError(f"unknown guidance key(s) {unknown}; known: {list(GUIDANCE_KEYS)}")
        unknown = sorted(set(self.combine) - {"norm", "weights"})
        if unknown:
            raise ValueError(f"unknown combine key(s) {unknown}; known: ['norm', 'weights']")
        build_objective(self.objectives, self.combine)  # constructs: every argument is checked

    def todict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def property_conditions(self) -> dict[str, Any]:
        """The conditions other than ``chemical_system`` that are set (keywords of GuidedDiffusion)."""
        from aseguide.models.conditions import PROPERTY_CONDITIONS

        return {name: getattr(self, name) for name in PROPERTY_CONDITIONS
                if name != "chemical_system" and getattr(self, name) is not None}


def build_objective(entries: list, combine: Mapping[str, Any] | None = None):
    """Objectives from ``[{"type": "Coordination", "center": "Co", ...}, ...]``.

    Returns ``None`` for an empty list, the objective itself for one entry, and a
    :class:`~aseguide.constraints.Combined` of all for several.
    """
    from aseguide import constraints
    from aseguide.constraints.base import Objective

    built = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or "type" not in entry:
            raise ValueError(f"objective {i} must be a mapping with a 'type' key, got {entry!r}")
        kind = entry["type"]
        cls = getattr(constraints, str(kind), None)
        if not (isinstance(cls, type) and issubclass(cls, Objective)) or kind == "Combined":
            names = sorted(n for n in getattr(constraints, "__all__", [])
                           if isinstance(getattr(constraints, n, None), type)
                           and issubclass(getattr(constraints, n), Objective) and n != "Combined")
            raise ValueError(f"objective {i}: unknown type {kind!r}; known: {names}")
        kwargs = {k: v for k, v in entry.items() if k != "type"}
        try:
            built.append(cls(**kwargs))
        except TypeError as error:
            raise ValueError(f"objective {i} ({kind}): {error}") from error
    if not built:
        return None
    if len(built) == 1 and not combine:
        return built[0]
    return constraints.Combined(built, **dict(combine or {}))


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


def _atomic_append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _tmp_name(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _write_atomic(path: Path, text: str | bytes) -> None:
    """Replace ``path`` by ``text`` through ``<path>.tmp`` and a rename: never a half-written file.

    The file is created with :func:`open`, so its permissions follow the umask like every
    other file of the run folder.
    """
    tmp = _tmp_name(path)
    with open(tmp, "wb") as handle:
        handle.write(text.encode("utf-8") if isinstance(text, str) else text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    _write_atomic(path, json.dumps(data, indent=2, default=str))


def _remove_stale_tmp(output: Path) -> None:
    """Remove temporary files left by a run killed between writing and renaming one."""
    for pattern in ("config.json*.tmp", "progress.json*.tmp", "cifs/gen_*.cif*.tmp"):
        for stale in output.glob(pattern):
            stale.unlink(missing_ok=True)


def _csv_header(path: Path) -> list[str] | None:
    """Column names of an existing CSV file (rows appended later keep its columns), else ``None``."""
    if not path.exists():
        return None
    with open(path, newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle), None)


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an out-of-memory error of torch (CUDA or another device)."""
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(error, oom):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error)


def _release_memory() -> None:
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
    batch_seed:
        Seed of the batch (``config.seed + batch``).
    path:
        The part: a non-empty string of ``"a"`` and ``"b"``.

    Returns
    -------
    int
        A seed in ``[0, 2**63)``.

    Example
    -------
    >>> split_seed(3, "a") == split_seed(3, "a") != split_seed(3, "b")
    True
    """
    if not path or set(path) - {"a", "b"}:
        raise ValueError(f"a split path is a non-empty string of 'a' and 'b', got {path!r}")
    key = tuple(0 if c == "a" else 1 for c in path)
    state = np.random.SeedSequence(int(batch_seed), spawn_key=key).generate_state(1, dtype=np.uint64)
    return int(state[0]) >> 1


def _run_batch(dynamics_for: Callable[[int, int], Any], size: int, batch_seed: int, prepared=None,
               path: str = "") -> list:
    """Run one batch; on out-of-memory split it in halves (see :func:`split_seed`) down to 1 structure.

    Structures of a split batch carry ``atoms.info["split"]`` (their part, e.g. ``"ab"``)
    and ``atoms.info["seed"]`` (the part's seed). An out-of-memory error of a single
    structure is raised.
    """
    seed = split_seed(batch_seed, path) if path else batch_seed
    failed = None
    try:
        dynamics = prepared if prepared is not None else dynamics_for(size, seed)
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
    _release_memory()
    first = (size + 1) // 2
    logger.warning("batch of %d structures (seed %d%s) ran out of memory (%s); splitting into %d + %d",
                   size, batch_seed, f", part {path}" if path else "", failed, first, size - first)
    return (_run_batch(dynamics_for, first, batch_seed, None, path + "a")
            + _run_batch(dynamics_for, size - first, batch_seed, None, path + "b"))


#: Batch size of ``batch_size="auto"`` off CUDA.
AUTO_BATCH_SIZE_CPU = 16
#: Structures of the probe batch whose peak memory gives the per-structure estimate.
AUTO_PROBE_STRUCTURES = 8


def choose_batch_size(free_bytes: float, per_structure_bytes: float, num_structures: int,
                      safety: float = 0.8) -> int:
    """Largest batch that fits ``safety * free_bytes``, then balanced over the batches needed.

    Parameters
    ----------
    free_bytes:
        Free device memory.
    per_structure_bytes:
        Peak memory one structure needs during a step.
    num_structures:
        Structures requested in all.
    safety:
        Fraction of the free memory to plan for.

    Returns
    -------
    int
        A batch size in ``[1, num_structures]``; ``num_structures`` split into the
        fewest batches that fit, of (nearly) equal size.

    Example
    -------
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

    from aseguide.sampling.dynamics import GuidedDiffusion

    device = torch.device(config.device) if config.device else torch.device(getattr(model, "device", "cpu"))
    if device.type != "cuda":
        return min(config.num_structures, AUTO_BATCH_SIZE_CPU)
    probe = min(AUTO_PROBE_STRUCTURES, config.num_structures)
    _release_memory()
    torch.cuda.synchronize(device)
    baseline = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with GuidedDiffusion(model, objective, batch_size=probe, num_atoms=config.num_atoms,
                         chemical_system=config.chemical_system, guidance_factor=config.guidance_factor,
                         steps=config.steps, seed=config.seed, device=config.device, precision=config.precision,
                         **dict(config.guidance), **config.property_conditions()) as probe_run:
        guided = [i for i in range(probe_run.steps) if probe_run.strengths(i) != (0.0, 0.0)]
        probe_run.nsteps = guided[-1] if guided else probe_run.steps - 1
        probe_run.step()
        torch.cuda.synchronize(device)
        per_structure = (torch.cuda.max_memory_allocated(device) - baseline) / probe
    del probe_run
    _release_memory()
    free, _ = torch.cuda.mem_get_info(device)
    size = choose_batch_size(free, per_structure, config.num_structures)
    logger.info("batch_size=auto: %.3f GiB per structure, %.1f GiB free -> %d", per_structure / 2**30,
                free / 2**30, size)
    return size


def _load_model(config: GenerateConfig):
    from aseguide.models.mattergen import load_model

    return load_model(config.model, device=config.device, max_atoms=config.max_atoms)


def generate(
    config: GenerateConfig,
    *,
    resume: bool = False,
    model=None,
    progress: Callable[[int, int, float], None] | None = None,
) -> RunSummary:
    """Run (or resume) a generation; see the module documentation for the files written.

    Parameters
    ----------
    config:
        The validated configuration.
    resume:
        Continue an interrupted run in ``config.output`` (the stored configuration must
        match); without it, an output folder that already holds results is an error.
    model:
        An already loaded backend (default: load ``config.model``).
    progress:
        Called after each batch with (structures done, total, seconds elapsed).
    """
    from ase.io import write

    from aseguide.sampling.dynamics import GuidedDiffusion

    begin = time.perf_counter()
    output = Path(config.output)
    progress_file = output / "progress.json"
    stored = output / "config.json"
    data_files = ("structures.extxyz", "results.csv")
    done_batches = 0
    produced = 0
    record: dict[str, Any] = {}
    if progress_file.exists():
        if not resume:
            raise ValueError(f"output folder {str(output)!r} already holds a run; use --resume to continue "
                             "it or choose another output")
        previous = json.loads(stored.read_text()) if stored.exists() else {}
        # settings added after the run was stored take their default values
        previous = {**{f.name: f.default for f in dataclasses.fields(GenerateConfig)
                       if f.default is not dataclasses.MISSING}, **previous}
        current = json.loads(json.dumps(config.todict(), default=str))
        differing = sorted(k for k in set(previous) | set(current)
                           if k not in ("num_structures", "output") and previous.get(k) != current.get(k))
        if differing:
            raise ValueError(f"cannot resume {str(output)!r}: settings differ from the stored run: {differing}")
        record = json.loads(progress_file.read_text())
        done_batches = int(record["batches_done"])
        produced = int(record.get("structures", 0))
        if produced > config.num_structures:
            raise ValueError(f"cannot resume {str(output)!r} with num_structures={config.num_structures}: "
                             f"it already holds {produced} structures")
        sizes = record.get("sizes", {})
        for name in data_files:
            target = output / name
            size = int(sizes.get(name, 0))
            actual = target.stat().st_size if target.exists() else 0
            if actual < size:
                raise ValueError(f"cannot resume {str(output)!r}: {name} has {actual} bytes but progress.json "
                                 f"records {size} for {produced} structures; the file was cut or replaced")
    else:
        present = [name for name in data_files if (output / name).exists()]
        if present:
            raise ValueError(f"output folder {str(output)!r} holds {present} but no progress.json, so what they "
                             "contain is unknown; choose another output (or remove them)")
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

    def dynamics_for(size: int, seed: int) -> GuidedDiffusion:
        return GuidedDiffusion(
            model, objective, batch_size=size, num_atoms=config.num_atoms,
            chemical_system=config.chemical_system, guidance_factor=config.guidance_factor,
            steps=config.steps, seed=seed, device=config.device, precision=config.precision,
            **dict(config.guidance), **config.property_conditions(),
        )

    # Settings the model rejects (conditions, sizes, strengths) fail here, before any file exists.
    first = None
    if produced < config.num_structures:
        try:
            first = dynamics_for(size_after(produced), config.seed + done_batches)
        except RuntimeError as error:  # the prior alone did not fit: the batch loop splits it
            if not is_out_of_memory(error):
                raise
            _release_memory()
    output.mkdir(parents=True, exist_ok=True)
    (output / "cifs").mkdir(exist_ok=True)
    _remove_stale_tmp(output)

    def save_progress(batches_done: int) -> None:
        # The single source of truth: structures.extxyz and results.csv hold exactly the bytes
        # recorded here; anything a killed run appended after them is cut on --resume.
        sizes = {name: (output / name).stat().st_size if (output / name).exists() else 0 for name in data_files}
        _write_json(progress_file, {"batches_done": batches_done, "structures": produced,
                                    "batches_total": n_batches, "batch_size": batch_size, "sizes": sizes})

    if record:
        # A crash after appending a batch but before recording it: cut the files back.
        for name in data_files:
            target = output / name
            size = int(record.get("sizes", {}).get(name, 0))
            if target.exists() and target.stat().st_size > size:
                with open(target, "r+b") as handle:
                    handle.truncate(size)
                    handle.flush()
                    os.fsync(handle.fileno())
    _write_json(stored, config.todict())
    # recorded before any structure is appended, so that every later state can be continued
    save_progress(done_batches)

    start_time = time.perf_counter()
    batch_index = done_batches
    while produced < config.num_structures:
        seed = config.seed + batch_index
        prepared = first
        first = None
        structures = _run_batch(dynamics_for, size_after(produced), seed, prepared)
        parts = {}
        if objective is not None and hasattr(objective, "parts"):
            from aseguide.state import CrystalBatch

            finite = [a for a in structures if a.info.get("finite", True)]
            if finite:
                values = objective.parts(CrystalBatch.from_atoms(finite))
                parts = {name: np.asarray(v.detach().cpu()) for name, v in values.items()}
        rows = []
        text = io.StringIO()
        first_index = produced
        for offset, atoms in enumerate(structures):
            index = first_index + offset
            part_seed = atoms.info.get("seed", seed)
            atoms.info.update({"index": index, "batch": batch_index, "seed": part_seed})
            row = {"index": index, "batch": batch_index, "seed": part_seed,
                   "formula": atoms.get_chemical_formula(), "natoms": len(atoms),
                   "loss": atoms.info.get("loss", ""), "satisfied": atoms.info.get("satisfied", ""),
                   "finite": atoms.info.get("finite", True), "split": atoms.info.get("split", "")}
            for name, value in parts.items():
                if offset < len(value):
                    row[f"loss_{name}"] = float(value[offset])
                    atoms.info[f"loss_{name}"] = float(value[offset])
            rows.append(row)
        write(text, structures, format="extxyz")
        for offset, atoms in enumerate(structures):
            cif = io.BytesIO()
            write(cif, atoms, format="cif")
            _write_atomic(output / "cifs" / f"gen_{first_index + offset}.cif", cif.getvalue())
        _atomic_append(output / "structures.extxyz", text.getvalue())
        table = io.StringIO()
        results = output / "results.csv"
        fieldnames = _csv_header(results) or list(rows[0])
        writer = csv.DictWriter(table, fieldnames=fieldnames, extrasaction="ignore")
        if not results.exists() or results.stat().st_size == 0:
            writer.writeheader()
        writer.writerows(rows)
        _atomic_append(results, table.getvalue())
        produced = first_index + len(structures)
        batch_index += 1
        save_progress(batch_index)
        if progress is not None:
            progress(produced, config.num_structures, time.perf_counter() - start_time)
    now = time.perf_counter()
    return RunSummary(output=output, num_structures=produced, batches_done=batch_index,
                      seconds=now - start_time, resumed_batches=done_batches,
                      load_seconds=load_seconds, total_seconds=now - begin)
