"""The whole validation pipeline of a run: :func:`analyze`.

:func:`analyze` composes the stages of :mod:`aseguide.analysis.stages` (each also
usable alone): read, symmetrise, screen short distances, deduplicate, novelty
against references, energies and energy above the hull, descriptors of the
objectives, satisfaction statistics with z-tests guided vs unguided, Pareto fronts.

Examples
--------
>>> from aseguide.analysis import analyze
>>> from aseguide.constraints import Coordination
>>> result = analyze("runs/cn4", compare="runs/unguided",
...                  objectives=[Coordination("C", "C", 4, cutoff=1.8)])  # doctest: +SKIP
>>> result.summary["tests"]["CN(C-C)"]["clean"]["p_value"]                # doctest: +SKIP
0.003
>>> result.write_report("report")                                         # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from aseguide.analysis import inputs as stage1
from aseguide.analysis import stages
from aseguide.analysis.inputs import compare_settings
from aseguide.analysis.options import AnalysisOptions
from aseguide.analysis.results import AnalysisResult, SetResult
from aseguide.constraints.base import ObjectiveProtocol
from aseguide.runs.cluster import parse_cluster, require_ray

__all__ = ["AnalysisOptions", "SetResult", "AnalysisResult", "analyze", "compare_settings"]


def _options(options: AnalysisOptions | None, overrides: dict[str, Any]) -> AnalysisOptions:
    opts = options or AnalysisOptions()
    if overrides:
        unknown = sorted(set(overrides) - set(AnalysisOptions.__dataclass_fields__))
        if unknown:
            raise TypeError(f"unknown option(s) {unknown}")
        opts = AnalysisOptions(**{**asdict(opts), **overrides})
    opts.validate()
    return opts


def _check_hull_argument(hull: Any) -> None:
    if hull is not None and not hasattr(hull, "e_above_hull") and not isinstance(hull, (str, os.PathLike)):
        raise TypeError(f"hull must have an e_above_hull(atoms, energy_per_atom) method, got {type(hull).__name__}")
    if isinstance(hull, (str, os.PathLike)) and not os.path.exists(hull):
        raise FileNotFoundError(f"hull table not found: {os.fspath(hull)!r}")


def analyze(
    run: Any,
    *,
    compare: Any = None,
    references: Any = None,
    objectives: Sequence[ObjectiveProtocol] | None = None,
    calculator: Any = None,
    hull: Any = None,
    options: AnalysisOptions | None = None,
    log: Callable[[str], None] | None = None,
    hull_energy: str | None = None,
    hull_system: str | None = "auto",
    cluster: Any = None,
    **option_overrides: Any,
) -> AnalysisResult:
    """Run the validation pipeline on a run, optionally against a baseline and references.

    Parameters
    ----------
    run : path, list of paths, StructureSet or list of ase.Atoms
        The (guided) structures: a run folder, any folder or file of structures, a
        list of paths, a :class:`StructureSet` or a list of ``ase.Atoms``.
    compare : same forms as ``run``, optional
        The unguided baseline; enables the z-tests.
    references : same forms as ``run``, optional
        Known structures (novelty, reference distributions, reference hull).
    objectives : sequence of ObjectiveProtocol, optional
        Objects with ``descriptor`` / ``loss`` / ``satisfied``
        (:mod:`aseguide.constraints` objectives). Default: those described in the
        run's configuration, else none (volume per atom is always reported).
    calculator : ase.calculators.calculator.Calculator or str, optional
        An ASE calculator, or a name for ``aseguide.calculators.get_calculator``.
        Without one, energies stored in ``atoms.info["energy_per_atom"]`` (or an
        extxyz ``energy``) are used when present.
    hull : object or path, optional
        An object with ``e_above_hull(atoms, energy_per_atom)``, or a table file for
        ``aseguide.calculators.ReferenceHull.from_table``. Default: the hull of the
        references' energies (computed with the same calculator).
    options : AnalysisOptions, optional
        Settings; keyword arguments override single fields.
    log : callable, optional
        Called with progress messages (e.g. ``print``).
    hull_energy : str, optional
        With a table file: ``"total"``, ``"per_atom"`` or ``"formation_per_atom"``.
    hull_system : str or None
        With a table file: keep only its rows inside this chemical system (e.g.
        ``"Li-Co-O"``); ``"auto"`` (default): the elements of the generated
        structures; ``None``: the whole table.
    cluster : str or mapping, optional
        Where the calculator's energies (the expensive stage) are computed: ``"local"``
        (default: here), ``"ray"`` or a mapping (see :mod:`aseguide.runs.cluster`). A
        calculator name is built by every worker (on its own device), an object is sent
        to them. Same results either way.

    Returns
    -------
    AnalysisResult

    Raises
    ------
    ValueError
        Bad options, an empty input, a run without any readable structure.
    FileNotFoundError
        A path that does not exist.

    Examples
    --------
    >>> from ase.build import bulk
    >>> res = analyze([bulk("Si"), bulk("Si"), bulk("Ge")], log=None)
    >>> res.summary["sets"]["guided"]["counts"]["unique"]
    2
    """
    opts = _options(options, option_overrides)
    if not parse_cluster(cluster).is_local:
        require_ray()  # before any compute: says what to install
    say = log or (lambda message: None)
    notes: list[str] = []
    calc, calc_name = stage1.resolve_calculator(calculator)
    _check_hull_argument(hull)

    inputs = {"guided": run, "unguided": compare, "references": references}
    raw_sets = stage1.read_inputs(inputs, say, notes)
    hull_obj, hull_name = stage1.resolve_hull(hull, hull_energy, stage1.hull_system_of(raw_sets, hull_system))
    stage1.drop_empty_references(raw_sets, notes)
    objs = stage1.choose_objectives(objectives, raw_sets, notes)
    stage1.check_baseline(raw_sets, notes)
    sets = stage1.make_sets(raw_sets, inputs)
    generated = [lab for lab in ("guided", "unguided") if lab in sets]

    stages.symmetrize_sets(sets, generated, opts, say)
    stages.screen_sets(sets, generated, opts, say)
    ref_mask = stages.filter_reference_energies(sets, opts, notes)
    stages.deduplicate_and_compare(sets, generated, ref_mask, opts, say)
    energy_source = stages.compute_set_energies(sets, calc, calc_name, ref_mask, opts, say, cluster=cluster,
                                                calc_source=calculator if isinstance(calculator, str) else None)
    hull_obj, hull_source = stages.reference_hull(sets, hull_obj, hull_name, ref_mask, notes)
    stages.hull_distances(sets, hull_obj, notes, say)
    obj_names = stages.describe_sets(sets, objs, say)
    satisfaction, tests = stages.satisfaction_tests(sets, generated, obj_names)
    pareto = stages.pareto_analysis(sets, ref_mask)
    candidates = stages.best_candidates(sets, generated, opts.n_best)

    for message in notes:
        warnings.warn(message, stacklevel=2)
    energy = {"source": energy_source, "hull": hull_source, "calculator": calc_name}
    summary = stages.summarize(sets, opts, objs, obj_names, satisfaction, tests, energy, pareto, candidates, notes)
    return AnalysisResult(sets=sets, summary=summary, objectives=objs, pareto=pareto)
