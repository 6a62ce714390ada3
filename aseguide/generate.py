"""Compatibility path: generation runs now live in :mod:`aseguide.runs`."""

from aseguide.runs.batching import (  # noqa: F401
    AUTO_BATCH_SIZE_CPU,
    auto_batch_size,
    choose_batch_size,
    is_out_of_memory,
    split_seed,
)
from aseguide.runs.config import GUIDANCE_KEYS, GenerateConfig, build_objective  # noqa: F401
from aseguide.runs.generate import RunSummary, generate  # noqa: F401

__all__ = [
    "GenerateConfig",
    "generate",
    "build_objective",
    "GUIDANCE_KEYS",
    "RunSummary",
    "split_seed",
    "is_out_of_memory",
    "auto_batch_size",
    "choose_batch_size",
    "AUTO_BATCH_SIZE_CPU",
]
