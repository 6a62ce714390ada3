"""Quality of the carbon model against the number of sampling steps (unguided).

For each step count N of ``--steps-list``, generates ``--num-structures`` unguided
structures with the same seeds and atom counts (``unguided.yaml`` with ``steps: N``;
resumable run folders ``OUT/steps_N``) and compares them with the model's held-out
structures (:func:`aseguide.evaluation.evaluate_model`): fraction without C–C contacts
under 1.1 Å, Wasserstein distances of volume per atom and C–C coordination (1.8 Å),
fraction above P1, and the sampling time per structure. Writes ``OUT/steps.md`` and
``OUT/steps.json``.

Usage (from the repository root)::

    python examples/carbon/steps_study.py --model carbon-24-small --model-dir aseguide/data/models/carbon-24-small \\
        --steps-list 100,250,500,1000 --num-structures 64 --output runs/carbon/steps
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from aseguide.analysis import read_structures
from aseguide.evaluation import evaluate_model, load_held_out
from aseguide.generate import GenerateConfig, generate

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the study; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="carbon-24-small")
    parser.add_argument("--model-dir", required=True, help="model folder with split.json (held-out reference)")
    parser.add_argument("--steps-list", default="100,250,500,1000")
    parser.add_argument("--num-structures", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--calculator", default="none", help="potential for energies, or 'none' (default)")
    parser.add_argument("--output", default="runs/carbon/steps")
    args = parser.parse_args(argv)
    try:
        step_counts = [int(s) for s in args.steps_list.split(",")]
    except ValueError:
        parser.error(f"--steps-list must be comma-separated integers, got {args.steps_list!r}")
    out = Path(args.output)
    references = load_held_out(args.model_dir)
    calculator = None if args.calculator.lower() == "none" else args.calculator
    rows = []
    for steps in step_counts:
        config = GenerateConfig.from_file(HERE / "unguided.yaml", {
            "model": args.model, "steps": steps, "num_structures": args.num_structures,
            "batch_size": args.batch_size, "device": args.device, "output": str(out / f"steps_{steps}")})
        start = time.perf_counter()
        result = generate(config, resume=True)
        seconds = time.perf_counter() - start
        generated = list(read_structures(result.output))
        metrics = evaluate_model(generated, references, out / f"steps_{steps}" / "evaluation", calculator=calculator)
        rows.append({"steps": steps, "n": len(generated),
                     "seconds_per_structure": result.seconds / max(len(generated), 1) if result.seconds else None,
                     "wall_seconds_this_call": seconds,
                     "clean": metrics["short_distance_screen"]["generated"],
                     "volume_wasserstein": metrics["volume_per_atom"]["wasserstein"],
                     "volume_median": metrics["volume_per_atom"]["median_generated"],
                     "coordination_wasserstein": metrics["coordination"]["wasserstein"],
                     "cn3": metrics["coordination"]["fraction_3_generated"],
                     "cn4": metrics["coordination"]["fraction_4_generated"],
                     "above_P1": metrics["spacegroup"]["above_P1_generated"],
                     "reference": {"clean": metrics["short_distance_screen"]["reference"],
                                   "volume_median": metrics["volume_per_atom"]["median_reference"],
                                   "cn3": metrics["coordination"]["fraction_3_reference"],
                                   "cn4": metrics["coordination"]["fraction_4_reference"],
                                   "above_P1": metrics["spacegroup"]["above_P1_reference"]}})
        print(json.dumps(rows[-1]), flush=True)
    lines = ["| steps | structures | clean (no C–C < 1.1 Å) | median V/atom (Å³) | W(V/atom) | W(CN) "
             "| CN 3 / 4 | above P1 |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['steps']} | {r['n']} | {r['clean']:.1%} | {r['volume_median']:.2f} | "
                     f"{r['volume_wasserstein']:.3f} | {r['coordination_wasserstein']:.3f} | "
                     f"{r['cn3']:.0%} / {r['cn4']:.0%} | {r['above_P1']:.0%} |")
    ref = rows[0]["reference"] if rows else None
    if ref:
        lines.append(f"| held-out data | {len(references)} | {ref['clean']:.1%} | {ref['volume_median']:.2f} | 0 | 0 "
                     f"| {ref['cn3']:.0%} / {ref['cn4']:.0%} | {ref['above_P1']:.0%} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "steps.md").write_text("\n".join(lines) + "\n")
    (out / "steps.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
