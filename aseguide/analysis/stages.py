"""The stages of the validation pipeline, one function each (composed by :func:`analyze`).

Each stage reads and fills the :class:`~aseguide.analysis.results.SetResult` of the
sets it works on (masks, columns, counts) and appends readable notes:

1. the inputs (:mod:`aseguide.analysis.inputs`): read structures and settle the
   objectives;
2. :func:`symmetrize_sets`: symmetrise with spglib;
3. :func:`screen_sets`: screen short interatomic distances;
   :func:`filter_reference_energies`: references within an energy cutoff;
4, 5. :func:`deduplicate_and_compare`: RDF-fingerprint duplicates, novelty against
   the references;
6. :func:`compute_set_energies`, :func:`reference_hull`, :func:`hull_distances`:
   energies and energy above the hull;
7. :func:`describe_sets`: descriptors of the objectives;
8. :func:`satisfaction_tests`: satisfaction fractions and one-sided two-proportion
   z-tests guided vs unguided;
9. :func:`pareto_analysis`, :func:`best_candidates`: Pareto fronts of (loss, energy
   above hull) and the best candidates; :func:`summarize` the JSON-ready summary.

Examples
--------
>>> import numpy as np
>>> from ase.build import bulk
>>> from aseguide.analysis.results import SetResult
>>> sets = {"guided": SetResult("guided", "-", [bulk("Si"), bulk("Si", cubic=True)])}
>>> screen_sets(sets, ["guided"], AnalysisOptions(), say=lambda message: None)
>>> sets["guided"].counts["distance_ok"]
2
"""

from __future__ import annotations

import datetime as _dt
import math
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

from aseguide.analysis.descriptors import (
    HardView,
    combined_loss,
    evaluate_objectives,
    volume_per_atom,
)
from aseguide.analysis.energy import (
    PhaseDiagramHull,
    cluster_energies,
    compute_energies,
    energies_above_hull,
    filter_references,
    stored_energies,
)
from aseguide.analysis.fingerprint import Fingerprints, _species_of, deduplicate, novelty, rdf_fingerprints
from aseguide.analysis.options import AnalysisOptions
from aseguide.analysis.pareto import pareto_fronts
from aseguide.analysis.results import SetResult, _plain, _plain_tree
from aseguide.analysis.screening import screen_distances
from aseguide.analysis.stats import two_proportion_ztest
from aseguide.analysis.symmetry import _dataset, symmetrize
from aseguide.constraints.base import ObjectiveProtocol

__all__ = [
    "symmetrize_sets",
    "screen_sets",
    "filter_reference_energies",
    "deduplicate_and_compare",
    "compute_set_energies",
    "reference_hull",
    "hull_distances",
    "describe_sets",
    "satisfaction_tests",
    "pareto_analysis",
    "best_candidates",
    "summarize",
]



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
    rec["kind"] = _kind(obj)
    return rec


def _kind(obj: Any) -> str:
    """``volume``, ``HardCoordination`` (hard views) or the objective's class name."""
    if isinstance(obj, HardView):
        return "volume" if obj.name == "volume_per_atom" else "HardCoordination"
    return type(obj).__name__


# ---------------------------------------------------------------------------- step 2: symmetry
def symmetrize_sets(sets: dict[str, SetResult], generated: list[str], opts: AnalysisOptions,
                    say: Callable[[str], None]) -> None:
    """Step 2: symmetrise the generated sets (or only read their space groups)."""
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


# ---------------------------------------------------------------------------- step 3: screening
def screen_sets(sets: dict[str, SetResult], generated: list[str], opts: AnalysisOptions,
                say: Callable[[str], None]) -> None:
    """Step 3: mask the generated structures with short interatomic distances."""
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


def filter_reference_energies(sets: dict[str, SetResult], opts: AnalysisOptions,
                              notes: list[str]) -> np.ndarray | None:
    """References kept for novelty and the hull (energy cutoff); ``None`` without references."""
    if "references" in sets and opts.reference_max_e_above_hull is not None:
        ref = sets["references"]
        kept, ehull_db = filter_references(ref.structures, opts.reference_max_e_above_hull)
        keep = ~(ehull_db > opts.reference_max_e_above_hull)
        ref.masks["within_energy_cutoff"] = keep
        ref.columns["e_above_hull_db"] = ehull_db
        ref.counts["within_energy_cutoff"] = int(keep.sum())
        if np.isnan(ehull_db).all():
            notes.append("references: no stored energy to apply the energy cutoff; all references kept")
    if "references" not in sets:
        return None
    return sets["references"].masks.get("within_energy_cutoff", np.ones(len(sets["references"]), bool))


# ---------------------------------------------------------------------------- steps 4, 5: fingerprints
def _subset(fp: Fingerprints, rows: np.ndarray) -> Fingerprints:
    return Fingerprints(matrix=fp.matrix[rows], species=fp.species, pairs=fp.pairs,
                        compositions=[fp.compositions[j] for j in rows], r_max=fp.r_max,
                        bin_width=fp.bin_width, sigma=fp.sigma)


def deduplicate_and_compare(sets: dict[str, SetResult], generated: list[str], ref_mask: np.ndarray | None,
                            opts: AnalysisOptions, say: Callable[[str], None]) -> None:
    """Steps 4 and 5: unique structures of each generated set, and novel ones against the references."""
    all_structs = [a for lab in sets for a in sets[lab].structures]
    fp_kwargs = {"species": _species_of(all_structs), "r_max": opts.r_max, "bin_width": opts.bin_width,
                 "sigma": opts.sigma}
    ref_fp = None
    if "references" in sets:
        say(f"[4/9] fingerprints of {len(sets['references'])} references ...")
        ref_fp = rdf_fingerprints(sets["references"].structures, **fp_kwargs)
    for label in generated:
        res = sets[label]
        idx = np.flatnonzero(res.masks["distance_ok"])
        unique = np.zeros(len(res), bool)
        duplicate_of = -np.ones(len(res), np.int64)
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
        _novelty(res, label, idx, fp, ref_fp, ref_mask, opts, say)


def _novelty(res: SetResult, label: str, idx: np.ndarray, fp: Fingerprints | None, ref_fp: Fingerprints | None,
             ref_mask: np.ndarray | None, opts: AnalysisOptions, say: Callable[[str], None]) -> None:
    unique = res.masks["unique"]
    novel = unique.copy()
    nearest = -np.ones(len(res), np.int64)
    ref_sim = np.full(len(res), np.nan)
    if ref_fp is not None and unique.any():
        say(f"[5/9] novelty of {label} against {int(ref_mask.sum())} references ...")
        uidx = np.flatnonzero(unique)
        rsel = np.flatnonzero(ref_mask)
        nov = novelty(_subset(fp, np.searchsorted(idx, uidx)), _subset(ref_fp, rsel),
                      threshold=opts.similarity_threshold, same_composition=opts.same_composition)
        novel[uidx] = nov.novel
        nearest[uidx] = np.where(nov.nearest >= 0, rsel[np.maximum(nov.nearest, 0)], -1)
        ref_sim[uidx] = nov.similarity
        res.counts["novel"] = int(novel.sum())
    res.masks["novel"] = novel
    res.masks["final"] = novel.copy()
    res.columns["nearest_reference"] = nearest
    res.columns["reference_similarity"] = ref_sim
    res.counts["final"] = int(novel.sum())


# ---------------------------------------------------------------------------- step 6: energies
def compute_set_energies(sets: dict[str, SetResult], calc: Any, calc_name: str | None,
                         ref_mask: np.ndarray | None, opts: AnalysisOptions,
                         say: Callable[[str], None], cluster: Any = None, calc_source: Any = None) -> str | None:
    """Step 6a: energies per atom (calculator, else stored ones); returns their source.

    With a ``cluster`` setting other than ``local`` (:mod:`aseguide.runs.cluster`), the
    calculator's energies are computed by Ray workers (one calculator each, built once
    for all sets, from ``calc_source``: a name, built on each worker's device, or by
    default ``calc`` itself, sent to them): the same values as here.
    """
    from aseguide.runs.cluster import WorkerPool, parse_cluster

    energy_source = None
    if calc is not None:
        energy_source = f"calculator {calc_name}" + (" (relaxed)" if opts.relax else " (no relaxation)")
    settings = parse_cluster(cluster)
    pool = None
    if calc is not None and not settings.is_local:
        from aseguide.analysis.energy import EnergyWorker

        pool = WorkerPool(EnergyWorker, settings, (calc if calc_source is None else calc_source,),
                          name="aseguide-energies")
    try:
        for label, res in sets.items():
            energies = np.full(len(res), np.nan)
            if calc is not None:
                todo = np.flatnonzero(res.masks["final"]) if label != "references" else np.flatnonzero(ref_mask)
                where = " on the Ray cluster" if pool is not None else ""
                say(f"[6/9] energies of {len(todo)} {label} structures with {calc_name}{where} ...")
                chosen = [res.structures[k] for k in todo]
                if pool is not None:
                    energies[todo] = cluster_energies(chosen, calc, cluster, relax=opts.relax, fmax=opts.fmax,
                                                      steps=opts.steps, pool=pool)
                else:
                    energies[todo] = compute_energies(chosen, calc, relax=opts.relax, fmax=opts.fmax,
                                                      steps=opts.steps)
            else:
                energies = stored_energies(res.structures)
                if np.isfinite(energies).any() and energy_source is None:
                    energy_source = "stored in the input files (atoms.info['energy_per_atom'] or extxyz energy)"
            res.columns["energy_per_atom"] = energies
            counted = res.masks["final"] if label != "references" else ref_mask
            res.counts["with_energy"] = int(np.isfinite(energies[counted]).sum())
    finally:
        if pool is not None:
            pool.close()
    return energy_source


def reference_hull(sets: dict[str, SetResult], hull_obj: Any, hull_name: str | None,
                   ref_mask: np.ndarray | None, notes: list[str]) -> tuple[Any, str | None]:
    """The hull given, else the hull of the references' energies (when they have some)."""
    if hull_obj is not None or "references" not in sets:
        return hull_obj, hull_name
    ref = sets["references"]
    e = np.where(ref_mask, ref.columns["energy_per_atom"], np.nan)
    if np.isfinite(e).any():
        try:
            return (PhaseDiagramHull.from_structures(ref.structures, e),
                    "hull of the references' energies (same energy source)")
        except Exception as exc:  # noqa: BLE001 - e.g. an element without a reference
            notes.append(f"cannot build a hull from the references: {exc}")
    return None, hull_name


def hull_distances(sets: dict[str, SetResult], hull_obj: Any, notes: list[str],
                   say: Callable[[str], None]) -> None:
    """Step 6b: energy above the hull of every structure (``nan`` without a hull)."""
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


# ---------------------------------------------------------------------------- step 7: descriptors
def describe_sets(sets: dict[str, SetResult], objs: list[ObjectiveProtocol], say: Callable[[str], None]) -> list[str]:
    """Step 7: descriptors, losses and satisfaction of the objectives; returns their names."""
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
    return list(evaluate_objectives([], objs).keys()) if objs else []


# ---------------------------------------------------------------------------- step 8: statistics
def satisfaction_tests(sets: dict[str, SetResult], generated: list[str],
                       obj_names: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Step 8: satisfaction fractions per set, and z-tests guided vs unguided."""
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
            tests[name] = _ztests(satisfaction[name]["guided"], satisfaction[name]["unguided"])
    return satisfaction, tests


def _ztests(g: dict[str, Any], u: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for kind, kg, ng, ku, nu in (("raw", g["k_raw"], g["n"], u["k_raw"], u["n"]),
                                  ("clean", g["k_clean"], g["n"], u["k_clean"], u["n"]),
                                  ("final", g["k_final"], g["n_final"], u["k_final"], u["n_final"])):
        if ng and nu:
            z, p = two_proportion_ztest(kg, ng, ku, nu)
            out[kind] = {"z": z, "p_value": p, "significant": bool(p < 0.05)}
        else:
            out[kind] = {"z": None, "p_value": None, "significant": False}
    return out


# ---------------------------------------------------------------------------- step 9: Pareto
def pareto_analysis(sets: dict[str, SetResult], ref_mask: np.ndarray | None) -> dict[str, np.ndarray]:
    """Step 9: Pareto fronts of (loss, energy above hull) over all sets ranked together."""
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
    return {"set": np.array(p_set, dtype=object), "index": np.array(p_idx, dtype=np.int64),
            "loss": np.array(p_loss, float), "e_above_hull": np.array(p_eh, float), "front": fronts}


def best_candidates(sets: dict[str, SetResult], generated: list[str], n_best: int) -> list[dict[str, Any]]:
    """The final generated structures, best first: by front, loss, energy above hull."""
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
    for _, _, _, label, k in best[:n_best]:
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
    return candidates


# ---------------------------------------------------------------------------- summary
def summarize(sets: dict[str, SetResult], opts: AnalysisOptions, objs: list[Any], obj_names: list[str],
              satisfaction: dict[str, Any], tests: dict[str, Any], energy: dict[str, str | None],
              pareto: dict[str, np.ndarray], candidates: list[dict[str, Any]], notes: list[str]) -> dict[str, Any]:
    """The JSON-ready summary of an analysis (``None`` for undefined numbers)."""
    fronts = pareto["front"]
    n_fronts = int(fronts.max()) if len(fronts) else 0
    summary: dict[str, Any] = {
        "aseguide_version": sys.modules["aseguide"].__version__,  # the package root, always imported
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "options": _plain_tree(asdict(opts)),
        "objectives": [_objective_record(o, n) for o, n in zip(objs, obj_names)],
        "sets": {label: {"path": res.path, "counts": dict(res.counts), "n_errors": len(res.errors),
                         "errors": [f"{s}: {m}" for s, m in res.errors[:50]]}
                 for label, res in sets.items()},
        "satisfaction": satisfaction,
        "tests": tests,
        "energy": energy,
        "pareto": {"n_points": int(len(fronts)), "n_fronts": n_fronts,
                   "front_sizes": [int((fronts == f).sum()) for f in range(1, n_fronts + 1)],
                   "loss": "norm of the objective losses" if objs else "atoms.info['loss'] of the run"},
        "best_candidates": candidates,
        "warnings": notes,
    }
    return _plain_tree(summary)
