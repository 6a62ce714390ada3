"""The number of atoms of every structure of a batch: fixed, listed, or drawn from a distribution.

Examples
--------
>>> sample_num_atoms(4, 3, seed=0).tolist()
[4, 4, 4]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

__all__ = ["sample_num_atoms"]


def sample_num_atoms(num_atoms, batch_size: int, seed: int, max_atoms: int | None = None) -> torch.Tensor:
    """Number of atoms of every structure, ``(batch_size,)`` long tensor.

    Parameters
    ----------
    num_atoms : int, sequence of int, mapping or str
        An int (all structures), a sequence of ``batch_size`` ints, a distribution
        ``{n: probability}``, or the name of a MatterGen distribution (e.g.
        ``"ALEX_MP_20"``). Distributions are sampled with ``numpy.random.default_rng(seed)``
        (independent of any global random state).
    batch_size, seed : int
        Batch size and seed.
    max_atoms : int or None
        Largest accepted structure (``None``: no limit); the whole support of a
        distribution is checked.

    Returns
    -------
    torch.Tensor
        ``(batch_size,)`` long tensor.

    Raises
    ------
    ValueError
        For non-positive sizes, bad probabilities, an unknown distribution name, or a
        size above ``max_atoms``, naming the value.

    Examples
    --------
    >>> sample_num_atoms({4: 0.5, 8: 0.5}, 6, seed=0).tolist()
    [8, 4, 4, 4, 8, 8]
    """
    if isinstance(num_atoms, str):
        from mattergen.common.data.num_atoms_distribution import NUM_ATOMS_DISTRIBUTIONS

        if num_atoms not in NUM_ATOMS_DISTRIBUTIONS:
            raise ValueError(f"unknown num_atoms distribution {num_atoms!r}; known: {sorted(NUM_ATOMS_DISTRIBUTIONS)}")
        num_atoms = dict(NUM_ATOMS_DISTRIBUTIONS[num_atoms])
    if isinstance(num_atoms, Mapping):
        sizes = np.array([int(n) for n in num_atoms], dtype=np.int64)
        probs = np.array([float(p) for p in num_atoms.values()], dtype=np.float64)
        if len(sizes) == 0 or (sizes < 1).any() or not np.isfinite(probs).all() or (probs < 0).any() \
                or probs.sum() <= 0:
            raise ValueError(f"num_atoms distribution must map sizes >= 1 to probabilities >= 0 "
                             f"with a positive sum, got {num_atoms!r}")
        support = sizes[probs > 0]
        _check_max_atoms(int(support.max()), max_atoms)
        counts = np.random.default_rng(seed).choice(sizes, size=batch_size, p=probs / probs.sum())
        return torch.as_tensor(counts, dtype=torch.long)
    if isinstance(num_atoms, (int, np.integer)) and not isinstance(num_atoms, bool):
        counts = [int(num_atoms)] * batch_size
    elif isinstance(num_atoms, (Sequence, np.ndarray, torch.Tensor)) and not isinstance(num_atoms, str):
        counts = [int(n) for n in num_atoms]
        if len(counts) != batch_size:
            raise ValueError(f"num_atoms has {len(counts)} entries but batch_size is {batch_size}")
    else:
        raise ValueError(f"num_atoms must be an int, a list, a {{n: probability}} dict or a distribution name, "
                         f"got {num_atoms!r}")
    if min(counts) < 1:
        raise ValueError(f"num_atoms must be >= 1, got {min(counts)}")
    _check_max_atoms(max(counts), max_atoms)
    return torch.as_tensor(counts, dtype=torch.long)


def _check_max_atoms(largest: int, max_atoms: int | None) -> None:
    if max_atoms is not None and largest > max_atoms:
        raise ValueError(
            f"num_atoms={largest} exceeds the model's max_atoms={max_atoms}; set model.max_atoms = None "
            "(or a larger value) to override at your own risk"
        )
