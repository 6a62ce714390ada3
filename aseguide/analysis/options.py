"""Settings of the validation pipeline: :class:`AnalysisOptions`.

Examples
--------
>>> AnalysisOptions(symprec=0.01).validate()
>>> AnalysisOptions(n_best=-1).validate()
Traceback (most recent call last):
...
ValueError: bad option n_best=-1
"""

from __future__ import annotations

from dataclasses import dataclass

from aseguide.analysis.fingerprint import DEFAULT_SIMILARITY_THRESHOLD
from aseguide.analysis.screening import DEFAULT_DISTANCE_FACTOR

__all__ = ["AnalysisOptions"]


@dataclass
class AnalysisOptions:
    """Settings of :func:`analyze` (all optional).

    Attributes
    ----------
    symmetrize:
        Run step 2.
    symprec, angle_tolerance, primitive:
        spglib settings of :func:`symmetrize`.
    distance_factor, pair_thresholds, min_distance:
        Settings of :func:`screen_distances`.
    similarity_threshold:
        Fingerprint similarity from which two structures are the same (steps 4, 5).
    same_composition:
        Only structures of the same reduced formula can be duplicates / known.
    structure_matcher:
        Also deduplicate with pymatgen's ``StructureMatcher``.
    r_max, bin_width, sigma:
        RDF fingerprint settings.
    reference_max_e_above_hull:
        Ignore references more than this many eV/atom above the hull (the paper uses
        0.5); ``None`` keeps all.
    relax, fmax, steps:
        Relax before computing energies (off by default).
    n_best:
        Rows of the best-candidate table.
    """

    symmetrize: bool = True
    symprec: float = 0.1
    angle_tolerance: float = -1.0
    primitive: bool = True
    distance_factor: float = DEFAULT_DISTANCE_FACTOR
    pair_thresholds: dict | None = None
    min_distance: float | None = None
    similarity_threshold: float = DEFAULT_SIMILARITY_THRESHOLD
    same_composition: bool = True
    structure_matcher: bool = False
    r_max: float = 10.0
    bin_width: float = 0.05
    sigma: float = 0.05
    reference_max_e_above_hull: float | None = None
    relax: bool = False
    fmax: float = 0.05
    steps: int = 200
    n_best: int = 10

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        checks = [
            ("symprec", self.symprec > 0), ("distance_factor", self.distance_factor > 0),
            ("similarity_threshold", -1 < self.similarity_threshold <= 1), ("r_max", self.r_max > 0),
            ("bin_width", self.bin_width > 0), ("sigma", self.sigma >= 0), ("fmax", self.fmax > 0),
            ("steps", self.steps >= 0), ("n_best", self.n_best >= 0),
        ]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"bad option {name}={getattr(self, name)!r}")
        if self.min_distance is not None and not self.min_distance > 0:
            raise ValueError(f"bad option min_distance={self.min_distance!r}")
