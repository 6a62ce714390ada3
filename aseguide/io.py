"""Compatibility path: the structure writers now live in :mod:`aseguide.sampling.writers`."""

from aseguide.sampling.writers import (  # noqa: F401
    FrameWriter,
    finite_structure,
    write_structures,
)

__all__ = [
    "FrameWriter",
    "write_structures",
    "finite_structure",
]
