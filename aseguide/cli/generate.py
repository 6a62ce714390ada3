"""``aseguide generate``: guided generation from a YAML configuration and/or flags.

.. code-block:: console

    $ aseguide generate examples/volume_tiny.yaml --output runs/demo
    $ aseguide generate examples/volume_tiny.yaml --output runs/demo --resume
    $ aseguide generate examples/volume_tiny.yaml --output runs/demo --cluster ray

The configuration is validated before any compute (unknown keys and bad values are
named, exit code 2); results are written batch by batch (see :mod:`aseguide.runs`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from aseguide._started import STARTED
from aseguide.cli.errors import UsageError
from aseguide.models.conditions import PROPERTY_CONDITIONS, PropertyCondition

__all__ = ["register", "run_generate"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``generate`` sub-command.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The sub-command parsers of ``aseguide``.

    Returns
    -------
    argparse.ArgumentParser
        The parser of ``generate``.

    Examples
    --------
    >>> from aseguide.cli import build_parser
    >>> build_parser().parse_args(["generate", "--seed", "3"]).seed
    3
    """
    p = subparsers.add_parser(
        "generate",
        help="generate guided crystal structures",
        description="Generate crystal structures with a MatterGen model, optionally guided by "
                    "aseguide objectives. Settings come from CONFIG (YAML) and/or flags (flags win).",
    )
    p.add_argument("config", nargs="?", help="YAML configuration file (see examples/)")
    p.add_argument("--model", help="released name, checkpoint folder, or tiny-random")
    p.add_argument("--num-structures", type=int, dest="num_structures")
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--num-atoms", type=int, dest="num_atoms")
    p.add_argument("--chemical-system", dest="chemical_system", help="e.g. Li-Co-O (conditioned models)")
    for condition in _property_conditions():
        unit = f" in {condition.unit}" if condition.unit else ""
        p.add_argument(f"--{condition.name.replace('_', '-')}", dest=condition.name,
                       type=int if condition.kind == "int" else float, metavar="VALUE",
                       help=f"condition on {condition.description}{unit} (checkpoints trained on it)")
    p.add_argument("--seeds", help="structure file or folder (ASE-readable) to start from, noised to --start-time")
    p.add_argument("--start-time", type=float, dest="start_time", metavar="T0",
                   help="noise level the seeds start from, in [0, 1] (1 = pure noise; default 1)")
    p.add_argument("--samples-per-seed", type=int, dest="samples_per_seed", metavar="N")
    p.add_argument("--fix-cell", action="store_true", default=None, dest="fix_cell", help="keep the seeds' cells")
    p.add_argument("--composition", help="fixed formula, e.g. LiCoO2 (species given, never sampled)")
    p.add_argument("--formula-units", type=int, dest="formula_units", metavar="N")
    p.add_argument("--guidance-factor", type=float, dest="guidance_factor")
    p.add_argument("--steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device")
    p.add_argument("--precision", choices=["fp32", "mixed", "bf16"],
                   help="network arithmetic (default fp32; mixed = TF32 + bf16 network on CUDA)")
    p.add_argument("--objective", action="append", dest="objective_json", metavar="JSON",
                   help='an objective as JSON, e.g. \'{"type": "VolumePerAtom", "target": 7.0}\' (repeatable)')
    p.add_argument("--output", "-o", help="output folder")
    p.add_argument("--cluster", type=_cluster_setting, metavar="SETTING",
                   help="where the batches run: local (default), ray (the running Ray cluster) or a mapping, "
                        "e.g. '{address: local, workers: 2}' (see the README's cluster section)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in the output folder")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run_generate)
    return p


def _cluster_setting(text: str):
    """``--cluster``: ``local``, ``ray`` or a YAML/JSON mapping (see :func:`cluster_from_text`)."""
    from aseguide.runs.cluster import cluster_from_text

    try:
        return cluster_from_text(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _property_conditions() -> list[PropertyCondition]:
    return [c for name, c in PROPERTY_CONDITIONS.items() if name != "chemical_system"]


def run_generate(args: argparse.Namespace) -> int:
    """Handler of ``aseguide generate``; returns the exit code."""
    begin = min(STARTED, time.perf_counter())  # the imports (torch, MatterGen) included
    from aseguide.runs.cluster import parse_cluster
    from aseguide.runs.config import GenerateConfig
    from aseguide.runs.generate import generate

    overrides = {key: getattr(args, key) for key in (
        "model", "num_structures", "batch_size", "num_atoms", "chemical_system", "guidance_factor",
        "steps", "seed", "device", "precision", "output", "seeds", "start_time", "samples_per_seed",
        "fix_cell", "composition", "formula_units", "cluster")}
    overrides.update({c.name: getattr(args, c.name) for c in _property_conditions()})
    if args.objective_json:
        try:
            overrides["objectives"] = [json.loads(text) for text in args.objective_json]
        except json.JSONDecodeError as error:
            raise UsageError(f"--objective is not valid JSON: {error}") from error
    try:
        if args.config:
            config = GenerateConfig.from_file(args.config, overrides)
        else:
            config = GenerateConfig.from_dict({k: v for k, v in overrides.items() if v is not None})
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from error

    bar = None
    if not args.quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.num_structures, unit="structure", desc="generating", file=sys.stderr)

    def progress(done: int, total: int, seconds: float) -> None:
        if bar is not None:
            bar.n = done
            bar.refresh()

    cluster = not parse_cluster(config.cluster).is_local
    try:
        summary = generate(config, resume=args.resume, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    # the count is the one recorded in progress.json, i.e. what the files hold
    print(f"{summary.num_structures} structures in {summary.output} "
          f"({time.perf_counter() - begin:.1f} s in all, imports included: model loading {summary.load_seconds:.1f} s, "
          f"generation {summary.seconds:.1f} s; {summary.resumed_batches} batches resumed"
          + (f"; {summary.workers} Ray workers, {summary.retried_batches} batches retried" if cluster else "") + ")")
    return 0
