"""``aseguide analyze``: the validation pipeline of a run, written as a report.

.. code-block:: console

    $ aseguide analyze runs/cn4 --compare runs/unguided \\
          --objective coordination:C-C:4:cutoff=1.8 --out report
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from aseguide.cli.errors import EXIT_FAILURE, EXIT_OK, UsageError

__all__ = ["register", "run_analyze"]


def _positive(kind: type = float) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be positive")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _cluster_setting(text: str):
    """``--cluster``: ``local``, ``ray`` or a YAML/JSON mapping (see :func:`cluster_from_text`)."""
    from aseguide.runs.cluster import cluster_from_text

    try:
        return cluster_from_text(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _pair_threshold(text: str) -> tuple[str, float]:
    try:
        pair, value = text.split("=", 1)
        a, b = pair.split("-", 1)
        distance = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not of the form A-B=DISTANCE (e.g. C-C=1.1)") from None
    if not distance > 0:
        raise argparse.ArgumentTypeError(f"distance in {text!r} must be positive")
    return f"{a}-{b}", distance


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``analyze`` sub-command."""
    p = subparsers.add_parser(
        "analyze",
        help="validate generated structures and write a report",
        description=(
            "Validation pipeline of a run (or any folder/file of structures): read, symmetrise (spglib), "
            "screen short distances, deduplicate (RDF fingerprints), novelty against references, energies and "
            "energy above hull, descriptors, satisfaction statistics with a one-sided two-proportion z-test "
            "against --compare, Pareto fronts. Writes REPORT_DIR/report.html, report.md, summary.json, PNG "
            "plots, per-structure CSV tables and the final structures (extxyz)."
        ),
        epilog="Exit codes: 0 success, 1 runtime failure, 2 usage error or bad input.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("run", metavar="RUN_DIR", help="run folder, folder of structure files, or a structure file")
    p.add_argument("--compare", metavar="OTHER_RUN", help="unguided baseline run (enables the z-tests)")
    p.add_argument("--reference", metavar="FILES", nargs="+", action="extend", default=[],
                   help="reference structures (files or folders; CIF, extxyz, CSV with a cif column, ...)")
    p.add_argument("--calculator", metavar="NAME", help="energy calculator (aseguide.calculators.get_calculator): "
                   "chgnet, mattersim, sevenn or grace; the same for generated and reference structures")
    p.add_argument("--calculator-model", metavar="MODEL",
                   help="model of --calculator: a pretrained name (e.g. GRACE-2L-OMAT-large-ft-AM, the default of "
                        "grace) or a local checkpoint file / model folder")
    p.add_argument("--device", default=None, help="device of --calculator: cpu, cuda (default: a GPU when available)")
    p.add_argument("--hull", metavar="FILE", help="reference hull table (aseguide.calculators.ReferenceHull); "
                   "default: hull of the references' energies")
    p.add_argument("--hull-energy", choices=("total", "per_atom", "formation_per_atom"),
                   help="what the energies of the --hull table are (required with --hull)")
    p.add_argument("--hull-system", metavar="SYSTEM", default="auto",
                   help="use only the --hull rows inside this chemical system, e.g. Li-Co-O ('auto': the "
                        "elements of the generated structures; 'all': the whole table)")
    p.add_argument("--out", metavar="REPORT_DIR", help="report folder (default: ./report_<RUN_DIR name>)")
    p.add_argument("--objective", metavar="SPEC", action="append", default=[],
                   help="objective to measure, repeatable: coordination:Co-O:4[:cutoff=2.42][:tol=0.5] or "
                        "volume_per_atom:7.0[:tol=0.35]; a target interval is written 3..6 "
                        "(default: objectives in the run's config)")
    p.add_argument("--format", choices=("html", "md", "both"), default="both", help="report format")
    g = p.add_argument_group("pipeline options")
    g.add_argument("--symprec", type=_positive(), default=0.1, help="spglib distance tolerance (Å)")
    g.add_argument("--angle-tolerance", type=float, default=-1.0, help="spglib angle tolerance (deg; <0: default)")
    g.add_argument("--no-symmetrize", action="store_true", help="skip symmetrisation")
    g.add_argument("--conventional", action="store_true", help="keep conventional instead of primitive cells")
    g.add_argument("--distance-factor", type=_positive(), default=None,
                   help="short contact below FACTOR x sum of covalent radii (default 0.6)")
    g.add_argument("--pair-threshold", type=_pair_threshold, action="append", default=[], metavar="A-B=D",
                   help="explicit short-contact threshold for a pair, e.g. C-C=1.1 (repeatable)")
    g.add_argument("--min-distance", type=_positive(), default=None, help="absolute short-contact floor (Å)")
    g.add_argument("--similarity-threshold", type=float, default=None,
                   help="RDF fingerprint similarity from which structures are the same (default 0.97)")
    g.add_argument("--structure-matcher", action="store_true",
                   help="also deduplicate with pymatgen's StructureMatcher")
    g.add_argument("--any-composition", action="store_true",
                   help="allow duplicates / known matches across different compositions")
    g.add_argument("--reference-max-ehull", type=float, default=None, metavar="EV",
                   help="ignore references more than EV eV/atom above the hull (paper: 0.5)")
    g.add_argument("--relax", action="store_true", help="relax before computing energies (off by default)")
    g.add_argument("--fmax", type=_positive(), default=0.05, help="relaxation force criterion (eV/Å)")
    g.add_argument("--limit", type=_positive(int), default=None, metavar="N",
                   help="use only the first N structures of each input")
    g.add_argument("--index", default=":", help="frames of multi-frame files, ASE notation (':' all, '-1' last)")
    g.add_argument("--best", type=int, default=10, help="rows of the best-candidate table")
    p.add_argument("--cluster", type=_cluster_setting, default=None, metavar="SETTING",
                   help="where --calculator's energies are computed: local (default), ray (the running Ray "
                        "cluster) or a mapping, e.g. '{address: local, workers: 2}'; same results. Each worker builds "
                        "--calculator on its own GPU (with --device or --calculator-model, the calculator "
                        "built here is sent to the workers)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    p.set_defaults(func=run_analyze)
    return p


def _read(path: str | Sequence[str], what: str, index: str, limit: int | None):
    from aseguide.analysis import read_structures

    try:
        return read_structures(path, index=index, limit=limit)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(f"{what}: {exc}") from None


class _MissingComponent(Exception):
    """A component an option needs cannot be imported: a runtime failure (exit code 1)."""


def _options(args: argparse.Namespace):
    """The objectives (``None``: those of the run's config) and pipeline options of the flags."""
    from aseguide.analysis import AnalysisOptions, parse_objective
    from aseguide.analysis.screening import pair_threshold

    objectives = None
    if args.objective:
        try:
            objectives = [parse_objective(spec) for spec in args.objective]
        except ValueError as exc:
            raise UsageError(f"--objective: {exc}") from None
    overrides = {"symprec": args.symprec, "angle_tolerance": args.angle_tolerance,
                 "symmetrize": not args.no_symmetrize, "primitive": not args.conventional,
                 "structure_matcher": args.structure_matcher, "same_composition": not args.any_composition,
                 "reference_max_e_above_hull": args.reference_max_ehull, "relax": args.relax, "fmax": args.fmax,
                 "n_best": args.best, "min_distance": args.min_distance,
                 "pair_thresholds": dict(args.pair_threshold) or None}
    if args.distance_factor is not None:
        overrides["distance_factor"] = args.distance_factor
    if args.similarity_threshold is not None:
        overrides["similarity_threshold"] = args.similarity_threshold
    options = AnalysisOptions(**overrides)
    options.validate()
    for pair in options.pair_thresholds or {}:
        pair_threshold(*pair.split("-"), thresholds=options.pair_thresholds)
    return objectives, options


def _inputs(args: argparse.Namespace):
    """The structures of RUN_DIR, ``--compare`` and ``--reference`` (the first two non-empty)."""
    run = _read(args.run, "RUN_DIR", args.index, args.limit)
    compare = _read(args.compare, "--compare", args.index, args.limit) if args.compare else None
    references = _read(args.reference, "--reference", args.index, None) if args.reference else None
    for label, s in (("RUN_DIR", run), ("--compare", compare)):
        if s is not None and len(s) == 0:
            detail = "; ".join(f"{src}: {msg}" for src, msg in s.errors[:3])
            raise UsageError(f"{label}: no readable structure" + (f" ({detail})" if detail else ""))
    return run, compare, references


def _calculator(args: argparse.Namespace):
    """The energy calculator of ``--calculator`` (``None`` without it)."""
    if not args.calculator:
        if args.calculator_model is not None or args.device is not None:
            raise UsageError("--calculator-model and --device need --calculator")
        return None
    try:
        from aseguide.calculators import get_calculator
    except ImportError as exc:
        raise _MissingComponent(f"--calculator {args.calculator!r} needs aseguide.calculators, "
                                f"which cannot be imported ({exc})") from None
    kwargs = {"device": args.device}
    if args.calculator_model is not None:
        kwargs["model"] = args.calculator_model
    try:
        return get_calculator(args.calculator, **kwargs)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        raise UsageError(f"--calculator {args.calculator!r}: {exc}") from None


def _hull(args: argparse.Namespace, run, compare):
    """The reference hull of ``--hull`` (``None`` without it), restricted to ``--hull-system``."""
    if not args.hull:
        return None
    try:
        from aseguide.calculators import ReferenceHull
    except ImportError as exc:
        raise _MissingComponent(f"--hull needs aseguide.calculators.ReferenceHull, which cannot be "
                                f"imported ({exc})") from None
    system = args.hull_system
    if system == "auto":
        system = "-".join(sorted({s for st in (run, compare) if st is not None
                                  for a in st for s in a.get_chemical_symbols()}))
    kwargs = {} if system in (None, "", "all") else {"chemical_system": system}
    try:
        return ReferenceHull.from_table(args.hull, energy=args.hull_energy, **kwargs)
    except (ValueError, KeyError, OSError) as exc:
        raise UsageError(f"--hull {args.hull!r}: {exc}") from None


def run_analyze(args: argparse.Namespace) -> int:
    """Handler of ``aseguide analyze``; returns the exit code.

    Everything that can be wrong with the input is checked before any compute.
    """
    from aseguide.analysis import analyze

    say = (lambda message: None) if args.quiet else (lambda message: print(message, file=sys.stderr))
    objectives, options = _options(args)
    if args.hull is not None and not os.path.exists(args.hull):
        raise UsageError(f"--hull: no such file: {args.hull!r}")
    if args.hull is not None and args.hull_energy is None:
        raise UsageError("--hull needs --hull-energy total|per_atom|formation_per_atom (a table cannot say which)")
    say(f"reading {args.run} ...")
    run, compare, references = _inputs(args)
    out = Path(args.out) if args.out else Path.cwd() / f"report_{Path(args.run).resolve().name or 'run'}"
    try:
        calculator = _calculator(args)
        hull = _hull(args, run, compare)
        if args.cluster not in (None, "local"):
            from aseguide.runs.cluster import require_ray

            try:
                require_ray()
            except ImportError as exc:
                raise _MissingComponent(str(exc)) from None
    except _MissingComponent as exc:
        print(f"aseguide analyze: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE

    def show(message, category, filename, lineno, file=None, line=None):
        if not args.quiet:
            print(f"warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        if args.cluster not in (None, "local") and calculator is not None and args.calculator_model is None \
                and args.device is None:
            calculator = args.calculator  # by name: each worker builds it on its own device
        result = analyze(run, compare=compare, references=references, objectives=objectives,
                         calculator=calculator, hull=hull, options=options, log=say, cluster=args.cluster)
        formats = ("html", "md") if args.format == "both" else (args.format,)
        written = result.write_report(out, formats=formats)
    if not args.quiet:
        from aseguide.analysis.report import headline

        for line in headline(result.summary):
            print(line)
        print(f"report: {written.get('html') or written.get('md')}")
        print(f"summary: {written['summary']}")
    return EXIT_OK
