"""Make mattergen 1.0.3 (as published on PyPI) importable on a modern stack.

Three problems of the published wheel are handled here, at import time, without
editing anything in site-packages:

1. ``torch_scatter`` / ``torch_sparse`` are compiled extensions that MatterGen imports;
   when they are missing, :mod:`aseguide._scatter` registers pure-PyTorch stand-ins
   *before* MatterGen is imported (and only then).
2. numpy 2 removed ``np.math``, which GemNet's basis construction uses for factorials;
   the standard-library :mod:`math` module is exposed under that name when absent.
3. The wheel lacks ``common/gemnet/gemnet-dT.json`` (GemNet scale factors). Those
   factors are stored in every checkpoint's ``state_dict``; a missing file therefore
   means "no preset value" and the layer keeps its initial value until the state dict
   is loaded.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from functools import wraps

import numpy as np

from aseguide._scatter import install as _install_scatter

_PREPARED = False


class MatterGenUnavailable(ImportError):
    """MatterGen (the ``mattergen`` package) cannot be imported."""


def prepare_mattergen() -> None:
    """Apply the compatibility measures above, then import the parts of MatterGen used.

    Idempotent. Raises :class:`MatterGenUnavailable` with install instructions when the
    ``mattergen`` package is missing.
    """
    global _PREPARED
    if _PREPARED:
        return
    _install_scatter()
    if not hasattr(np, "math"):
        np.math = math  # numpy >= 2 dropped the alias; GemNet only uses factorial
    try:
        import mattergen  # noqa: F401
        # mattergen prints its install path on import; keep the user's stdout clean
        with contextlib.redirect_stdout(io.StringIO()):
            import mattergen.common.utils.globals  # noqa: F401
        from mattergen.common.gemnet.layers import scaling
    except ImportError as error:  # pragma: no cover - exercised only without mattergen
        raise MatterGenUnavailable(
            f"the MatterGen backend needs the 'mattergen' package ({error}); "
            "run ./install.sh, or `pip install --no-deps mattergen==1.0.3` and its real dependencies"
        ) from error

    original = scaling.read_value_json
    if not getattr(original, "__aseguide_wrapped__", False):

        @wraps(original)
        def read_value_json(path: str, key: str):
            if not os.path.exists(path):
                return None
            return original(path, key)

        read_value_json.__aseguide_wrapped__ = True  # type: ignore[attr-defined]
        scaling.read_value_json = read_value_json
    _PREPARED = True
