"""The configuration of a generation run, checked on construction.

:class:`GenerateConfig` holds what ``aseguide generate`` reads from its YAML file and
flags; a bad value (a size, a condition, an objective argument, a guidance setting)
raises :class:`ValueError` naming it, before any model is loaded.
:func:`build_objective` turns the ``objectives`` entries into one objective.

Examples
--------
>>> from aseguide.runs.config import GenerateConfig
>>> config = GenerateConfig.from_dict({"model": "tiny-random", "num_structures": 4,
...                                    "batch_size": 2, "num_atoms": 4, "steps": 3,
...                                    "objectives": [{"type": "VolumePerAtom", "target": 12.0}]})
>>> config.batch_size, config.objectives[0]["type"]
(2, 'VolumePerAtom')
>>> GenerateConfig(guidance={"recurrence": 0})
Traceback (most recent call last):
...
ValueError: recurrence must be an integer >= 1, got 0
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aseguide.models.base import ScoreBackend
from aseguide.runs.cluster import parse_cluster
from aseguide.sampling.dynamics import GuidedDiffusion
from aseguide.sampling.settings import GUIDANCE_KEYS, GuidanceSettings

__all__ = ["GenerateConfig", "build_objective", "read_seeds", "GUIDANCE_KEYS", "DEFAULT_NUM_ATOMS"]

#: Atoms per structure when nothing gives the sizes.
DEFAULT_NUM_ATOMS = 8


@dataclass
class GenerateConfig:
    """Everything a generation run needs; validated on construction.

    Parameters
    ----------
    model : str
        A released MatterGen name (``chemical_system``, ``mattergen_base``, ...), a local
        checkpoint directory, a packaged model, or ``tiny-random`` (a randomly initialised
        tiny MatterGen, for trying the pipeline: it generates no physical crystals).
    num_structures, batch_size : int, int or 'auto'
        How many structures in all, and per batch. ``batch_size="auto"``: on CUDA the
        largest batch that fits the free GPU memory (see :func:`auto_batch_size`),
        elsewhere :data:`AUTO_BATCH_SIZE_CPU`; the size chosen is recorded in
        ``progress.json`` and reused on resume.
    num_atoms : int, mapping, str or None
        Atoms per structure: an int, ``{n: weight}`` or a MatterGen distribution name;
        ``None`` (default): 8, or, with ``seeds``, the seeds' sizes, with
        ``composition``, ``formula_units`` formula units. With ``composition`` an int
        gives the total instead of ``formula_units``; with ``seeds`` it must be left out.
    seeds : str or None
        A structure file (all its frames) or a folder of structure files readable by
        ``ase.io.read`` (every readable frame of every file, in name order; unreadable
        files are skipped, a folder with none is an error; a relative path is read from
        the working directory, as ``output`` is written there): the run starts from these
        crystals noised to ``start_time`` (see
        :class:`~aseguide.sampling.dynamics.GuidedDiffusion`). Structure ``j`` of the
        run comes from seed ``(j // samples_per_seed) % len(seeds)``; ``FixAtoms``
        constraints stored in the files (``.traj``) keep their atoms.
    start_time, samples_per_seed, fix_cell : float or None, int or None, bool
        With ``seeds``: the time ``t0`` in [0, 1] the seeds are noised to (default 1),
        structures per seed before the next seed (default 1), and whether every seed's
        cell is kept.
    composition, formula_units : str or None, int or None
        A fixed formula (``"LiCoO2"``: species given, never sampled) and its formula
        units per structure (default 1).
    chemical_system, guidance_factor : str or None, float or None
        Classifier-free conditioning (needs a conditioned checkpoint) and its factor.
    space_group, dft_band_gap, dft_mag_density, ml_bulk_modulus, hhi_score, energy_above_hull, \
dft_bulk_modulus, dft_shear_modulus, formation_energy_per_atom:
        The other property conditions, in MatterGen's names and units (space group
        number, eV, μB/Å³, GPa, HHI 0-10000, eV/atom; see
        :data:`aseguide.models.conditions.PROPERTY_CONDITIONS`), for checkpoints trained
        on them; values are checked here, and against the checkpoint before any output.
    steps, seed, device : int or None, int, str or None
        Diffusion steps (``None``: the model's default, see
        :attr:`~aseguide.models.base.ScoreBackend.default_steps`), base seed (batch ``b``
        uses ``seed + b``), device.
    max_atoms : int, 'auto' or None
        Largest cell the model is offered: ``"auto"`` (the model's own, 20 for MatterGen's
        checkpoints), a number, or ``None`` (no limit).
    objectives : list of dict
        A list of ``{"type": ClassName, **constructor arguments}`` of
        :mod:`aseguide.constraints`; several are combined with ``combine`` (``norm``,
        ``weights``). Empty: unguided sampling.
    guidance : dict
        The guidance settings, keywords of
        :class:`~aseguide.sampling.dynamics.GuidedDiffusion` (see
        :data:`~aseguide.sampling.settings.GUIDANCE_KEYS`); checked on construction by
        building a :class:`~aseguide.sampling.settings.GuidanceSettings`.
    output : str
        The output folder.
    precision : str
        Precision policy of the network: ``"mixed"`` (TF32 + bf16 network on CUDA,
        plain float32 elsewhere), ``"fp32"`` (strict) or ``"bf16"``; see
        :mod:`aseguide.precision`.
    cluster : str or dict
        Where the batches run: ``"local"`` (this process, default), ``"ray"`` (the
        running Ray cluster) or ``{address, workers, gpus_per_worker, cpus_per_worker}``;
        see :mod:`aseguide.runs.cluster`. It does not change the structures, so a run
        may be resumed with another setting.
    """

    model: str = "tiny-random"
    num_structures: int = 16
    batch_size: int | str = 16
    num_atoms: Any = None
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
    seeds: str | None = None
    start_time: float | None = None
    samples_per_seed: int | None = None
    composition: str | None = None
    formula_units: int | None = None
    fix_cell: bool = False
    cluster: Any = "local"

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
        parse_cluster(self.cluster)
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
        self.guidance_settings()
        unknown = sorted(set(self.combine) - {"norm", "weights"})
        if unknown:
            raise ValueError(f"unknown combine key(s) {unknown}; known: ['norm', 'weights']")
        build_objective(self.objectives, self.combine)  # constructs: every argument is checked
        self._validate_known_parts()

    def _validate_known_parts(self) -> None:
        """Check ``seeds``, ``start_time``, ``samples_per_seed``, ``composition``, ``formula_units``, ``fix_cell``."""
        from aseguide.sampling.seeds import composition_numbers

        self._seed_structures = None
        if self.seeds is None:
            for name in ("start_time", "samples_per_seed"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}={getattr(self, name)!r} needs seeds: (a structure file or folder)")
            if self.fix_cell is not False:
                raise ValueError(f"fix_cell={self.fix_cell!r} needs seeds: (the cells to keep)")
        else:
            if self.composition is not None:
                raise ValueError(f"composition={self.composition!r} cannot be combined with seeds: "
                                 "(the seeds give the species)")
            if self.num_atoms is not None:
                raise ValueError(f"num_atoms={self.num_atoms!r} cannot be combined with seeds: "
                                 "(the seeds give the sizes)")
            if not isinstance(self.fix_cell, bool):
                raise ValueError(f"fix_cell must be true or false, got {self.fix_cell!r}")
            if self.start_time is not None and (isinstance(self.start_time, bool)
                                                or not isinstance(self.start_time, (int, float))
                                                or not 0.0 <= self.start_time <= 1.0):
                raise ValueError(f"start_time must be a number in [0, 1] (1 = pure noise), got {self.start_time!r}")
            if self.samples_per_seed is not None and (isinstance(self.samples_per_seed, bool)
                                                      or not isinstance(self.samples_per_seed, int)
                                                      or self.samples_per_seed < 1):
                raise ValueError(f"samples_per_seed must be a positive integer, got {self.samples_per_seed!r}")
            self._seed_structures = read_seeds(self.seeds)
        if self.composition is None:
            if self.formula_units is not None:
                raise ValueError(f"formula_units={self.formula_units!r} needs composition: (e.g. LiCoO2)")
        else:
            composition_numbers(self.composition, self.formula_units, self.num_atoms)

    def seed_structures(self) -> list | None:
        """The seed crystals read from ``seeds`` (``None`` without seeds)."""
        return self._seed_structures

    def todict(self) -> dict[str, Any]:
        """The configuration as plain values (what ``config.json`` holds).

        ``num_atoms`` is written as the 8 it means when nothing else gives the sizes (as
        in the runs made before it could be left out, so that those runs can be resumed).
        """
        data = dataclasses.asdict(self)
        if data["num_atoms"] is None and self.seeds is None and self.composition is None:
            data["num_atoms"] = DEFAULT_NUM_ATOMS
        return data

    def guidance_settings(self) -> GuidanceSettings:
        """The ``guidance`` mapping as checked :class:`~aseguide.sampling.settings.GuidanceSettings`.

        Raises
        ------
        ValueError
            For an unknown key or a bad value, naming it.
        """
        return GuidanceSettings.from_dict(self.guidance)

    def dynamics(self, model: ScoreBackend, objective, batch_size: int, seed: int,
                 first_index: int = 0) -> GuidedDiffusion:
        """The :class:`~aseguide.sampling.dynamics.GuidedDiffusion` of one batch of this run.

        Parameters
        ----------
        model : ScoreBackend
            The loaded model.
        objective : Objective or None
            The objective of :func:`build_objective`.
        batch_size : int
            Structures in the batch.
        seed : int
            Seed of the batch.
        first_index : int
            Index in the run of the batch's first structure (which seeds it starts from).

        Returns
        -------
        GuidedDiffusion
            The dynamics, not yet run.
        """
        known: dict[str, Any] = {}
        num_atoms = self.num_atoms
        if self.seeds is not None:
            seeds = self.seed_structures()
            per_seed = self.samples_per_seed or 1
            known = dict(seeds=[seeds[(j // per_seed) % len(seeds)] for j in range(first_index, first_index + batch_size)],
                         start_time=self.start_time, fix_cell=self.fix_cell)
            batch_size = None
        elif self.composition is not None:
            known = dict(composition=self.composition, formula_units=self.formula_units)
        elif num_atoms is None:
            num_atoms = DEFAULT_NUM_ATOMS
        return GuidedDiffusion(
            model, objective, batch_size=batch_size, num_atoms=num_atoms,
            chemical_system=self.chemical_system, guidance_factor=self.guidance_factor,
            steps=self.steps, seed=seed, device=self.device, precision=self.precision,
            settings=self.guidance_settings(), **known, **self.property_conditions(),
        )

    def seed_index(self, index: int) -> int | None:
        """Which seed structure ``index`` of the run starts from (``None`` without seeds)."""
        if self.seeds is None:
            return None
        return (index // (self.samples_per_seed or 1)) % len(self.seed_structures())

    def property_conditions(self) -> dict[str, Any]:
        """The conditions other than ``chemical_system`` that are set (keywords of GuidedDiffusion)."""
        from aseguide.models.conditions import PROPERTY_CONDITIONS

        return {name: getattr(self, name) for name in PROPERTY_CONDITIONS
                if name != "chemical_system" and getattr(self, name) is not None}


def read_seeds(path: str | os.PathLike) -> list:
    """Seed crystals from a structure file (every frame) or a folder of them (name order).

    Files ASE cannot read are skipped in a folder; a file that cannot be read, or a
    folder with no readable structure, is a :class:`ValueError` naming it.

    Examples
    --------
    >>> import tempfile
    >>> from ase.build import bulk
    >>> from ase.io import write
    >>> folder = Path(tempfile.mkdtemp())
    >>> write(folder / "si.cif", bulk("Si"))
    >>> [a.get_chemical_formula() for a in read_seeds(folder)]
    ['Si2']
    """
    from ase import Atoms
    from ase.io import read

    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValueError(f"seeds must be a structure file or a folder of them, got {path!r}")
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    elif path.is_file():
        files = [path]
    else:
        raise ValueError(f"seeds {str(path)!r} does not exist")
    structures: list = []
    for file in files:
        try:
            frames = read(file, index=":")
        except Exception as error:  # noqa: BLE001 - ASE raises many types for files it cannot read
            if path.is_file():
                raise ValueError(f"seeds file {str(file)!r} cannot be read by ASE: {error}") from error
            continue
        structures += [a for a in (frames if isinstance(frames, list) else [frames]) if isinstance(a, Atoms)]
    if not structures:
        raise ValueError(f"seeds {str(path)!r} holds no structure ASE can read")
    for i, atoms in enumerate(structures):
        if not atoms.pbc.all() or len(atoms) == 0:
            raise ValueError(f"seed {i} read from {str(path)!r} ({atoms.get_chemical_formula()}) is not a crystal: "
                             f"pbc={atoms.pbc.tolist()}, {len(atoms)} atoms")
    return structures


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
