"""Benchmark: per-structure cost of GRACE energies in the validation pipeline's energy stage.

Evaluates ``aseguide.analysis.compute_energies`` (what ``aseguide analyze --calculator
grace`` runs, largest structure first) with ``get_calculator("grace", model=...)`` on the
first ``--n`` crystals of ``../shared/data/dft-benchmarks/mptrj-random-1k.xyz``, twice:
the first pass includes TensorFlow's tracing and, for XLA-compiled models, one compilation
per new padded shape; the second pass reuses them. The model is either

* ``--model NAME_OR_FOLDER``: a GRACE model (e.g. ``GRACE-2L-OMAT-large-ft-AM`` where it
  can be downloaded, or its folder), or
* ``--build tiny|large`` (default ``large``): a random-weight model built with
  tensorpotential (:func:`aseguide.testing.tiny_grace.make_tiny_grace`) with the tiny test
  sizes or the sizes of tensorpotential's ``GRACE_2LAYER_latest`` "large" preset (the
  architecture family of ``GRACE-2L-OMAT-large-ft-AM``), saved XLA-compiled like the
  released models unless ``--no-jit``.

Run::

    python benchmarks/grace_energy_cost.py --build large --n 20 --device cpu

Prints a JSON line: seconds to build/load, both passes (total and per structure).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from ase.io import read

from aseguide.analysis import compute_energies
from aseguide.calculators import get_calculator

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dft-benchmarks" / "mptrj-random-1k.xyz"

#: tensorpotential's GRACE_2LAYER_latest "large" preset (rcut 6 Å).
LARGE = dict(rcut=6.0, lmax=(4, 3), max_order=4, indicator_lmax=3, n_rad_max=(42, 32),
             prod_func_n_max=(42, 64), n_mlp_dens=16, n_rad_base=10, embedding_size=128, avg_n_neigh=40.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="GRACE model name or folder (instead of --build)")
    parser.add_argument("--build", choices=("tiny", "large"), default="large")
    parser.add_argument("--no-jit", action="store_true", help="built model without XLA compilation")
    parser.add_argument("--n", type=int, default=20, help="number of structures")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    structures = read(DATA, index=f":{args.n}")
    out = {"n_structures": len(structures), "atoms": int(sum(len(a) for a in structures)), "device": args.device}
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")
        model = args.model
        if model is None:
            from aseguide.testing.tiny_grace import make_tiny_grace

            t0 = time.perf_counter()
            sizes = LARGE if args.build == "large" else {}
            model = make_tiny_grace(Path(tmp) / "grace", structures, jit_compile=not args.no_jit, **sizes)
            out.update(build=args.build, jit=not args.no_jit, build_and_save_s=time.perf_counter() - t0)
        t0 = time.perf_counter()
        calc = get_calculator("grace", model=model, device=args.device)
        out["load_s"] = time.perf_counter() - t0
        for name in ("first_pass", "second_pass"):
            t0 = time.perf_counter()
            energies = compute_energies(structures, calc)
            seconds = time.perf_counter() - t0
            out[f"{name}_s"] = seconds
            out[f"{name}_per_structure_s"] = seconds / len(structures)
        out["finite"] = int(np.isfinite(energies).sum())
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
