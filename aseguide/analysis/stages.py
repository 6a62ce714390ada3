"""The whole validation pipeline of a run: :func:`analyze`.

Steps (each also usable alone from :mod:`aseguide.analysis`):

1. read structures (:func:`read_structures`);
2. symmetrise with spglib (:func:`symmetrize`);
3. screen short interatomic distances (:func:`screen_distances`);
4. deduplicate by RDF fingerprint similarity (:func:`deduplicate`);
5. novelty against references (:func:`novelty`), optionally ignoring references far
   above the hull (:func:`filter_references`);
6. energies (:func:`compute_energies`) and energy above the hull
   (:func:`energies_above_hull`);
7. descriptors of the objectives (:func:`evaluate_objectives`);
8. satisfaction fractions and the one-sided two-proportion z-test guided vs
   unguided (:func:`two_proportion_ztest`), KDEs;
9. Pareto fronts of (loss, energy above hull) (:func:`pareto_fronts`).

Example
-------
>>> from aseguide.analysis import analyze, HardCoordination
>>> result = analyze("runs/cn4", compare="runs/unguided",
...                  objectives=[HardCoordination("C", "C", 4, cutoff=1.8)])  # doctest: +SKIP
>>> result.summary["tests"]["CN(C-C)"]["clean"]["p_value"]                    # doctest: +SKIP
0.003
>>> result.write_report("report")                                             # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from ase import Atoms

from aseguide.analysis.descriptors import (
    VolumePerAtomTarget,
    combined_loss,
    evaluate_objectives,
    objective_from_dict,
    objective_name,
    volume_per_atom,
)
from aseguide.analysis.energy import (
    PhaseDiagramHull,
    compute_energies,
    energies_above_hull,
    filter_references,
    stored_energies,
)
from aseguide.analysis.fingerprint import (
    DEFAULT_SIMILARITY_THRESHOLD,
    _species_of,
    deduplicate,
    novelty,
    rdf_fingerprints,
)
from aseguide.analysis.io import StructureSet, read_structures
from aseguide.analysis.pareto import pareto_fronts
from aseguide.analysis.screening import DEFAULT_DISTANCE_FACTOR, screen_distances
from aseguide.analysis.stats import two_proportion_ztest
from aseguide.analysis.symmetry import _dataset, symmetrize

__all__ = ["AnalysisOptions", "SetResult", "AnalysisResult", "analyze", "compare_settings"]

#: Configuration keys allowed to differ between a guided run and its unguided baseline.
_GUIDANCE_KEYS = {
    "guidance", "guide", "objectives", "objective", "constraints", "seed", "output", "out", "out_dir",
    "output_dir", "outdir", "name", "resume", "strength", "strengths", "forward", "backward", "recurrence",
    "g", "k", "run_name", "tag", "notes", "device", "combine",
}


@dataclass
class AnalysisOptions:
    """Settings of :func:`analyze` (all optional).

    Attributes
    ----------
    symmetrize:
        Run step 2.
    symprec, angle_tolerance, primitive:
        spglib settings of :func:`symmetrize`.
    distance_factor, pair_thresholds, min_distance:
        Settings of :func:`screen_distances`.
    similarity_threshold:
        Fingerprint similarity from which two structures are the same (steps 4, 5).
    same_composition:
        Only structures of the same reduced formula can be duplicates / known.
    structure_matcher:
        Also deduplicate with pymatgen's ``StructureMatcher``.
    r_max, bin_width, sigma:
        RDF fingerprint settings.
    reference_max_e_above_hull:
        Ignore references more than this many eV/atom above the hull (the paper uses
        0.5); ``None`` keeps all.
    relax, fmax, steps:
        Relax before computing energies (off by default).
    n_best:
        Rows of the best-candidate table.
    """

    symmetrize: bool = True
    symprec: float = 0.1
    angle_tolerance: float = -1.0
    primitive: bool = True
    distance_factor: float = DEFAULT_DISTANCE_FACTOR
    pair_thresholds: dict | None = None
    min_distance: float | None = None
    similarity_threshold: float = DEFAULT_SIMILARITY_THRESHOLD
    same_composition: bool = True
    structure_matcher: bool = False
    r_max: float = 10.0
    bin_width: float = 0.05
    sigma: float = 0.05
    reference_max_e_above_hull: float | None = None
    relax: bool = False
    fmax: float = 0.05
    steps: int = 200
    n_best: int = 10

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        checks = [
            ("symprec", self.symprec > 0), ("distance_factor", self.distance_factor > 0),
            ("similarity_threshold", -1 < self.similarity_threshold <= 1), ("r_max", self.r_max > 0),
            ("bin_width", self.bin_width > 0), ("sigma", self.sigma >= 0), ("fmax", self.fmax > 0),
            ("steps", self.steps >= 0), ("n_best", self.n_best >= 0),
        ]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"bad option {name}={getattr(self, name)!r}")
        if self.min_distance is not None and not self.min_distance > 0:
            raise ValueError(f"bad option min_distance={self.min_distance!r}")


@dataclass
class SetResult:
    """Everything measured on one set of structures (guided, unguided or references).

    Attributes
    ----------
    label, path:
        Name of the set and where it was read from.
    structures:
        The structures after symmetrisation (all of them; masks select subsets).
    errors:
        ``(file, message)`` for unreadable inputs.
    masks:
        Boolean arrays over ``structures``: ``distance_ok``, ``unique``, ``novel``,
        ``final`` (all steps passed).
    columns:
        Per-structure values: descriptors, losses, energies, fronts, ... (arrays).
    counts:
        Structures surviving each step.
    config:
        The run configuration found in the run folder, if any.
    """

    label: str
    path: str
    structures: list[Atoms]
    errors: list[tuple[str, str]] = field(default_factory=list)
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    columns: dict[str, np.ndarray | list] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    config: dict | None = None

    def __len__(self) -> int:
        return len(self.structures)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per structure with every column and mask (for CSV / JSON)."""
        out = []
        for k, atoms in enumerate(self.structures):
            row: dict[str, Any] = {"index": k, "source": atoms.info.get("source", ""),
                                   "formula": atoms.get_chemical_formula(), "n_atoms": len(atoms)}
            for name, col in self.columns.items():
                row[name] = _plain(col[k])
            for name, mask in self.masks.items():
                row[name] = bool(mask[k])
            out.append(row)
        return out

    def final_structures(self) -> list[Atoms]:
        """The structures that passed every step, with their columns in ``info``."""
        rows = self.rows()
        out = []
        for k in np.flatnonzero(self.masks.get("final", np.ones(len(self), bool))):
            atoms = self.structures[k].copy()
            for key, value in rows[k].items():
                if value is not None and key not in ("formula",):
                    # extxyz-safe keys: "loss:CN(Co-O)" -> "loss_CN_Co-O"
                    atoms.info[re.sub(r"[^A-Za-z0-9_-]+", "_", key).strip("_")] = value
            out.append(atoms)
        return out


def _plain(value: Any) -> Any:
    """JSON-friendly scalar (``None`` for nan)."""
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    return value


@dataclass
class AnalysisResult:
    """Result of :func:`analyze`.

    Attributes
    ----------
    sets:
        ``{"guided": SetResult, "unguided": ..., "references": ...}`` (those given).
    summary:
        The JSON-ready summary (counts per step, satisfaction fractions, p-values,
        Pareto fronts, best candidates, warnings).
    objectives:
        The objectives used for steps 7–9.
    pareto:
        Points of the Pareto analysis: ``set``, ``index``, ``loss``, ``e_above_hull``,
        ``front`` arrays.
    """

    sets: dict[str, SetResult]
    summary: dict[str, Any]
    objectives: list[Any]
    pareto: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        return list(self.summary.get("warnings", []))

    def write_report(self, out_dir: str | os.PathLike, formats: Sequence[str] = ("html", "md")) -> dict[str, str]:
        """Write plots, tables, ``summary.json`` and the report; returns the paths.

        See :func:`aseguide.analysis.report.write_report`.
        """
        from aseguide.analysis.report import write_report

        return write_report(self, out_dir, formats=formats)


def _as_set(obj: Any, label: str) -> StructureSet:
    if obj is None:
        return StructureSet(label=label)
    if isinstance(obj, StructureSet):
        return obj
    if isinstance(obj, Atoms):
        return StructureSet([obj], label=label)
    if isinstance(obj, (str, os.PathLike)):
        return read_structures(obj)
    items = list(obj)
    if items and all(isinstance(a, Atoms) for a in items):
        return StructureSet(items, label=label)
    if items and all(isinstance(p, (str, os.PathLike)) for p in items):
        return read_structures(items)
    if not items:
        return StructureSet(label=label)
    raise TypeError(f"{label}: expected a path, a list of paths or a list of ase.Atoms, got {type(obj).__name__}")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = d
    return out


def compare_settings(guided: dict | None, unguided: dict | None) -> list[str]:
    """Differences between two run configurations outside the guidance settings.

    Returns one message per differing key (model, chemical system, atom counts,
    steps, ...); keys about guidance, objectives, seeds and output are ignored.

    Example
    -------
    >>> compare_settings({"model": "chemical_system", "seed": 1, "num_atoms": 12},
    ...                  {"model": "chemical_system", "seed": 2, "num_atoms": 16})
    ["setting 'num_atoms' differs: 12 (guided) vs 16 (unguided)"]
    """
    if not guided or not unguided:
        return []
    a, b = _flatten(guided), _flatten(unguided)
    out = []
    for key in sorted(set(a) | set(b)):
        if key.split(".")[0].lower() in _GUIDANCE_KEYS:
            continue
        if a.get(key, "<missing>") != b.get(key, "<missing>"):
            out.append(f"setting {key!r} differs: {a.get(key, '<missing>')!r} (guided) vs "
                       f"{b.get(key, '<missing>')!r} (unguided)")
    return out


def _objectives_from_config(config: dict | None) -> list[Any]:
    if not config:
        return []
    raw = config.get("objectives") or config.get("objective") or config.get("constraints") or []
    if isinstance(raw, dict):
        raw = [dict(v, name=v.get("name", k)) if isinstance(v, dict) else {} for k, v in raw.items()] \
            if all(isinstance(v, dict) for v in raw.values()) else [raw]
    out = []
    for item in raw if isinstance(raw, list) else []:
        obj = objective_from_dict(item) if isinstance(item, dict) else None
        if obj is not None:
            out.append(obj)
    return out


def _resolve_calculator(calculator: Any) -> tuple[Any, str | None]:
    if calculator is None:
        return None, None
    if isinstance(calculator, str):
        try:
            from aseguide.calculators import get_calculator
        except ImportError as exc:
            raise RuntimeError(f"calculator {calculator!r} requested but aseguide.calculators is not available "
                               f"({exc}); pass an ASE calculator object instead") from None
        return get_calculator(calculator), calculator
    return calculator, type(calculator).__name__


def _resolve_hull(hull: Any, hull_energy: str | None, system: str | None) -> tuple[Any, str | None]:
    if hull is None:
        return None, None
    if isinstance(hull, (str, os.PathLike)):
        if not os.path.exists(hull):
            raise FileNotFoundError(f"hull table not found: {os.fspath(hull)!r}")
        if hull_energy is None:
            raise ValueError(f"hull table {os.fspath(hull)!r} given without hull_energy= ('total', 'per_atom' or "
                             "'formation_per_atom'): a table cannot say which energies it holds")
        try:
            from aseguide.calculators import ReferenceHull
        except ImportError as exc:
            raise RuntimeError(f"hull table {os.fspath(hull)!r} needs aseguide.calculators.ReferenceHull, which is "
                               f"not available ({exc})") from None
        kwargs = {"chemical_system": system} if system else {}
        return ReferenceHull.from_table(os.fspath(hull), energy=hull_energy, **kwargs), os.fspath(hull)
    if not hasattr(hull, "e_above_hull"):
        raise TypeError(f"hull must have an e_above_hull(atoms, energy_per_atom) method, got {type(hull).__name__}")
    return hull, type(hull).__name__


def _fractions(sat: np.ndarray, ok: np.ndarray, final: np.ndarray) -> dict[str, Any]:
    n = len(sat)
    k_raw = int(sat.sum())
    k_clean = int((sat & ok).sum())
    n_final = int(final.sum())
    k_final = int((sat & final).sum())
    return {
        "n": n, "k_raw": k_raw, "raw": k_raw / n if n else None,
        "k_clean": k_clean, "clean": k_clean / n if n else None,
        "n_final": n_final, "k_final": k_final, "final": k_final / n_final if n_final else None,
    }


def analyze(
    run: Any,
    *,
    compare: Any = None,
    references: Any = None,
    objectives: Sequence[Any] | None = None,
    calculator: Any = None,
    hull: Any = None,
    options: AnalysisOptions | None = None,
    log: Callable[[str], None] | None = None,
    hull_energy: str | None = None,
    hull_system: str | None = "auto",
    **option_overrides: Any,
) -> AnalysisResult:
    """Run the validation pipeline on a run, optionally against a baseline and references.

    Parameters
    ----------
    run:
        The (guided) structures: a run folder, any folder or file of structures, a
        list of paths, a :class:`StructureSet` or a list of ``ase.Atoms``.
    compare:
        The unguided baseline, in the same forms; enables the z-tests.
    references:
        Known structures (novelty, reference distributions, reference hull).
    objectives:
        Objects with ``descriptor`` / ``loss`` / ``satisfied`` (hard ones from this
        package or ``aseguide.constraints`` objectives). Default: those described in
        the run's configuration, else none (volume per atom is always reported).
    calculator:
        An ASE calculator, or a name for ``aseguide.calculators.get_calculator``.
        Without one, energies stored in ``atoms.info["energy_per_atom"]`` (or an
        extxyz ``energy``) are used when present.
    hull:
        An object with ``e_above_hull(atoms, energy_per_atom)``, or a table file for
        ``aseguide.calculators.ReferenceHull.from_table``. Default: the hull of the
        references' energies (computed with the same calculator).
    hull_energy:
        With a table file: ``"total"``, ``"per_atom"`` or ``"formation_per_atom"``.
    hull_system:
        With a table file: keep only its rows inside this chemical system (e.g.
        ``"Li-Co-O"``); ``"auto"`` (default): the elements of the generated
        structures; ``None``: the whole table.
    options:
        :class:`AnalysisOptions`; keyword arguments override single fields.
    log:
        Called with progress messages (e.g. ``print``).

    Returns
    -------
    AnalysisResult

    Raises
    ------
    ValueError
        Bad options, an empty input, a run without any readable structure.
    FileNotFoundError
        A path that does not exist.

    Example
    -------
    >>> from ase.build import bulk
    >>> res = analyze([bulk("Si"), bulk("Si"), bulk("Ge")], log=None)
    >>> res.summary["sets"]["guided"]["counts"]["unique"]
    2
    """
    opts = options or AnalysisOptions()
    if option_overrides:
        unknown = sorted(set(option_overrides) - set(AnalysisOptions.__dataclass_fields__))
        if unknown:
            raise TypeError(f"unknown option(s) {unknown}")
        opts = AnalysisOptions(**{**asdict(opts), **option_overrides})
    opts.validate()
    say = log or (lambda message: None)
    notes: list[str] = []

    calc, calc_name = _resolve_calculator(calculator)
    if hull is not None and not hasattr(hull, "e_above_hull") and not isinstance(hull, (str, os.PathLike)):
        raise TypeError(f"hull must have an e_above_hull(atoms, energy_per_atom) method, got {type(hull).__name__}")
    if isinstance(hull, (str, os.PathLike)) and not os.path.exists(hull):
        raise FileNotFoundError(f"hull table not found: {os.fspath(hull)!r}")

    inputs = {"guided": run, "unguided": compare, "references": references}
    raw_sets: dict[str, StructureSet] = {}
    for label, value in inputs.items():
        if value is None:
            continue
        say(f"[1/9] reading {label} ...")
        s = _as_set(value, label)
        raw_sets[label] = s
        for source, message in s.errors:
            notes.append(f"{label}: could not read {source}: {message}")
        if len(s) == 0 and label != "references":
            problem = "; ".join(f"{src}: {msg}" for src, msg in s.errors[:3]) or "no structures"
            raise ValueError(f"{label} input {_path_of(value)!r} has no readable structure ({problem})")
    if hull_system == "auto":
        elements = sorted({s for lab in ("guided", "unguided") if lab in raw_sets
                           for a in raw_sets[lab] for s in a.get_chemical_symbols()})
        hull_system = "-".join(elements) or None
    hull_obj, hull_name = _resolve_hull(hull, hull_energy, hull_system)
    if "references" in raw_sets and len(raw_sets["references"]) == 0:
        notes.append("references: no readable structure; novelty and reference hull skipped")
        del raw_sets["references"]

    # objectives
    objs = list(objectives) if objectives is not None else _objectives_from_config(raw_sets["guided"].config)
    if objectives is None and objs:
        notes.append("objectives taken from the run configuration: " + ", ".join(objective_name(o) for o in objs))
    if "unguided" in raw_sets:
        for message in compare_settings(raw_sets["guided"].config, raw_sets["unguided"].config):
            notes.append("--compare: " + message)
        eg = {s for a in raw_sets["guided"] for s in a.get_chemical_symbols()}
        eu = {s for a in raw_sets["unguided"] for s in a.get_chemical_symbols()}
        if eg != eu:
            notes.append(f"--compare: the runs contain different elements: {sorted(eg)} (guided) vs "
                         f"{sorted(eu)} (unguided)")

    sets: dict[str, SetResult] = {}
    for label, s in raw_sets.items():
        path = s.label if isinstance(inputs[label], StructureSet) else _path_of(inputs[label])
        sets[label] = SetResult(label=label, path=path, structures=list(s.structures), errors=list(s.errors),
                                config=s.config)
        sets[label].counts["read"] = len(s)
        sets[label].counts["unreadable"] = len(s.errors)

    generated = [lab for lab in ("guided", "unguided") if lab in sets]

    # 2. symmetrise
    for label in generated:
        res = sets[label]
        if opts.symmetrize:
            say(f"[2/9] symmetrising {label} ({len(res)} structures, symprec {opts.symprec}) ...")
            res.structures = symmetrize(res.structures, symprec=opts.symprec,
                                        angle_tolerance=opts.angle_tolerance, primitive=opts.primitive)
        else:
            for a in res.structures:
                d = _dataset(a, 1e-3, opts.angle_tolerance)
                a.info["spacegroup_before"] = a.info["spacegroup_after"] = 0 if d is None else int(d.number)
                a.info["spacegroup_symbol"] = "?" if d is None else str(d.international)
        before = np.array([a.info["spacegroup_before"] for a in res.structures])
        after = np.array([a.info["spacegroup_after"] for a in res.structures])
        res.columns["spacegroup_before"] = before
        res.columns["spacegroup_after"] = after
        res.columns["spacegroup_symbol"] = [a.info["spacegroup_symbol"] for a in res.structures]
        res.counts["symmetrised"] = len(res)
        res.counts["symmetry_raised"] = int((after > before).sum())
    if "references" in sets:
        ref = sets["references"]
        sg = [_dataset(a, opts.symprec, opts.angle_tolerance) for a in ref.structures]
        ref.columns["spacegroup_after"] = np.array([0 if d is None else int(d.number) for d in sg])
        ref.columns["spacegroup_symbol"] = ["?" if d is None else str(d.international) for d in sg]

    # 3. screening
    for label in generated:
        res = sets[label]
        say(f"[3/9] screening short distances in {label} ...")
        scr = screen_distances(res.structures, factor=opts.distance_factor, thresholds=opts.pair_thresholds,
                               min_distance=opts.min_distance)
        res.masks["distance_ok"] = scr.ok
        res.columns["min_distance"] = scr.min_distance
        res.columns["min_distance_ratio"] = scr.min_ratio
        res.columns["closest_pair"] = scr.worst_pair
        res.counts["distance_ok"] = int(scr.ok.sum())

    # references: energy cutoff before novelty
    if "references" in sets and opts.reference_max_e_above_hull is not None:
        ref = sets["references"]
        kept, ehull_db = filter_references(ref.structures, opts.reference_max_e_above_hull)
        keep = ~(ehull_db > opts.reference_max_e_above_hull)
        ref.masks["within_energy_cutoff"] = keep
        ref.columns["e_above_hull_db"] = ehull_db
        ref.counts["within_energy_cutoff"] = int(keep.sum())
        if np.isnan(ehull_db).all():
            notes.append("references: no stored energy to apply the energy cutoff; all references kept")
    ref_mask = None
    if "references" in sets:
        ref_mask = sets["references"].masks.get("within_energy_cutoff", np.ones(len(sets["references"]), bool))

    # 4, 5. fingerprints, dedup, novelty
    all_structs = [a for lab in sets for a in sets[lab].structures]
    species = _species_of(all_structs)
    fp_kwargs = {"species": species, "r_max": opts.r_max, "bin_width": opts.bin_width, "sigma": opts.sigma}
    ref_fp = None
    if "references" in sets:
        say(f"[4/9] fingerprints of {len(sets['references'])} references ...")
        ref_fp = rdf_fingerprints(sets["references"].structures, **fp_kwargs)
    for label in generated:
        res = sets[label]
        ok = res.masks["distance_ok"]
        unique = np.zeros(len(res), bool)
        duplicate_of = -np.ones(len(res), np.int64)
        idx = np.flatnonzero(ok)
        fp = None
        if len(idx):
            say(f"[4/9] deduplicating {label} ({len(idx)} structures) ...")
            fp = rdf_fingerprints([res.structures[k] for k in idx], **fp_kwargs)
            if opts.structure_matcher:
                d = deduplicate([res.structures[k] for k in idx], threshold=opts.similarity_threshold,
                                same_composition=opts.same_composition, structure_matcher=True, **fp_kwargs)
            else:
                d = deduplicate(fp, threshold=opts.similarity_threshold, same_composition=opts.same_composition)
            unique[idx] = d.keep
            duplicate_of[idx] = np.where(d.duplicate_of >= 0, idx[np.maximum(d.duplicate_of, 0)], -1)
        res.masks["unique"] = unique
        res.columns["duplicate_of"] = duplicate_of
        res.counts["unique"] = int(unique.sum())
        novel = unique.copy()
        nearest = -np.ones(len(res), np.int64)
        ref_sim = np.full(len(res), np.nan)
        if ref_fp is not None and unique.any():
            say(f"[5/9] novelty of {label} against {int(ref_mask.sum())} references ...")
            uidx = np.flatnonzero(unique)
            sub = fp.matrix[np.searchsorted(idx, uidx)]
            from aseguide.analysis.fingerprint import Fingerprints

            fpu = Fingerprints(matrix=sub, species=fp.species, pairs=fp.pairs,
                               compositions=[fp.compositions[j] for j in np.searchsorted(idx, uidx)],
                               r_max=fp.r_max, bin_width=fp.bin_width, sigma=fp.sigma)
            rsel = np.flatnonzero(ref_mask)
            fpr = Fingerprints(matrix=ref_fp.matrix[rsel], species=ref_fp.species, pairs=ref_fp.pairs,
                               compositions=[ref_fp.compositions[j] for j in rsel], r_max=ref_fp.r_max,
                               bin_width=ref_fp.bin_width, sigma=ref_fp.sigma)
            nov = novelty(fpu, fpr, threshold=opts.similarity_threshold, same_composition=opts.same_composition)
            novel[uidx] = nov.novel
            nearest[uidx] = np.where(nov.nearest >= 0, rsel[np.maximum(nov.nearest, 0)], -1)
            ref_sim[uidx] = nov.similarity
            res.counts["novel"] = int(novel.sum())
        res.masks["novel"] = novel
        res.masks["final"] = novel.copy()
        res.columns["nearest_reference"] = nearest
        res.columns["reference_similarity"] = ref_sim
        res.counts["final"] = int(novel.sum())

    # 6. energies and hull
    energy_source = None
    if calc is not None:
        energy_source = f"calculator {calc_name}" + (" (relaxed)" if opts.relax else " (no relaxation)")
    for label, res in sets.items():
        energies = np.full(len(res), np.nan)
        if calc is not None:
            todo = np.flatnonzero(res.masks["final"]) if label != "references" else np.flatnonzero(ref_mask)
            say(f"[6/9] energies of {len(todo)} {label} structures with {calc_name} ...")
            energies[todo] = compute_energies([res.structures[k] for k in todo], calc, relax=opts.relax,
                                              fmax=opts.fmax, steps=opts.steps)
        else:
            energies = stored_energies(res.structures)
            if np.isfinite(energies).any() and energy_source is None:
                energy_source = "stored in the input files (atoms.info['energy_per_atom'] or extxyz energy)"
        res.columns["energy_per_atom"] = energies
        counted = res.masks["final"] if label != "references" else ref_mask
        res.counts["with_energy"] = int(np.isfinite(energies[counted]).sum())
    hull_source = hull_name
    if hull_obj is None and "references" in sets:
        ref = sets["references"]
        e = np.where(ref_mask, ref.columns["energy_per_atom"], np.nan)
        if np.isfinite(e).any():
            try:
                hull_obj = PhaseDiagramHull.from_structures(ref.structures, e)
                hull_source = "hull of the references' energies (same energy source)"
            except Exception as exc:  # noqa: BLE001 - e.g. an element without a reference
                notes.append(f"cannot build a hull from the references: {exc}")
    for label, res in sets.items():
        eh = np.full(len(res), np.nan)
        problems: list[str | None] = [None] * len(res)
        if hull_obj is not None:
            say(f"[6/9] energies above hull of {label} ...")
            eh, problems = energies_above_hull(res.structures, res.columns["energy_per_atom"], hull_obj)
            flagged = [k for k, p in enumerate(problems) if p and p != "no energy"]
            if flagged:
                notes.append(f"{label}: {len(flagged)} structure(s) could not be placed on the hull, e.g. "
                             f"{res.structures[flagged[0]].get_chemical_formula()}: {problems[flagged[0]]} "
                             "(flagged, kept)")
        res.columns["e_above_hull"] = eh
        res.columns["hull_problem"] = problems
        if label != "references":
            res.counts["with_e_above_hull"] = int(np.isfinite(eh[res.masks["final"]]).sum())

    # 7. descriptors
    for label, res in sets.items():
        say(f"[7/9] descriptors of {label} ...")
        res.columns["volume_per_atom"] = volume_per_atom(res.structures)
        if objs:
            ev = evaluate_objectives(res.structures, objs)
            for name, values in ev.items():
                res.columns[f"{name}"] = values["descriptor"]
                res.columns[f"loss:{name}"] = values["loss"]
                res.masks[f"satisfied:{name}"] = values["satisfied"]
            res.columns["loss"] = combined_loss(ev)
            all_sat = np.all(np.stack([v["satisfied"] for v in ev.values()]), axis=0)
            res.masks["satisfied:all"] = all_sat
        else:
            stored = np.array([_to_float(a.info.get("loss")) for a in res.structures])
            res.columns["loss"] = stored
    obj_names = list(evaluate_objectives([], objs).keys()) if objs else []

    # 8. statistics
    satisfaction: dict[str, dict[str, Any]] = {}
    tests: dict[str, dict[str, Any]] = {}
    keys = [*obj_names, "all"] if len(obj_names) > 1 else obj_names
    for name in keys:
        satisfaction[name] = {}
        for label in generated:
            res = sets[label]
            satisfaction[name][label] = _fractions(res.masks[f"satisfied:{name}"], res.masks["distance_ok"],
                                                   res.masks["final"])
        if "references" in sets:
            sat = sets["references"].masks[f"satisfied:{name}"]
            satisfaction[name]["references"] = {"n": len(sat), "k_raw": int(sat.sum()),
                                                "raw": float(sat.mean()) if len(sat) else None}
        if "unguided" in sets:
            tests[name] = {}
            g, u = satisfaction[name]["guided"], satisfaction[name]["unguided"]
            for kind, kg, ng, ku, nu in (("raw", g["k_raw"], g["n"], u["k_raw"], u["n"]),
                                          ("clean", g["k_clean"], g["n"], u["k_clean"], u["n"]),
                                          ("final", g["k_final"], g["n_final"], u["k_final"], u["n_final"])):
                if ng and nu:
                    z, p = two_proportion_ztest(kg, ng, ku, nu)
                    tests[name][kind] = {"z": z, "p_value": p, "significant": bool(p < 0.05)}
                else:
                    tests[name][kind] = {"z": None, "p_value": None, "significant": False}

    # 9. Pareto fronts over all sets (final generated structures and kept references)
    p_set, p_idx, p_loss, p_eh = [], [], [], []
    for label, res in sets.items():
        mask = res.masks.get("final", ref_mask if label == "references" else None)
        if mask is None:
            continue
        loss = np.asarray(res.columns["loss"], float)
        eh = np.asarray(res.columns["e_above_hull"], float)
        for k in np.flatnonzero(mask & np.isfinite(loss) & np.isfinite(eh)):
            p_set.append(label)
            p_idx.append(int(k))
            p_loss.append(loss[k])
            p_eh.append(eh[k])
    fronts = pareto_fronts(np.column_stack([p_loss, p_eh]) if p_loss else np.zeros((0, 2)))
    for res in sets.values():
        res.columns["pareto_front"] = np.zeros(len(res), np.int64)
    for label, k, f in zip(p_set, p_idx, fronts):
        sets[label].columns["pareto_front"][k] = f
    pareto = {"set": np.array(p_set, dtype=object), "index": np.array(p_idx, dtype=np.int64),
              "loss": np.array(p_loss, float), "e_above_hull": np.array(p_eh, float), "front": fronts}

    # best candidates: generated structures of the final set, by front, loss, E_hull
    best = []
    for label in generated:
        res = sets[label]
        loss = np.asarray(res.columns["loss"], float)
        eh = np.asarray(res.columns["e_above_hull"], float)
        front = res.columns["pareto_front"]
        for k in np.flatnonzero(res.masks["final"]):
            best.append((front[k] if front[k] > 0 else 10**9, _nan_last(loss[k]), _nan_last(eh[k]), label, k))
    best.sort(key=lambda t: t[:3])
    candidates = []
    for _, _, _, label, k in best[:opts.n_best]:
        res = sets[label]
        a = res.structures[k]
        candidates.append({
            "set": label, "index": int(k), "source": a.info.get("source", ""),
            "formula": a.get_chemical_formula(), "n_atoms": len(a),
            "spacegroup": f"{res.columns['spacegroup_symbol'][k]} ({int(res.columns['spacegroup_after'][k])})",
            "loss": _plain(res.columns["loss"][k]), "e_above_hull": _plain(res.columns["e_above_hull"][k]),
            "pareto_front": int(res.columns["pareto_front"][k]),
            "reference_similarity": _plain(res.columns["reference_similarity"][k]),
        })

    for message in notes:
        warnings.warn(message, stacklevel=2)

    from aseguide import __version__

    summary: dict[str, Any] = {
        "aseguide_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "options": _plain_tree(asdict(opts)),
        "objectives": [_objective_record(o, n) for o, n in zip(objs, obj_names)],
        "sets": {label: {"path": res.path, "counts": dict(res.counts), "n_errors": len(res.errors),
                         "errors": [f"{s}: {m}" for s, m in res.errors[:50]]}
                 for label, res in sets.items()},
        "satisfaction": satisfaction,
        "tests": tests,
        "energy": {"source": energy_source, "hull": hull_source, "calculator": calc_name},
        "pareto": {"n_points": int(len(fronts)), "n_fronts": int(fronts.max()) if len(fronts) else 0,
                   "front_sizes": [int((fronts == f).sum()) for f in range(1, (int(fronts.max()) if len(fronts) else 0) + 1)],
                   "loss": "norm of the objective losses" if objs else "atoms.info['loss'] of the run"},
        "best_candidates": candidates,
        "warnings": notes,
    }
    return AnalysisResult(sets=sets, summary=_plain_tree(summary), objectives=objs, pareto=pareto)


def _nan_last(x: float) -> float:
    return x if math.isfinite(x) else math.inf


def _to_float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _objective_record(obj: Any, name: str) -> dict[str, Any]:
    rec: dict[str, Any] = {"name": name}
    try:
        d = obj.todict()
        if isinstance(d, dict):
            rec["params"] = _plain_tree(d)
    except Exception:  # noqa: BLE001
        pass
    target = getattr(obj, "target", None)
    if target is not None:
        rec["target"] = _plain_tree(target)
    tol = getattr(obj, "tolerance", None)
    if tol is not None:
        rec["tolerance"] = _plain(tol)
    rec["kind"] = "volume" if isinstance(obj, VolumePerAtomTarget) else type(obj).__name__
    return rec


def _plain_tree(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain_tree(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain_tree(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_plain_tree(v) for v in x.tolist()]
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        try:
            return _plain(x.tolist())
        except Exception:  # noqa: BLE001
            return str(x)
    return _plain(x)


def _path_of(value: Any) -> str:
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, StructureSet):
        return value.label
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, os.PathLike)) for v in value):
        return ", ".join(os.fspath(v) for v in value)
    return "<structures given in Python>"
