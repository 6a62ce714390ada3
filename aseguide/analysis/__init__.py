"""Validation pipeline, statistics, plots and report of generated crystals.

Each step is a function usable on its own, on lists of :class:`ase.Atoms`:

=====  ======================================  ==========================================
step   function                                 what
=====  ======================================  ==========================================
1      :func:`read_structures`                  extxyz, CIF, traj, POSCAR, zip, CSV, runs
2      :func:`symmetrize`                       spglib, space group before / after
3      :func:`screen_distances`                 short contacts vs covalent radii
4      :func:`rdf_fingerprints`,                Valle–Oganov RDF fingerprints, cosine
       :func:`deduplicate`                      similarity, optional StructureMatcher
5      :func:`novelty`, :func:`filter_references`  against reference structures
6      :func:`compute_energies`,                any ASE calculator; any hull object
       :func:`energies_above_hull`
7      :func:`evaluate_objectives`,             hard coordination counts, volume per atom
       :class:`HardView`                        (the constraints' objectives, hard descriptors)
8      :func:`two_proportion_ztest`, :func:`kde`  statistics
9      :func:`pareto_fronts`                    numbered non-dominated fronts
=====  ======================================  ==========================================

:func:`analyze` runs them all and :meth:`AnalysisResult.write_report` writes the
report (``aseguide analyze`` on the command line).

Examples
--------
>>> from aseguide.analysis import pareto_fronts, two_proportion_ztest
>>> pareto_fronts([[0.0, 0.2], [0.1, 0.1], [0.2, 0.2]]).tolist()
[1, 1, 2]
>>> z, p = two_proportion_ztest(30, 50, 18, 50)
>>> round(p, 4)
0.0082
"""

from aseguide.analysis.descriptors import (
    HardCoordination,
    HardView,
    VolumePerAtomTarget,
    combined_loss,
    coordination_numbers,
    default_cutoff,
    evaluate_objectives,
    hard_objective,
    mean_coordination,
    parse_objective,
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
    DedupResult,
    Fingerprints,
    NoveltyResult,
    deduplicate,
    novelty,
    rdf_fingerprints,
    similarity_matrix,
)
from aseguide.analysis.inputs import compare_settings
from aseguide.analysis.io import StructureSet, read_run_config, read_structures
from aseguide.analysis.options import AnalysisOptions
from aseguide.analysis.pareto import dominates, pareto_fronts
from aseguide.analysis.pipeline import analyze
from aseguide.analysis.results import AnalysisResult, SetResult
from aseguide.analysis.screening import (
    DEFAULT_DISTANCE_FACTOR,
    DistanceScreen,
    pair_threshold,
    screen_distances,
)
from aseguide.analysis.stats import KDEResult, histogram, kde, silverman_factor, two_proportion_ztest
from aseguide.analysis.symmetry import spacegroup_number, spacegroup_symbol, symmetrize

__all__ = [
    "AnalysisOptions",
    "AnalysisResult",
    "DEFAULT_DISTANCE_FACTOR",
    "DEFAULT_SIMILARITY_THRESHOLD",
    "DedupResult",
    "DistanceScreen",
    "Fingerprints",
    "HardCoordination",
    "HardView",
    "KDEResult",
    "NoveltyResult",
    "PhaseDiagramHull",
    "SetResult",
    "StructureSet",
    "VolumePerAtomTarget",
    "analyze",
    "combined_loss",
    "compare_settings",
    "compute_energies",
    "coordination_numbers",
    "deduplicate",
    "default_cutoff",
    "dominates",
    "energies_above_hull",
    "evaluate_objectives",
    "filter_references",
    "histogram",
    "kde",
    "mean_coordination",
    "novelty",
    "hard_objective",
    "pair_threshold",
    "pareto_fronts",
    "parse_objective",
    "rdf_fingerprints",
    "read_run_config",
    "read_structures",
    "screen_distances",
    "silverman_factor",
    "similarity_matrix",
    "spacegroup_number",
    "spacegroup_symbol",
    "stored_energies",
    "symmetrize",
    "two_proportion_ztest",
    "volume_per_atom",
]


def __getattr__(name: str) -> object:
    if name == "objective_from_dict":  # former name of hard_objective
        import warnings

        warnings.warn("aseguide.analysis.objective_from_dict is deprecated; use aseguide.analysis.hard_objective "
                      "(aseguide.constraints.objective_from_dict rebuilds the objectives themselves)",
                      DeprecationWarning, stacklevel=2)
        return hard_objective
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
