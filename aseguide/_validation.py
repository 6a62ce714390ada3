"""Checks shared by the guidance objectives and the analysis objectives (no torch here).

Examples
--------
>>> check_volume_target(7.0, [(7.0, 7.0)])
>>> check_volume_target(0, [(0.0, 0.0)])
Traceback (most recent call last):
...
ValueError: volume target 0 is not positive: a cell volume (per atom) is > 0; give a value > 0 or an interval (lo, hi) with hi > 0
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["check_volume_target"]


def check_volume_target(value: Any, intervals: Iterable[tuple[float, float]]) -> None:
    """Refuse a volume (per atom) target that no cell can reach.

    Parameters
    ----------
    value:
        The target as the user gave it (named in the error).
    intervals:
        Its intervals ``(lo, hi)``, already parsed.

    Raises
    ------
    ValueError
        When a bound is negative or an interval ends at or below 0 (e.g. ``0`` or
        ``-3``), naming ``value``.
    """
    for lo, hi in intervals:
        if lo < 0 or hi <= 0:
            raise ValueError(f"volume target {value!r} is not positive: a cell volume (per atom) is > 0; "
                             "give a value > 0 or an interval (lo, hi) with hi > 0")
