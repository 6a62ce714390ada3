"""Precision policies: which arithmetic the denoising network runs in.

The default is ``"fp32"`` (MatterGen's own arithmetic) until ``"mixed"`` has been
validated on a GPU.

Only the network call (GemNet, inside MatterGen's ``score_fn``) is ever run in reduced
precision; its outputs are cast back to the dtype of the state (float32). The sampler
math (predictor, corrector, re-noising), cell inversions, Tweedie estimates and the
guidance losses always run in full float32: a ``linalg.inv`` of the cell in bf16 is
what breaks MatterGen when the whole sampler is autocast.

Policies
--------
``"mixed"``
    On CUDA: TF32 matrix multiplications and a bfloat16 :func:`torch.autocast` around
    the network only. On any other device nothing changes: results are bit-identical
    to ``"fp32"``.
``"fp32"``
    Strict float32 everywhere: TF32 matmuls are switched off for the network call
    (MatterGen's own setting), no autocast.
``"bf16"``
    TF32 (on CUDA) and a bfloat16 autocast around the network on every device, CPU
    included: the mixed policy's arithmetic made testable without a GPU.

The global matmul precision (:func:`torch.get_float32_matmul_precision`) is restored
when the network call returns, also after an exception.

Examples
--------
>>> import torch
>>> with network_precision("bf16", "cpu"):
...     torch.ones(2, 2) @ torch.ones(2, 2)
tensor([[2., 2.],
        [2., 2.]], dtype=torch.bfloat16)
>>> with network_precision("mixed", "cpu"):
...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
torch.float32
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["PRECISIONS", "DEFAULT_PRECISION", "check_precision", "network_precision", "uses_autocast"]

#: Accepted policy names.
PRECISIONS = ("mixed", "fp32", "bf16")
#: The policy used when none is given.
DEFAULT_PRECISION = "fp32"
# "mixed" is meant to become the default once a GPU run has shown that it does not change
# what is generated (KS tests on >= 500 structures per policy); until then the
# default is MatterGen's own arithmetic.


def check_precision(name: object) -> str:
    """Return ``name`` if it is a known policy.

    Parameters
    ----------
    name : object
        A policy name (see :data:`PRECISIONS`).

    Returns
    -------
    str
        The name.

    Raises
    ------
    ValueError
        Unknown name or not a string; the message lists the known policies.
    """
    if not isinstance(name, str) or name not in PRECISIONS:
        raise ValueError(f"unknown precision policy {name!r}; choose one of {list(PRECISIONS)} "
                         "('mixed': TF32 + bf16 network on CUDA, fp32 elsewhere; 'fp32': strict float32; "
                         "'bf16': bf16 network on any device)")
    return name


def uses_autocast(policy: str, device: torch.device | str) -> bool:
    """Whether ``policy`` runs the network under a bfloat16 autocast on ``device``."""
    device_type = torch.device(device).type
    return policy == "bf16" or (policy == "mixed" and device_type == "cuda")


@contextlib.contextmanager
def network_precision(policy: str, device: torch.device | str) -> Iterator[None]:
    """Context in which to call the network under ``policy`` on ``device``.

    Parameters
    ----------
    policy : str
        ``"mixed"``, ``"fp32"`` or ``"bf16"`` (see the module documentation).
    device : torch.device or str
        The device the network runs on; TF32 and the default's autocast act on CUDA only.

    Yields
    ------
    None
        Inside the context matmuls and autocast follow the policy; the previous global
        matmul precision is restored on exit.

    Raises
    ------
    ValueError
        Unknown policy.
    """
    check_precision(policy)
    device_type = torch.device(device).type
    if device_type != "cuda" and policy != "bf16":
        yield  # nothing to change: bit-identical to plain float32
        return
    previous = torch.get_float32_matmul_precision()
    try:
        if device_type == "cuda":
            torch.set_float32_matmul_precision("highest" if policy == "fp32" else "high")
        if uses_autocast(policy, device_type):
            with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        torch.set_float32_matmul_precision(previous)
