"""Carbon case studies on the ``carbon-24-small`` model: volume per atom and C–C coordination.

Three guided runs share one unguided twin (same model, atom counts, steps and seed):

* ``volume``: volume per atom -> 5.7 Å³ (diamond-like), ``VolumePerAtom`` alone;
* ``cn4`` / ``cn3``: mean C–C coordination (cutoff 1.8 Å) -> 4 (sp³) / 3 (sp²), each
  combined (Euclidean norm) with ``MinDistance(1.1)``: a soft count alone is also met by
  overlapping atoms (``../shared/docs/METHOD.md``, section 7).

Each guided run is analysed against the twin with :func:`aseguide.analysis.analyze`,
with the short-contact screen set to C–C 1.1 Å (so "clean" means on target AND free of
contacts under 1.1 Å), the held-out carbon_24 structures as references (``--model-dir``)
and CHGNet energies (``--calculator``): fractions on target raw and clean, one-sided
two-proportion z-tests, descriptor distributions, Pareto fronts. A summary table goes
to ``OUT/results.md``.

Usage: ``python examples/carbon/run.py [--model M --steps N --num-structures S --output DIR
--calculator chgnet --model-dir runs/carbon-24-small]``. ``run_all.sh`` runs everything.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _case_study import analysis_objectives, parse_args  # noqa: E402

from aseguide.analysis import analyze  # noqa: E402
from aseguide.generate import GenerateConfig, generate  # noqa: E402

HERE = Path(__file__).resolve().parent
GUIDED = {"volume": "config_volume.yaml", "cn4": "config_cn4.yaml", "cn3": "config_cn3.yaml"}
#: Short-contact screen of the analysis: any C–C distance under 1.1 Å.
PAIR_THRESHOLDS = {"C-C": 1.1}


def main(argv=None):
    """Generate the twin and the guided runs, analyse each, write ``results.md``; see the module docstring."""
    argv = list(sys.argv[1:] if argv is None else argv)
    model_dir = None
    if "--model-dir" in argv:
        i = argv.index("--model-dir")
        model_dir = argv[i + 1]
        del argv[i:i + 2]
    args = parse_args(argv, __doc__, "carbon")
    out = Path(args.output)
    overrides = {"model": args.model, "steps": args.steps, "num_structures": args.num_structures,
                 "batch_size": args.batch_size, "device": args.device}
    configs = {name: GenerateConfig.from_file(HERE / filename, {**overrides, "output": str(out / name)})
               for name, filename in {"unguided": "unguided.yaml", **GUIDED}.items()}
    paths = {name: generate(config, resume=args.resume).output for name, config in configs.items()}
    references = None
    if model_dir is not None:
        from aseguide.evaluation import load_held_out

        references = load_held_out(model_dir)
    rows = ["| run | objective | on target (guided / unguided) | on target and clean | p (raw) | p (clean) |",
            "|---|---|---|---|---|---|"]
    for name in GUIDED:
        result = analyze(paths[name], compare=paths["unguided"], references=references,
                         objectives=analysis_objectives(configs[name]), calculator=args.calculator,
                         pair_thresholds=PAIR_THRESHOLDS)
        result.write_report(out / f"report_{name}")
        for objective, tests in result.summary["tests"].items():
            s = result.summary["satisfaction"][objective]
            p = {k: "n/a" if tests[k].get("p_value") is None else f"{tests[k]['p_value']:.3g}" for k in ("raw", "clean")}
            rows.append(f"| {name} | {objective} | {s['guided']['raw']:.1%} / {s['unguided']['raw']:.1%} | "
                        f"{s['guided']['clean']:.1%} / {s['unguided']['clean']:.1%} | {p['raw']} | {p['clean']} |")
    (out / "results.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    return paths


if __name__ == "__main__":
    from aseguide.cli import run_script

    sys.exit(run_script(main, prog=f"python {sys.argv[0]}"))
