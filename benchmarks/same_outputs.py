"""Write a fixed set of outputs, to compare two versions of aseguide file by file.

Runs, with fixed seeds: ``aseguide generate examples/volume_tiny.yaml`` (tiny random
MatterGen), a guided run on the analytic Gaussian backend (coordination + repulsion,
forward and backward guidance, K = 3), and ``aseguide analyze`` of the first run. Run it
at two commits and compare the folders (``diff -r``): a refactoring that changes no
behaviour leaves every structure and number identical.

Usage::

    python benchmarks/same_outputs.py OUT_DIR
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "aseguide", "generate", str(root / "examples" / "volume_tiny.yaml"),
                    "--output", str(out / "tiny_run"), "-q"], check=True)
    subprocess.run([sys.executable, "-m", "aseguide", "analyze", str(out / "tiny_run"), "--objective",
                    "volume_per_atom:12.0", "--out", str(out / "tiny_report"), "-q"], check=True)

    from aseguide import GuidedDiffusion
    from aseguide.constraints import Combined, Coordination, MinDistance, VolumePerAtom
    from aseguide.models.analytic import GaussianBackend

    torch.set_num_threads(1)
    objective = Combined([Coordination("C", "C", target=3, cutoff=1.8), MinDistance(1.1), VolumePerAtom(10.0)])
    with GuidedDiffusion(GaussianBackend(), objective, batch_size=6, num_atoms=5, steps=40, seed=7,
                         forward_strength=0.02, backward_strength=0.05, backward_steps=2, recurrence=3) as opt:
        opt.run()
    opt.write(str(out / "analytic.extxyz"))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
