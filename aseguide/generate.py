"""Guided generation runs: a validated configuration, batch-by-batch output, resume.

:func:`generate` draws ``num_structures`` crystals in batches with
:class:`~aseguide.optimize.GuidedDiffusion` and writes each finished batch at once into
the output folder, so an interrupted run keeps everything already generated and
``resume=True`` continues where it stopped:

``structures.extxyz``
    every structure (``atoms.info``: loss, descriptors, seed, batch, settings);
``cifs/gen_<index>.cif``
    one CIF per structure;
``results.csv``
    one row per structure: index, batch, seed, formula, number of atoms, loss,
    satisfied and one column per objective part;
``config.json``
    the resolved configuration; ``progress.json`` the batches done.

Each file is appended only after the batch is complete (written to a temporary file,
then appended in one write), so no half-written batch is ever left behind.

Example
-------
>>> from aseguide.generate import GenerateConfig
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
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GenerateConfig", "generate", "build_objective", "GUIDANCE_KEYS", "RunSummary"]

#: Keys of the ``guidance`` section, passed to :class:`~aseguide.optimize.GuidedDiffusion`.
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
        How many structures in all, and per batch.
    num_atoms:
        Atoms per structure: an int, ``{n: weight}`` or a MatterGen distribution name.
    chemical_system, guidance_factor:
        Classifier-free conditioning (needs a conditioned checkpoint) and its factor.
    steps, seed, device:
        Diffusion steps, base seed (batch ``b`` uses ``seed + b``), device.
    objectives:
        A list of ``{"type": ClassName, **constructor arguments}`` of
        :mod:`aseguide.constraints`; several are combined with ``combine`` (``norm``,
        ``weights``). Empty: unguided sampling.
    guidance:
        Keyword arguments of :class:`~aseguide.optimize.GuidedDiffusion` (see
        :data:`GUIDANCE_KEYS`).
    output:
        The output folder.
    """

    model: str = "tiny-random"
    num_structures: int = 16
    batch_size: int = 16
    num_atoms: Any = 8
    chemical_system: str | None = None
    guidance_factor: float | None = None
    steps: int = 1000
    seed: int = 0
    device: str | None = None
    max_atoms: int | None = 20
    objectives: list = field(default_factory=list)
    combine: dict = field(default_factory=dict)
    guidance: dict = field(default_factory=dict)
    output: str = "aseguide-run"

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
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a name or a path, got {self.model!r}")
        if self.guidance_factor is not None and not (isinstance(self.guidance_factor, (int, float))
                                                     and self.guidance_factor >= 0):
            raise ValueError(f"guidance_factor must be a number >= 0, got {self.guidance_factor!r}")
        if self.chemical_system is not None:
            from aseguide.models.mattergen import normalize_chemical_system

            normalize_chemical_system(self.chemical_system)
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
    """What a run produced."""

    output: Path
    num_structures: int
    batches_done: int
    seconds: float
    resumed_batches: int = 0


def _atomic_append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(handle, "w") as stream:
        json.dump(data, stream, indent=2, default=str)
    os.replace(tmp, path)


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

    from aseguide.optimize import GuidedDiffusion

    output = Path(config.output)
    progress_file = output / "progress.json"
    stored = output / "config.json"
    done_batches = 0
    if progress_file.exists():
        if not resume:
            raise ValueError(f"output folder {str(output)!r} already holds a run; use --resume to continue "
                             "it or choose another output")
        previous = json.loads(stored.read_text()) if stored.exists() else {}
        current = json.loads(json.dumps(config.todict(), default=str))
        differing = sorted(k for k in set(previous) | set(current)
                           if k not in ("num_structures", "output") and previous.get(k) != current.get(k))
        if differing:
            raise ValueError(f"cannot resume {str(output)!r}: settings differ from the stored run: {differing}")
        record = json.loads(progress_file.read_text())
        done_batches = int(record["batches_done"])
        # A crash after appending a batch but before recording it: cut the files back.
        for name, size in record.get("sizes", {}).items():
            target = output / name
            if target.exists() and target.stat().st_size > size:
                with open(target, "r+b") as handle:
                    handle.truncate(size)
    objective = build_objective(config.objectives, config.combine)
    model = model if model is not None else _load_model(config)
    n_batches = math.ceil(config.num_structures / config.batch_size)

    def dynamics_for(batch_index: int) -> GuidedDiffusion:
        size = min(config.batch_size, config.num_structures - batch_index * config.batch_size)
        return GuidedDiffusion(
            model, objective, batch_size=size, num_atoms=config.num_atoms,
            chemical_system=config.chemical_system, guidance_factor=config.guidance_factor,
            steps=config.steps, seed=config.seed + batch_index, device=config.device, **dict(config.guidance),
        )

    # Settings the model rejects (conditions, sizes, strengths) fail here, before any file exists.
    first = dynamics_for(done_batches) if done_batches < n_batches else None
    output.mkdir(parents=True, exist_ok=True)
    (output / "cifs").mkdir(exist_ok=True)
    _write_json(stored, config.todict())

    start_time = time.perf_counter()
    produced = done_batches * config.batch_size
    for batch_index in range(done_batches, n_batches):
        seed = config.seed + batch_index
        dynamics = first if batch_index == done_batches else dynamics_for(batch_index)
        with dynamics:
            dynamics.run()
            structures = dynamics.get_structures()
        parts = {}
        if objective is not None and hasattr(objective, "parts"):
            from aseguide.state import CrystalBatch

            finite = [a for a in structures if a.info.get("finite", True)]
            if finite:
                values = objective.parts(CrystalBatch.from_atoms(finite))
                parts = {name: np.asarray(v.detach().cpu()) for name, v in values.items()}
        rows = []
        text = io.StringIO()
        first_index = batch_index * config.batch_size
        for offset, atoms in enumerate(structures):
            index = first_index + offset
            atoms.info.update({"index": index, "batch": batch_index, "seed": seed})
            row = {"index": index, "batch": batch_index, "seed": seed,
                   "formula": atoms.get_chemical_formula(), "natoms": len(atoms),
                   "loss": atoms.info.get("loss", ""), "satisfied": atoms.info.get("satisfied", ""),
                   "finite": atoms.info.get("finite", True)}
            for name, value in parts.items():
                if offset < len(value):
                    row[f"loss_{name}"] = float(value[offset])
                    atoms.info[f"loss_{name}"] = float(value[offset])
            rows.append(row)
        write(text, structures, format="extxyz")
        for offset, atoms in enumerate(structures):
            write(output / "cifs" / f"gen_{first_index + offset}.cif", atoms, format="cif")
        _atomic_append(output / "structures.extxyz", text.getvalue())
        table = io.StringIO()
        fieldnames = list(rows[0])
        results = output / "results.csv"
        writer = csv.DictWriter(table, fieldnames=fieldnames, extrasaction="ignore")
        if not results.exists():
            writer.writeheader()
        writer.writerows(rows)
        _atomic_append(results, table.getvalue())
        produced = first_index + len(structures)
        sizes = {name: (output / name).stat().st_size for name in ("structures.extxyz", "results.csv")}
        _write_json(progress_file, {"batches_done": batch_index + 1, "structures": produced,
                                    "batches_total": n_batches, "sizes": sizes})
        if progress is not None:
            progress(produced, config.num_structures, time.perf_counter() - start_time)
    return RunSummary(output=output, num_structures=produced, batches_done=n_batches,
                      seconds=time.perf_counter() - start_time, resumed_batches=done_batches)
