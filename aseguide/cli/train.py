"""``aseguide train``: train a small MatterGen score model from a YAML file and/or flags.

.. code-block:: console

    $ aseguide train examples/carbon/train.yaml
    $ aseguide train examples/carbon/train.yaml --resume
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import Any

from aseguide.cli.errors import UsageError
from aseguide.training.config import TrainConfig
from aseguide.training.loop import train

__all__ = ["register", "run_train"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train`` sub-command.

    Examples
    --------
    >>> from aseguide.cli import build_parser
    >>> build_parser().parse_args(["train", "--preset", "tiny", "--steps", "2"]).steps
    2
    """
    p = subparsers.add_parser(
        "train",
        help="train a small MatterGen score model (carbon_24 by default)",
        description="Train a MatterGen-architecture score model with MatterGen's own modules and save it in "
                    "MatterGen's checkpoint layout (loadable by load_model). Settings from CONFIG (YAML, keys of "
                    "aseguide.training.TrainConfig, optional 'preset: tiny') and/or flags (flags win).",
    )
    p.add_argument("config", nargs="?", help="YAML configuration file (e.g. examples/carbon/train.yaml)")
    p.add_argument("--preset", choices=["default", "tiny"], help="'tiny': a CPU smoke run in seconds")
    p.add_argument("--data", action="append", metavar="CSV", help="data CSV (repeatable; replaces the default)")
    p.add_argument("--output", "-o")
    p.add_argument("--steps", type=int)
    p.add_argument("--max-minutes", type=float, dest="max_minutes")
    p.add_argument("--batch-size", type=int, dest="batch_size")
    p.add_argument("--held-out", type=int, dest="held_out")
    p.add_argument("--subset", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUTPUT from its last periodic checkpoint (checkpoints/resume.pt)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.set_defaults(func=run_train)
    return p


def _check_preset_agrees(preset: str, config_path: str, values: dict[str, Any]) -> None:
    """``--preset`` with a CONFIG file: refuse settings of the file that contradict the preset."""
    if "preset" in values and values["preset"] != preset:
        raise UsageError(f"--preset {preset} contradicts 'preset: {values['preset']}' in {config_path}")
    base = dataclasses.asdict(TrainConfig.tiny() if preset == "tiny" else TrainConfig())
    neutral = {"data", "output", "name", "device", "preset"}
    conflicts = sorted(k for k, v in values.items() if k not in neutral and k in base and base[k] != v)
    if conflicts:
        detail = ", ".join(f"{k}={values[k]!r} (preset {base[k]!r})" for k in conflicts)
        raise UsageError(f"--preset {preset} and {config_path} disagree: {detail}; drop --preset to use the file, "
                         "or override single settings with flags")


class _ProgressBar:
    """One status line on stderr: step, loss, elapsed time and ETA (tqdm when installed)."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total, self.enabled, self.bar = total, enabled, None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:  # pragma: no cover - tqdm comes with MatterGen's dependencies
                return
            self.bar = tqdm(total=total, unit="step", dynamic_ncols=True, mininterval=2.0)

    def update(self, step: int, seconds: float, loss: float, eta: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix_str(f"loss {loss:.4f} eta {eta / 60:.1f} min", refresh=False)
            self.bar.refresh()
        elif step == 1 or step % 100 == 0:
            print(f"step {step}/{self.total}  {seconds:.0f} s  loss {loss:.4f}  eta {eta / 60:.1f} min", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_train(args: argparse.Namespace) -> int:
    """Run ``aseguide train`` with parsed arguments; returns the exit code."""
    import yaml

    values: dict[str, Any] = {}
    if args.config:
        try:
            values = yaml.safe_load(Path(args.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise UsageError(f"cannot read {args.config}: {error}") from error
        if not isinstance(values, dict):
            raise UsageError(f"{args.config}: expected a mapping of settings")
    if args.preset and args.config:
        _check_preset_agrees(args.preset, args.config, values)
    for key in ("preset", "data", "output", "steps", "max_minutes", "batch_size", "held_out", "subset", "seed",
                "device"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    try:
        config = TrainConfig.from_dict(values)
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from error
    for path in config.data:
        if not Path(path).is_file():
            raise UsageError(f"data file not found: {path}")

    bar = _ProgressBar(config.steps, enabled=not args.quiet)
    try:
        summary = train(config, progress=bar.update, resume=args.resume)
    finally:
        bar.close()
    print(f"{summary.steps} steps in {summary.seconds:.1f} s; loss {summary.first_loss:.4g} -> "
          f"{summary.final_loss:.4g}, held-out {summary.held_out_loss:.4g}; "
          f"{summary.num_parameters:,} parameters, model in {summary.output}")
    if not math.isfinite(summary.final_loss):
        return 1
    return 0
