"""A tiny, randomly initialised MatterSim model saved in mattersim's own checkpoint format.

MatterSim's pretrained weights are fetched by mattersim at run time (not reachable
offline); this builds the same M3GNet architecture, small, with random weights, and saves
it with ``mattersim.forcefield.potential.Potential.save`` so that the real loading path
(``Potential.from_checkpoint`` via :func:`aseguide.calculators.get_calculator`) is used.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["make_tiny_mattersim", "TINY_MATTERSIM_ARGS"]

#: M3GNet sizes of the tiny model (a few thousand parameters).
TINY_MATTERSIM_ARGS = dict(num_blocks=2, units=16, max_l=2, max_n=3, cutoff=4.5, threebody_cutoff=3.5)


def make_tiny_mattersim(path: str | os.PathLike, seed: int = 0) -> Path:
    """Build and save a tiny random MatterSim model; returns the ``.pth`` path.

    Examples
    --------
    >>> from aseguide.calculators import get_calculator
    >>> ckpt = make_tiny_mattersim(tmp_path / "tiny.pth")          # doctest: +SKIP
    >>> calc = get_calculator("mattersim", checkpoint=ckpt, device="cpu")  # doctest: +SKIP
    """
    from mattersim.forcefield.m3gnet.m3gnet import M3Gnet
    from mattersim.forcefield.potential import Potential

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = M3Gnet(device="cpu", **TINY_MATTERSIM_ARGS)
        # random final-layer weights give ~meV energies; scale them up so that
        # gradients are well above float32 noise in tests
        with torch.no_grad():
            for p in model.final.parameters():
                p.mul_(10.0)
        Potential(model, device="cpu").save(str(path))
    finally:
        torch.random.set_rng_state(state)
    return path
