"""Energy-guidance settings on small batches: what moves carbon toward the CHGNet hull.

Each variant generates the same structures (same seed, batch and atom counts) as one
unguided reference batch, guided by ``EnergyAboveHull`` (CHGNet, <= 0.1 eV/atom) and
``MinDistance(1.1)`` with the guidance settings given; every structure's energy above
the carbon hull is then evaluated with CHGNet and a row is appended to ``OUT/tuning.md``
(median E_hull, fractions under 0.1 / 0.3 / 0.5 eV/atom, clean, both and the time).

Usage::

    python examples/carbon/ehull_tuning.py --output runs/carbon/tuning --num-structures 24 \\
        --label pos_k1_m1_e2_s05 --every 2 --start 0.5 --k 1.0 --m 1 --fields positions

``--label unguided`` (no guidance) gives the reference row; variants with the same
``--seed`` and ``--num-structures`` are twins of it. ``--held-out MODEL_DIR`` instead
evaluates the model's held-out structures against the same hull (``OUT/heldout_ehull.json``
and the fractions within 0.1 / 0.3 / 0.5 eV/atom): how close to the hull the data itself is.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import PAIR_THRESHOLDS, above_hull, carbon_hull  # noqa: E402

from aseguide.analysis import compute_energies, read_structures, screen_distances  # noqa: E402
from aseguide.generate import GenerateConfig, generate  # noqa: E402

HERE = Path(__file__).resolve().parent


def hull_for(out: Path, calculator: str):
    """The CHGNet carbon hull, computed once and cached in ``out/hull.json``."""
    from aseguide.calculators import ReferenceHull

    path = out / "hull.json"
    if path.is_file():
        return ReferenceHull.from_dict(json.loads(path.read_text()))
    hull = carbon_hull(calculator)
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(hull.todict()))
    return hull


def held_out_ehull(model_dir, hull, out: Path, calculator: str) -> dict:
    """Energies above ``hull`` of the held-out structures of ``model_dir``, saved to ``out/heldout_ehull.json``."""
    from aseguide.calculators import get_calculator
    from aseguide.evaluation import load_held_out

    structures = load_held_out(model_dir)
    energies = compute_energies(structures, get_calculator(calculator))
    e_hull = np.array([above_hull(hull, atoms, e) for atoms, e in zip(structures, energies)])
    (out / "heldout_ehull.json").write_text(json.dumps(e_hull.tolist()))
    finite = e_hull[np.isfinite(e_hull)]
    summary = {"n": int(e_hull.size), "median": float(np.median(finite)) if finite.size else float("nan"),
               **{f"le{level}": float((e_hull <= level).mean()) for level in (0.1, 0.3, 0.5)}}
    print(json.dumps(summary))
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs/carbon/tuning")
    parser.add_argument("--label", help="the variant's name (its run folder); 'unguided' for the reference")
    parser.add_argument("--held-out", metavar="MODEL_DIR", help="evaluate this model's held-out structures instead")
    parser.add_argument("--model", default=None, help="default: config_ehull.yaml's (carbon-24-small)")
    parser.add_argument("--num-structures", type=int, default=24)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--calculator", default="chgnet")
    parser.add_argument("--k", type=float, default=0.05, help="backward_strength")
    parser.add_argument("--m", type=int, default=2, help="backward_steps")
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--start", type=float, default=0.1)
    parser.add_argument("--schedule", default="constant", help="backward_schedule")
    parser.add_argument("--fields", default="positions,lattice")
    parser.add_argument("--no-normalize", action="store_true", help="plain (not normalised) gradient steps")
    parser.add_argument("--threshold", type=float, default=0.1, help="EnergyAboveHull target: E_hull <= this")
    parser.add_argument("--r-min", type=float, default=1.1, help="MinDistance r_min (0: no repulsion)")
    parser.add_argument("--energy-scale", type=float, default=1.0, help="EnergyAboveHull scale (asinh)")
    args = parser.parse_args(argv)
    if not args.label and not args.held_out:
        parser.error("give --label (a variant to generate) or --held-out MODEL_DIR")

    out = Path(args.output)
    hull = hull_for(out, args.calculator)
    if args.held_out:
        return held_out_ehull(args.held_out, hull, out, args.calculator)
    base = yaml.safe_load((HERE / "config_ehull.yaml").read_text())
    data = {k: base[k] for k in ("model", "num_atoms", "max_atoms")}
    if args.model:
        data["model"] = args.model
    data.update(num_structures=args.num_structures, batch_size=args.num_structures, seed=args.seed,
                steps=args.steps, output=str(out / args.label))
    if args.label == "unguided":
        data["objectives"] = []
    else:
        objectives = [{"type": "EnergyAboveHull", "calculator": args.calculator, "hull": hull.todict(),
                       "target": [None, args.threshold], "scale": args.energy_scale}]
        if args.r_min > 0:
            objectives.append({"type": "MinDistance", "r_min": args.r_min})
        data.update(objectives=objectives, combine={"norm": 2},
                    guidance={"backward_strength": args.k, "forward_strength": 0.0, "backward_steps": args.m,
                              "recurrence": 1, "every": args.every, "start": args.start,
                              "backward_schedule": args.schedule, "fields": args.fields.split(","),
                              "normalize": not args.no_normalize})
    config = GenerateConfig.from_dict(data)
    begin = time.perf_counter()
    summary = generate(config, resume=True) if (out / args.label / "progress.json").is_file() else generate(config)
    seconds = time.perf_counter() - begin
    structures = list(read_structures(summary.output))
    from aseguide.calculators import get_calculator

    energies = compute_energies(structures, get_calculator(args.calculator))
    e_hull = np.array([above_hull(hull, atoms, e) for atoms, e in zip(structures, energies)])
    clean = screen_distances(structures, thresholds=PAIR_THRESHOLDS).ok
    n = len(structures)
    finite = e_hull[np.isfinite(e_hull)]
    row = {"label": args.label, "n": n, "median": float(np.median(finite)) if finite.size else float("nan"),
           "le0.1": float((e_hull <= 0.1).mean()), "le0.3": float((e_hull <= 0.3).mean()),
           "le0.5": float((e_hull <= 0.5).mean()), "clean": float(np.mean(clean)),
           "le0.1_clean": float(((e_hull <= 0.1) & clean).mean()),
           "le0.3_clean": float(((e_hull <= 0.3) & clean).mean()), "seconds": round(seconds, 1),
           "settings": {k: getattr(args, k) for k in ("k", "m", "every", "start", "schedule", "fields",
                                                      "threshold", "r_min", "energy_scale", "no_normalize")},
           "e_hull": e_hull.tolist()}
    (out / args.label / "tuning.json").write_text(json.dumps(row, indent=1))
    table = out / "tuning.md"
    if not table.is_file():
        table.write_text("| label | k | m | every | start | schedule | fields | thr | r_min | n | median E_hull | <=0.1 | <=0.3 "
                         "| <=0.5 | clean | <=0.1 & clean | <=0.3 & clean | s |\n" + "|---" * 18 + "|\n")
    s = row["settings"]
    settings = ("| – " * 8 if args.label == "unguided" else
                f"| {s['k']} | {s['m']} | {s['every']} | {s['start']} | {s['schedule']}{' raw' if s['no_normalize'] else ''} "
                f"| {s['fields']} | {s['threshold']} | {s['r_min']} ")
    with table.open("a") as handle:
        handle.write(f"| {args.label} {settings}| {n} | {row['median']:.3f} | {row['le0.1']:.0%} | "
                     f"{row['le0.3']:.0%} | {row['le0.5']:.0%} | {row['clean']:.0%} | {row['le0.1_clean']:.0%} | "
                     f"{row['le0.3_clean']:.0%} | {seconds:.0f} |\n")
    print(table.read_text().splitlines()[-1])
    return row


if __name__ == "__main__":
    main()
