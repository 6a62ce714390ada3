"""Compatibility path: generation runs now live in :mod:`aseguide.runs.generate`."""

from aseguide.runs.generate import (  # noqa: F401
    AUTO_BATCH_SIZE_CPU,
    GUIDANCE_KEYS,
    GenerateConfig,
    RunSummary,
    auto_batch_size,
    build_objective,
    choose_batch_size,
    generate,
    is_out_of_memory,
    split_seed,
)

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
