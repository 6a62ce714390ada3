"""Old path of :mod:`aseguide.cli.generate` (``aseguide generate``)."""

from aseguide.cli.generate import register, run_generate

__all__ = ["register", "run_generate"]
