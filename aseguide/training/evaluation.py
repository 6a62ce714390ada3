"""Evaluation of an (unguided) generative model against held-out data.

:func:`evaluate_model` compares generated structures with a reference set (the
held-out split written by :mod:`aseguide.training`) on the metrics below, each
computed with :mod:`aseguide.analysis`:

* fraction passing the short-distance screen (:func:`~aseguide.analysis.screen_distances`,
  C–C under 1.1 Å by default);
* volume per atom and per-atom hard C–C coordination (cutoff 1.8 Å) distributions:
  medians, Wasserstein distance to the data (:func:`scipy.stats.wasserstein_distance`),
  fractions 3- and 4-coordinated, overlaid histograms (:func:`~aseguide.analysis.plots.plot_distributions`);
* fraction with a space group above P1 (:func:`~aseguide.analysis.symmetry.spacegroup_number`,
  symprec 0.1);
* energy per atom with a potential (CHGNet by default) on both sets
  (:func:`~aseguide.analysis.compute_energies`), same comparison.

Results go to ``OUT/metrics.json`` and PNG files. On the command line::

    python -m aseguide.evaluation runs/carbon/unguided --model-dir MODEL_DIR --out eval/

Examples
--------
>>> from ase.build import bulk
>>> ref = [bulk("C", "diamond", a=3.567)]
>>> metrics = evaluate_model(ref, ref, calculator=None)
>>> metrics["volume_per_atom"]["wasserstein"], metrics["short_distance_screen"]["generated"]
(0.0, 1.0)
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

__all__ = ["evaluate_model", "load_held_out", "main"]


def load_held_out(model_dir: str | os.PathLike, data: Sequence[str | os.PathLike] | None = None) -> list[Atoms]:
    """The held-out structures of a model trained by :mod:`aseguide.training` (from its ``split.json``).

    Parameters
    ----------
    model_dir : path
        The model folder (holding ``split.json``).
    data : sequence of path, optional
        The data CSV files (default: those recorded in ``split.json``).

    Returns
    -------
    list of ase.Atoms
        With ``info["material_id"]`` and, when present, ``info["energy_per_atom"]`` (the data's DFT value).

    Examples
    --------
    >>> held_out = load_held_out("runs/carbon-24-small")  # doctest: +SKIP
    """
    from aseguide.training.data import atoms_from_cif, read_dataset

    split = json.loads((Path(model_dir) / "split.json").read_text())
    table = read_dataset(data or split["data"])
    rows = table.iloc[split["held_out_rows"]]
    if list(rows["material_id"]) != split["held_out_ids"]:
        raise ValueError("the data files do not match the split (material ids differ)")
    out = []
    for _, row in rows.iterrows():
        atoms = atoms_from_cif(row["cif"])
        atoms.info["material_id"] = row["material_id"]
        if "energy_per_atom" in row:
            atoms.info["energy_per_atom"] = float(row["energy_per_atom"])
        out.append(atoms)
    return out


def _compare(generated: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    from scipy.stats import wasserstein_distance

    g, r = generated[np.isfinite(generated)], reference[np.isfinite(reference)]
    out: dict[str, Any] = {"n_generated": int(g.size), "n_reference": int(r.size)}
    for label, values in (("generated", g), ("reference", r)):
        out[f"median_{label}"] = float(np.median(values)) if values.size else None
        out[f"mean_{label}"] = float(np.mean(values)) if values.size else None
    out["wasserstein"] = float(wasserstein_distance(g, r)) if g.size and r.size else None
    return out


def _fraction(mask: np.ndarray) -> float | None:
    return float(np.mean(mask)) if len(mask) else None


def evaluate_model(
    generated: Sequence[Atoms],
    reference: Sequence[Atoms],
    out: str | os.PathLike | None = None,
    *,
    element: str = "C",
    cutoff: float = 1.8,
    min_distance: float = 1.1,
    symprec: float = 0.1,
    calculator: Any = "chgnet",
    labels: tuple[str, str] = ("generated", "held-out data"),
) -> dict[str, Any]:
    """Compare generated structures with reference (held-out) data.

    Parameters
    ----------
    generated, reference : sequence of ase.Atoms
        The two sets.
    out : path, optional
        Folder for ``metrics.json`` and the PNG plots (nothing written when ``None``).
    element : str
        Element of the coordination counts (``element``–``element``) and of the
        ``only_element`` check (a structure with any other element is not valid).
    cutoff : float
        Hard coordination cutoff in Å.
    min_distance : float
        Short-contact threshold of the ``element``–``element`` pair in Å.
    symprec : float
        spglib tolerance for the space group.
    calculator : str, ase calculator or None
        Potential for energies per atom (a name for :func:`aseguide.calculators.get_calculator`);
        ``None`` skips the energies.
    labels : (str, str)
        Legend labels of the two sets in the plots.

    Returns
    -------
    dict
        ``short_distance_screen`` (fraction without short contacts), ``only_element``
        (fraction made of ``element`` alone), ``valid`` (both), ``volume_per_atom``, ``coordination``, ``spacegroup``,
        ``energy_per_atom`` (absent without calculator); each has the generated and
        reference values, distributions also the Wasserstein distance; ``plots``
        lists the files written.

    Examples
    --------
    >>> from ase.build import bulk
    >>> m = evaluate_model([bulk("C", "diamond", a=3.567)], [bulk("C", "diamond", a=3.7)], calculator=None)
    >>> m["volume_per_atom"]["wasserstein"] > 0
    True
    """
    from aseguide.analysis import compute_energies, coordination_numbers, screen_distances, volume_per_atom
    from aseguide.analysis.plots import plot_distributions
    from aseguide.analysis.symmetry import spacegroup_number

    if element not in atomic_numbers:
        raise ValueError(f"unknown element {element!r}")
    generated, reference = list(generated), list(reference)
    if not generated or not reference:
        raise ValueError("both the generated and the reference set must be non-empty")
    sets = {"generated": generated, "reference": reference}
    metrics: dict[str, Any] = {"n_generated": len(generated), "n_reference": len(reference),
                               "settings": {"element": element, "cutoff": cutoff, "min_distance": min_distance,
                                            "symprec": symprec, "calculator": None if calculator is None
                                            else str(calculator if isinstance(calculator, str)
                                                     else type(calculator).__name__)}}
    pair = f"{element}-{element}"
    screens = {k: screen_distances(v, thresholds={pair: min_distance}) for k, v in sets.items()}
    metrics["short_distance_screen"] = {k: _fraction(s.ok) for k, s in screens.items()}
    # A model trained on one element can still emit others (a collapsed cell puts the species
    # head out of its training distribution); such structures are not counted as valid.
    only_element = {k: np.array([bool(np.all(a.numbers == atomic_numbers[element])) for a in v], dtype=bool)
                    for k, v in sets.items()}
    metrics["only_element"] = {k: _fraction(m) for k, m in only_element.items()}
    metrics["valid"] = {k: _fraction(screens[k].ok & only_element[k]) for k in sets}

    volumes = {k: np.asarray(volume_per_atom(v), dtype=float) for k, v in sets.items()}
    metrics["volume_per_atom"] = _compare(volumes["generated"], volumes["reference"])

    def counts(structures: list[Atoms]) -> np.ndarray:
        parts = [coordination_numbers(a, element, element, cutoff=cutoff) for a in structures]
        return np.concatenate(parts).astype(float) if parts else np.zeros(0)

    cn = {k: counts(v) for k, v in sets.items()}
    coordination = _compare(cn["generated"], cn["reference"])
    for k in (2, 3, 4):
        coordination[f"fraction_{k}_generated"] = _fraction(cn["generated"] == k)
        coordination[f"fraction_{k}_reference"] = _fraction(cn["reference"] == k)
    metrics["coordination"] = coordination

    def above_p1(structures: list[Atoms]) -> np.ndarray:
        numbers = []
        for atoms in structures:
            try:
                numbers.append(spacegroup_number(atoms, symprec=symprec))
            except Exception:  # spglib failure: counted as not recognised
                numbers.append(1)
        return np.asarray(numbers) > 1

    metrics["spacegroup"] = {f"above_P1_{k}": _fraction(above_p1(v)) for k, v in sets.items()}

    energies = None
    if calculator is not None:
        if isinstance(calculator, str):
            from aseguide.calculators import get_calculator

            calculator = get_calculator(calculator)
        energies = {k: np.asarray(compute_energies(v, calculator), dtype=float) for k, v in sets.items()}
        metrics["energy_per_atom"] = _compare(energies["generated"], energies["reference"])
        metrics["energy_per_atom"]["failed_generated"] = int(np.sum(~np.isfinite(energies["generated"])))

    plots: list[str] = []
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        names = {"generated": labels[0], "reference": labels[1]}
        plots.append(plot_distributions({names[k]: v for k, v in volumes.items()}, "volume per atom (Å³)",
                                        out / "volume_per_atom.png"))
        plots.append(plot_distributions({names[k]: v for k, v in cn.items()},
                                        f"{pair} coordination (hard, {cutoff} Å)", out / "coordination.png",
                                        integer=True))
        if energies is not None:
            plots.append(plot_distributions({names[k]: v[np.isfinite(v)] for k, v in energies.items()},
                                            "energy per atom (eV/atom)", out / "energy_per_atom.png"))
        metrics["plots"] = [Path(p).name for p in plots]
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def main(argv: Sequence[str] | None = None) -> Mapping[str, Any]:
    """Command line: ``python -m aseguide.evaluation GENERATED (--model-dir DIR | --reference REF) --out OUT``.

    Examples
    --------
    >>> main(["runs/unguided", "--model-dir", "runs/carbon-24-small", "--out", "eval"])  # doctest: +SKIP
    """
    from aseguide.analysis import read_structures

    parser = argparse.ArgumentParser(prog="python -m aseguide.evaluation", description=__doc__.split("\n\n")[0])
    parser.add_argument("generated", help="run folder or structure file of generated structures")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--model-dir", help="model folder with split.json (held-out set as reference)")
    group.add_argument("--reference", help="reference structures (folder or file)")
    parser.add_argument("--out", default="evaluation", help="output folder (default: %(default)s)")
    parser.add_argument("--calculator", default="chgnet", help="potential name, or 'none' (default: chgnet)")
    parser.add_argument("--limit", type=int, help="use at most this many generated structures")
    args = parser.parse_args(argv)
    generated = list(read_structures(args.generated))[: args.limit]
    reference = load_held_out(args.model_dir) if args.model_dir else list(read_structures(args.reference))
    calculator = None if args.calculator.lower() == "none" else args.calculator
    metrics = evaluate_model(generated, reference, args.out, calculator=calculator)
    print(json.dumps({k: v for k, v in metrics.items() if k != "settings"}, indent=1))
    return metrics


if __name__ == "__main__":
    main()
