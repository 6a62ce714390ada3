"""Shared driver of the paper's case studies (``examples/<case>/run.py``).

Each case study is a folder holding one or more guided configurations and an
unguided twin (same model, chemical system, atom counts, steps and seed;
``objectives: []``). :func:`run_case` generates the unguided baseline once, then
every guided run, and analyses each guided run against the baseline with
:func:`aseguide.analysis.analyze` (hard coordination counts / volume per atom,
short-contact screening, deduplication, one-sided two-proportion z-test), writing
one report per guided run.

Output layout (``--output OUT``, default ``runs/<case>``)::

    OUT/unguided/            structures.extxyz, cifs/, results.csv, config.json
    OUT/<name>/              one folder per guided run ("guided" when there is one)
    OUT/report/              report.html, report.md, summary.json, plots
                             (OUT/report_<name>/ when a case has several guided runs)

The defaults reproduce the paper (released ``chemical_system`` checkpoint, 1000
structures, 1000 steps). ``--model``, ``--steps``, ``--num-structures`` and
``--batch-size`` override every configuration of the case alike, so
``tests/test_examples.py`` runs the same code offline with the tiny random model.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aseguide.analysis import analyze, hard_objective
from aseguide.generate import GenerateConfig, generate

__all__ = ["analysis_objectives", "parse_args", "run_case"]

#: Guidance objectives that are restraints, not targets: left to the analysis'
#: own short-contact screening instead of being counted as "satisfied".
RESTRAINTS = ("MinDistance",)


def analysis_objectives(config: GenerateConfig) -> list[Any]:
    """Hard analysis objectives for the targets of a guided configuration.

    Parameters
    ----------
    config : GenerateConfig
        A guided configuration.

    Returns
    -------
    list
        A :class:`~aseguide.analysis.HardView` of each ``Coordination`` entry
        (same centre, neighbour, target and cutoff; satisfied when the mean hard
        count is within 0.5 of the target) and of each ``VolumePerAtom`` entry (same
        target and tolerance). ``MinDistance`` restraints are skipped: the analysis
        screens short contacts itself ("clean" fractions).
    """
    out = []
    for entry in config.objectives:
        if entry["type"] in RESTRAINTS:
            continue
        objective = hard_objective(dict(entry))
        if objective is None:
            raise ValueError(f"no analysis objective for {entry!r}")
        out.append(objective)
    return out


def parse_args(argv: Sequence[str] | None, description: str | None, case: str) -> argparse.Namespace:
    """Command-line options shared by every case study.

    Parameters
    ----------
    argv : sequence of str or None
        Arguments (default: ``sys.argv[1:]``).
    description : str or None
        Help text (the calling script's docstring).
    case : str
        Name of the case folder, used for the default output folder.

    Returns
    -------
    argparse.Namespace
    """
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint name or folder (default: the configs' chemical_system)")
    parser.add_argument("--steps", type=int, help="diffusion steps (default: the configs' 1000)")
    parser.add_argument("--num-structures", type=int, help="structures per run (default: the configs' 1000)")
    parser.add_argument("--batch-size", type=int, help="structures per batch (default: the configs')")
    parser.add_argument("--device", help="torch device (default: cuda when available)")
    parser.add_argument("--output", default=f"runs/{case}", help="output folder (default: %(default)s)")
    parser.add_argument("--calculator", help="potential for energies above the hull in the report "
                        "(e.g. chgnet); default: none, no energies")
    parser.add_argument("--resume", action="store_true", help="continue interrupted runs in --output")
    return parser.parse_args(argv)


def run_case(
    case_dir: str | Path,
    guided: Mapping[str, str],
    *,
    unguided: str = "unguided.yaml",
    argv: Sequence[str] | None = None,
    description: str | None = None,
) -> dict[str, Path]:
    """Generate the unguided baseline and each guided run, then analyse and report.

    Parameters
    ----------
    case_dir : str or Path
        The case folder holding the configuration files.
    guided : mapping of str to str
        ``{run name: configuration file}`` of the guided runs.
    unguided : str
        Configuration file of the unguided twin.
    argv : sequence of str or None
        Command-line arguments (see :func:`parse_args`).
    description : str or None
        Help text of the command line.

    Returns
    -------
    dict of str to Path
        Output folder of every run (``"unguided"`` and each name of ``guided``) and
        report folder of each guided run (``"report"`` or ``"report_<name>"``).
    """
    case_dir = Path(case_dir)
    args = parse_args(argv, description, case_dir.name)
    out = Path(args.output)
    overrides = {"model": args.model, "steps": args.steps, "num_structures": args.num_structures,
                 "batch_size": args.batch_size, "device": args.device}
    paths: dict[str, Path] = {}
    configs = {}
    for name, filename in {"unguided": unguided, **guided}.items():
        configs[name] = GenerateConfig.from_file(case_dir / filename,
                                                 {**overrides, "output": str(out / name)})
    for name, config in configs.items():
        print(f"[{case_dir.name}] generating {name}: {config.num_structures} structures, {config.steps} steps, "
              f"{config.chemical_system}, model {config.model}", flush=True)
        paths[name] = generate(config, resume=args.resume).output
    for name in guided:
        report = out / ("report" if len(guided) == 1 else f"report_{name}")
        result = analyze(paths[name], compare=paths["unguided"], objectives=analysis_objectives(configs[name]),
                         calculator=args.calculator)
        result.write_report(report)
        paths["report" if len(guided) == 1 else f"report_{name}"] = report
        for objective, tests in result.summary["tests"].items():
            fractions = result.summary["satisfaction"][objective]
            print(f"[{case_dir.name}] {name} {objective}: satisfied (clean) "
                  f"{fractions['guided']['clean']:.1%} guided vs {fractions['unguided']['clean']:.1%} unguided, "
                  f"p = {_p(tests['clean'])}; report in {report}", flush=True)
    (out / "paths.json").write_text(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return paths


def _p(test: Mapping[str, Any]) -> str:
    return "n/a" if test.get("p_value") is None else f"{test['p_value']:.3g}"
