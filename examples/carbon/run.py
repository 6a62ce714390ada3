"""Carbon case studies on the ``carbon-24-small`` model: volume per atom and C–C coordination.

The guided runs share one unguided run (``unguided.yaml``, 512 structures: the model evaluation);
its first 200 structures, started from the same noise and atom counts (same model, steps,
seed and batches), are the unguided twin of every study:

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

A fourth study, ``ehull`` (``--energy``), guides with the energy objective for real:
``EnergyAboveHull`` with CHGNet (torch, offline weights) toward at most 0.1 eV/atom above
the carbon hull, the hull built from graphite and diamond relaxed and evaluated with the
same potential, combined with ``MinDistance(1.1)``; guidance acts every
``config_ehull.yaml: guidance.every`` steps to bound the potential's cost. Its table
reports the energy above hull distributions guided vs unguided and the fraction at most
0.1 eV/atom above the hull AND clean, with the one-sided z-test.

Usage: ``python examples/carbon/run.py [--model M --steps N --num-structures S --output DIR
--calculator chgnet --model-dir runs/carbon-24-small --energy --analyze-only --studies cn3,ehull]``.
``run_all.sh`` runs everything. ``--studies`` analyses only the named studies (default: all,
``ehull`` with ``--energy``); each study's rows are kept in ``OUT/rows_<study>.md`` and
``results.md`` lists every study analysed so far, in this sitting or an earlier one. ``--analyze-only`` generates nothing: it analyses the studies whose guided
run is complete (the twin needs only the unguided run's first 200 structures) and lists the
others as not generated yet, so results can be reported while a campaign is spread over
several sittings.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402
from _case_study import analysis_objectives, parse_args  # noqa: E402

from aseguide.analysis import analyze, read_structures, screen_distances, two_proportion_ztest  # noqa: E402
from aseguide.generate import GenerateConfig, generate  # noqa: E402

HERE = Path(__file__).resolve().parent
GUIDED = {"volume": "config_volume.yaml", "cn4": "config_cn4.yaml", "cn3": "config_cn3.yaml"}
#: Short-contact screen of the analysis: any C–C distance under 1.1 Å.
PAIR_THRESHOLDS = {"C-C": 1.1}


def carbon_hull(calculator="chgnet", fmax=0.02):
    """The carbon hull of ``calculator``: graphite and diamond relaxed (cell and positions) with it.

    Returns
    -------
    aseguide.calculators.ReferenceHull
    """
    from ase.build import bulk
    from ase.filters import FrechetCellFilter
    from ase.lattice.hexagonal import Graphite
    from ase.optimize import BFGS

    from aseguide.calculators import ReferenceHull, get_calculator

    ase_calculator = get_calculator(calculator)
    references = [bulk("C", "diamond", a=3.567), Graphite("C", latticeconstant={"a": 2.46, "c": 6.70})]
    for atoms in references:
        atoms.calc = ase_calculator
        BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=fmax, steps=200)
        atoms.calc = None
    hull = ReferenceHull.from_structures(references, calculator)
    hull.name = f"graphite + diamond, {calculator}"
    return hull


def stored_hull(run_folder):
    """The ``EnergyAboveHull`` hull of a run already started in ``run_folder``, or ``None``.

    A resumed run must reuse the hull it was started with: relaxing graphite and diamond
    again can differ in the last digits (thread count), and the resume check compares
    the whole configuration.
    """
    from aseguide.calculators import ReferenceHull

    path = Path(run_folder) / "config.json"
    if not path.is_file():
        return None
    for entry in json.loads(path.read_text()).get("objectives") or []:
        if entry.get("type") == "EnergyAboveHull":
            return ReferenceHull.from_dict(entry["hull"])
    return None


def unguided_twin(unguided, unguided_path, guided):
    """The first structures of the unguided run: the twins of a guided run's structures.

    Structure ``i`` of a run starts from the noise and atom count of batch ``i // batch_size``
    (seed ``seed + batch``), so the first ``guided.num_structures`` unguided structures are
    the guided structures' twins when both runs share model, steps, seed, batch size and
    atom counts and the guided run is made of whole batches; the 512 unguided structures of
    the model evaluation thus serve every study (200 = 4 batches of 50).

    Returns
    -------
    list of ase.Atoms

    Raises
    ------
    ValueError
        When the runs differ in a setting that decides the starting noise (named), or the
        unguided run is shorter than the guided one.
    """
    for key in ("model", "steps", "seed", "batch_size", "num_atoms", "max_atoms"):
        if getattr(unguided, key) != getattr(guided, key):
            raise ValueError(f"the unguided run is no twin of {guided.output}: {key} "
                             f"{getattr(unguided, key)!r} != {getattr(guided, key)!r}")
    structures = list(read_structures(unguided_path))
    if guided.num_structures % guided.batch_size and guided.num_structures != unguided.num_structures:
        # the last, shorter batch draws its noise with another shape than the longer run's batch
        raise ValueError(f"{guided.output}: num_structures {guided.num_structures} is not a multiple of "
                         f"batch_size {guided.batch_size}, so its last batch has no twin in the unguided run")
    if len(structures) < guided.num_structures:
        raise ValueError(f"the unguided run has {len(structures)} structures, fewer than the "
                         f"{guided.num_structures} of {guided.output}")
    return structures[:guided.num_structures]


def generated_count(path) -> int:
    """Structures written so far to the run folder ``path`` (0 when it does not exist)."""
    path = Path(path)
    if not (path / "structures.extxyz").is_file():
        return 0
    return sum(1 for _ in read_structures(path))


def above_hull(hull, atoms, energy_per_atom) -> float:
    """Energy above ``hull`` (eV/atom); ``inf`` (never on target) without an energy or outside the hull's elements."""
    if not np.isfinite(energy_per_atom):
        return np.inf
    try:
        return float(hull.e_above_hull(atoms, energy_per_atom))
    except ValueError:  # an element the carbon hull does not have
        return np.inf


def energy_study(out, overrides, calculator="chgnet", resume=False, unguided=None, unguided_path=None,
                 generate_missing=True):
    """Guide toward <= 0.1 eV/atom above the carbon hull; compare with the unguided twin.

    Returns
    -------
    list of str
        Rows of the results table.
    """
    import yaml

    from aseguide.analysis import compute_energies
    from aseguide.calculators import get_calculator

    hull = stored_hull(out / "ehull") or carbon_hull(calculator)
    data = yaml.safe_load((HERE / "config_ehull.yaml").read_text())
    data.update({k: v for k, v in {**overrides, "output": str(out / "ehull")}.items() if v is not None})
    for entry in data["objectives"]:
        if entry["type"] == "EnergyAboveHull":
            entry.update(hull=hull.todict(), calculator=calculator)
    config = GenerateConfig.from_dict(data)
    if not generate_missing:
        count = generated_count(config.output)
        if count < config.num_structures:
            return [f"| ehull | not generated yet: {count} of {config.num_structures} structures | | | | |"]
        guided_path = Path(config.output)
    else:
        guided_path = generate(config, resume=resume).output
    ase_calculator = get_calculator(calculator)
    rows, values = [], {}
    runs = {"guided": list(read_structures(guided_path)),
            "unguided": unguided_twin(unguided, unguided_path, config)}
    for name, structures in runs.items():
        clean = screen_distances(structures, thresholds=PAIR_THRESHOLDS).ok
        # compute_energies gives nan (with a warning) where the potential fails or the cell is
        # degenerate (lattice planes ~0.01 Å apart: CHGNet's neighbour search would exhaust the memory)
        energies = compute_energies(structures, ase_calculator)
        e_hull = np.array([above_hull(hull, atoms, e) for atoms, e in zip(structures, energies)])
        on_target = e_hull <= 0.1
        values[name] = {"n": len(structures), "raw": int(on_target.sum()), "clean": int((on_target & clean).sum()),
                        **{f"clean_le{level}": int(((e_hull <= level) & clean).sum()) for level in (0.3, 0.5)},
                        "median": float(np.median(e_hull[np.isfinite(e_hull)])) if np.isfinite(e_hull).any()
                        else float("nan"), "e_hull": e_hull.tolist()}
    g, u = values["guided"], values["unguided"]
    p_raw = two_proportion_ztest(g["raw"], g["n"], u["raw"], u["n"])[1]
    p_clean = two_proportion_ztest(g["clean"], g["n"], u["clean"], u["n"])[1]
    rows.append(f"| ehull | E_hull <= 0.1 eV/atom | {g['raw'] / g['n']:.1%} / {u['raw'] / u['n']:.1%} | "
                f"{g['clean'] / g['n']:.1%} / {u['clean'] / u['n']:.1%} | {p_raw:.3g} | {p_clean:.3g} |")
    for level in (0.3, 0.5):  # looser thresholds: the held-out data's median is 0.44 above this hull
        key = f"clean_le{level}"
        p_level = two_proportion_ztest(g[key], g["n"], u[key], u["n"])[1]
        rows.append(f"| ehull | E_hull <= {level} eV/atom (clean only) | | {g[key] / g['n']:.1%} / "
                    f"{u[key] / u['n']:.1%} | | {p_level:.3g} |")
    finite = [np.isfinite(values[k]["e_hull"]) for k in ("guided", "unguided")]
    lower = np.array(g["e_hull"])[finite[0] & finite[1]] < np.array(u["e_hull"])[finite[0] & finite[1]]
    share = f"{lower.mean():.1%}" if lower.size else "–"  # no pair with both energies finite
    rows.append(f"| ehull | median E_hull (eV/atom); guided twin lower | {g['median']:.3f} / {u['median']:.3f} | "
                f"{share} of {lower.size} pairs | | |")
    (out / "ehull_summary.json").write_text(json.dumps({"hull": hull.todict(), **values}, indent=1))
    try:
        from aseguide.analysis.plots import plot_distributions

        plot_distributions({k: np.clip(np.asarray(v["e_hull"]), None, 2.0)[np.isfinite(v["e_hull"])]
                            for k, v in values.items()}, "energy above hull (eV/atom, CHGNet, clipped at 2)",
                           out / "ehull.png")
    except Exception as error:  # noqa: BLE001 - the table is the result; a plot failure is reported
        print(f"ehull plot failed: {error}")
    return rows


def script_options(argv):
    """This script's own flags: ``(energy, analyze_only, studies, model_dir, remaining argv)``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    energy = "--energy" in argv
    if energy:
        argv.remove("--energy")
    analyze_only = "--analyze-only" in argv
    if analyze_only:
        argv.remove("--analyze-only")
    studies = None
    if "--studies" in argv:
        i = argv.index("--studies")
        studies = [name.strip() for name in argv[i + 1].split(",") if name.strip()]
        del argv[i:i + 2]
        unknown = sorted(set(studies) - {*GUIDED, "ehull"})
        if unknown or not studies:
            raise ValueError(f"unknown study {unknown or studies!r}: choose from {', '.join([*GUIDED, 'ehull'])}")
    model_dir = None
    if "--model-dir" in argv:
        i = argv.index("--model-dir")
        model_dir = argv[i + 1]
        del argv[i:i + 2]
    return energy, analyze_only, studies, model_dir, argv


def main(argv=None):
    """Generate the twin and the guided runs, analyse each, write ``results.md``; see the module docstring."""
    energy, analyze_only, studies, model_dir, argv = script_options(argv)
    args = parse_args(argv, __doc__, "carbon")
    out = Path(args.output)
    overrides = {"model": args.model, "steps": args.steps, "num_structures": args.num_structures,
                 "batch_size": args.batch_size, "device": args.device}
    configs = {name: GenerateConfig.from_file(HERE / filename, {**overrides, "output": str(out / name)})
               for name, filename in {"unguided": "unguided.yaml", **GUIDED}.items()}
    if analyze_only:
        paths = {name: Path(config.output) for name, config in configs.items()}
    else:
        paths = {name: generate(config, resume=args.resume).output for name, config in configs.items()}
    missing = {name: f"not generated yet: {count} of {configs[name].num_structures} structures"
               for name in GUIDED if (count := generated_count(paths[name])) < configs[name].num_structures}
    twins = {name: unguided_twin(configs["unguided"], paths["unguided"], configs[name])
             for name in GUIDED if name not in missing}
    references = None
    if model_dir is not None:
        from aseguide.evaluation import load_held_out

        references = load_held_out(model_dir)
    header = ["| run | objective | on target (guided / unguided) | on target and clean | p (raw) | p (clean) |",
              "|---|---|---|---|---|---|"]
    selected = set(studies) if studies is not None else {*GUIDED, *(["ehull"] if energy else [])}
    for name in GUIDED:
        if name not in selected:
            continue
        if name in missing:
            save_rows(out, name, [f"| {name} | {missing[name]} | | | | |"])
            continue
        rows = []
        result = analyze(paths[name], compare=twins[name], references=references,
                         objectives=analysis_objectives(configs[name]), calculator=args.calculator,
                         pair_thresholds=PAIR_THRESHOLDS)
        result.write_report(out / f"report_{name}")
        for objective, tests in result.summary["tests"].items():
            s = result.summary["satisfaction"][objective]
            p = {k: "n/a" if tests[k].get("p_value") is None else f"{tests[k]['p_value']:.3g}" for k in ("raw", "clean")}
            rows.append(f"| {name} | {objective} | {s['guided']['raw']:.1%} / {s['unguided']['raw']:.1%} | "
                        f"{s['guided']['clean']:.1%} / {s['unguided']['clean']:.1%} | {p['raw']} | {p['clean']} |")
        save_rows(out, name, rows)
    if "ehull" in selected:
        save_rows(out, "ehull", energy_study(out, overrides, calculator=args.calculator or "chgnet",
                                             resume=args.resume, unguided=configs["unguided"],
                                             unguided_path=paths["unguided"], generate_missing=not analyze_only))
    rows = header + [row for name in [*GUIDED, "ehull"] for row in load_rows(out, name)]
    (out / "results.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    return paths


def save_rows(out, name, rows) -> None:
    """Keep a study's rows of the results table (``OUT/rows_<name>.md``) for later tables."""
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"rows_{name}.md").write_text("\n".join(rows) + "\n")


def load_rows(out, name) -> list:
    """A study's rows saved by :func:`save_rows`; none for a study never analysed."""
    path = Path(out) / f"rows_{name}.md"
    return path.read_text().splitlines() if path.is_file() else []


if __name__ == "__main__":
    from aseguide.cli import run_script

    sys.exit(run_script(main, prog=f"python {sys.argv[0]}"))
