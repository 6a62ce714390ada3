"""Steps 4 and 5: RDF fingerprints, similarity, deduplication and novelty.

The fingerprint is the one of Valle & Oganov (Acta Cryst. A 66, 507, 2010), the
choice of the paper's validation pipeline. For each pair of elements (A, B)

.. math::

    F_{AB}(R) = \\sum_{i \\in A} \\sum_{j \\in B} \\frac{G_\\sigma(R - R_{ij})}
                {4 \\pi R_{ij}^2 \\, (N_A N_B / V) \\, \\Delta} - 1,

summed over the atoms *i* of the cell and all periodic images *j* within
``r_max``, with gaussian smearing :math:`G_\\sigma` integrated over bins of width
:math:`\\Delta`. The per-pair functions are weighted by
:math:`w_{AB} = N_A N_B / \\sum N_A N_B` (both orders of a mixed pair counted) and
concatenated into one vector of unit length, so that the similarity of two
structures is the cosine :math:`F_1 \\cdot F_2` (1 for identical structures; the
cosine distance of Oganov is :math:`(1 - F_1 \\cdot F_2)/2`). The fingerprint does
not change under translations, supercells or a change of cell setting.

Fingerprints of thousands of structures are built by one weighted histogram of all
distances on a fine grid followed by one matrix product with the smearing kernel;
similarities are matrix products of the fingerprint matrices, in blocks.

Examples
--------
>>> from ase.build import bulk
>>> from aseguide.analysis import rdf_fingerprints, similarity_matrix
>>> a = bulk("C", "diamond", a=3.567)
>>> fp = rdf_fingerprints([a, a.repeat((2, 1, 1)), bulk("Si")], species=["C", "Si"])
>>> s = similarity_matrix(fp)
>>> round(float(s[0, 1]), 6), bool(s[0, 2] < 0.5)
(1.0, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from scipy import sparse
from scipy.special import erf

from aseguide.constraints._neighbor_pairs import neighbor_pairs

__all__ = [
    "Fingerprints",
    "rdf_fingerprints",
    "similarity_matrix",
    "DedupResult",
    "deduplicate",
    "NoveltyResult",
    "novelty",
    "DEFAULT_SIMILARITY_THRESHOLD",
]

#: Default similarity from which two structures count as the same. Measured with the
#: default fingerprint settings (r_max 10 Å, bins 0.05 Å, σ 0.05 Å) on the first 300
#: structures of carbon_24/val.csv: 99.3 % of copies rattled by 0.02 Å (gaussian, per
#: coordinate) score ≥ 0.97 against their originals (100 % at 0.01 Å), while only 35 of
#: the 44,311 pairs that pymatgen's StructureMatcher calls different score ≥ 0.97
#: (dedup keeps 196 structures where StructureMatcher, which tolerates strain, keeps 181).
DEFAULT_SIMILARITY_THRESHOLD = 0.97


@dataclass
class Fingerprints:
    """RDF fingerprints of a set of structures (rows of unit length).

    Attributes
    ----------
    matrix:
        ``(n_structures, n_pairs * n_bins)`` sparse CSR matrix (only the blocks of
        the element pairs present in a structure are stored); row ``k`` is structure
        ``k``. :meth:`toarray` gives a dense array.
    species:
        Atomic numbers defining the element pairs, sorted.
    pairs:
        Element-pair labels in the order of the blocks of ``matrix``, e.g. ``"C-C"``.
    compositions:
        Reduced formula of each structure (used to restrict comparisons).
    r_max, bin_width, sigma:
        The settings used.
    """

    matrix: sparse.csr_matrix
    species: tuple[int, ...]
    pairs: list[str]
    compositions: list[str] = field(default_factory=list)
    r_max: float = 10.0
    bin_width: float = 0.05
    sigma: float = 0.05

    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    def toarray(self) -> np.ndarray:
        """The fingerprints as a dense ``(n_structures, n_pairs * n_bins)`` array."""
        return self.matrix.toarray()

    def settings(self) -> tuple:
        return (self.species, self.r_max, self.bin_width, self.sigma)


def _species_of(structures: Sequence[Atoms]) -> tuple[int, ...]:
    found: set[int] = set()
    for atoms in structures:
        found.update(int(z) for z in np.unique(atoms.numbers))
    return tuple(sorted(found))


def _smearing_kernel(fine_edges: np.ndarray, edges: np.ndarray, sigma: float) -> np.ndarray:
    """K[f, b]: mass of a gaussian centred on fine bin f falling into coarse bin b."""
    centres = 0.5 * (fine_edges[:-1] + fine_edges[1:])
    if sigma <= 0:
        idx = np.clip(np.searchsorted(edges, centres, side="right") - 1, 0, len(edges) - 2)
        kernel = np.zeros((len(centres), len(edges) - 1))
        kernel[np.arange(len(centres)), idx] = 1.0
        return kernel
    z = (edges[None, :] - centres[:, None]) / (np.sqrt(2.0) * sigma)
    cdf = 0.5 * (1.0 + erf(z))
    return np.diff(cdf, axis=1)


def rdf_fingerprints(
    structures: Sequence[Atoms],
    species: Sequence[int | str] | None = None,
    r_max: float = 10.0,
    bin_width: float = 0.05,
    sigma: float = 0.05,
    chunk_size: int = 256,
) -> Fingerprints:
    """Valle–Oganov RDF fingerprints of many structures (unit vectors).

    Parameters
    ----------
    structures:
        Crystals (periodic in 3D).
    species:
        Elements (symbols or atomic numbers) spanning the pair blocks. Structures
        compared with each other must use the same species; by default the elements
        present in ``structures``. An element outside ``species`` raises.
    r_max:
        Largest distance in Å.
    bin_width:
        Bin width :math:`\\Delta` in Å.
    sigma:
        Gaussian smearing in Å (0 for a plain histogram).
    chunk_size:
        Structures histogrammed at once (memory only).

    Returns
    -------
    Fingerprints

    Raises
    ------
    ValueError
        For an empty list, bad settings, or an element missing from ``species``.

    Examples
    --------
    >>> from ase.build import bulk
    >>> fp = rdf_fingerprints([bulk("NaCl", "rocksalt", a=5.64)])
    >>> fp.pairs, fp.matrix.shape
    (['Na-Na', 'Na-Cl', 'Cl-Cl'], (1, 600))
    """
    if len(structures) == 0:
        raise ValueError("no structures given")
    if not r_max > 0 or not bin_width > 0 or sigma < 0:
        raise ValueError(f"need r_max > 0, bin_width > 0, sigma >= 0; got {r_max!r}, {bin_width!r}, {sigma!r}")
    if species is None:
        zs = _species_of(structures)
    else:
        from aseguide.analysis.screening import _number

        zs = tuple(sorted({_number(s) for s in species}))
    index_of = {z: k for k, z in enumerate(zs)}
    n_el = len(zs)
    # element pairs a <= b, in a fixed order
    pair_index = -np.ones((n_el, n_el), dtype=np.int64)
    pairs = []
    for a in range(n_el):
        for b in range(a, n_el):
            pair_index[a, b] = len(pairs)
            pairs.append(f"{chemical_symbols[zs[a]]}-{chemical_symbols[zs[b]]}")
    n_pairs = len(pairs)
    n_bins = int(round(r_max / bin_width))
    r_top = n_bins * bin_width
    edges = np.linspace(0.0, r_top, n_bins + 1)
    # fine grid (5 per bin) reaching 4 sigma past r_max, so that the gaussian tails of
    # pairs just beyond r_max enter the last bins: the fingerprint is continuous in
    # every distance (no jump when a pair crosses r_max or a grid line)
    step = bin_width / 5
    n_fine = int(np.ceil((r_top + 4.0 * sigma) / step)) + 1
    fine_edges = np.arange(n_fine + 1) * step
    kernel = _smearing_kernel(fine_edges, edges, sigma)
    r_search = float(fine_edges[-1] - step / 2)

    compositions = []
    blocks = []
    for start in range(0, len(structures), chunk_size):
        chunk = structures[start:start + chunk_size]
        rows_all, fine_all, weight_all = [], [], []
        # one row per (structure, element pair present in it): the layout is sparse, so
        # sets spanning many elements cost no more than single-element ones
        row_struct, row_pair, row_norm, row_w = [], [], [], []
        for c, atoms in enumerate(chunk):
            z = np.asarray(atoms.numbers)
            compositions.append(atoms.symbols.formula.reduce()[0].format("hill"))
            try:
                el = np.array([index_of[int(x)] for x in z], dtype=np.int64)
            except KeyError as exc:
                raise ValueError(
                    f"structure {start + c} ({atoms.get_chemical_formula()}) has element "
                    f"{chemical_symbols[int(exc.args[0])]!r} outside the fingerprint species "
                    f"{[chemical_symbols[s] for s in zs]}"
                ) from None
            volume = abs(float(np.linalg.det(atoms.cell.array)))
            counts = np.bincount(el, minlength=n_el).astype(float)
            here = np.flatnonzero(counts)
            local = -np.ones((n_el, n_el), dtype=np.int64)
            for ia, a in enumerate(here):
                for b in here[ia:]:
                    local[a, b] = len(row_struct)
                    row_struct.append(c)
                    row_pair.append(int(pair_index[a, b]))
                    row_norm.append(counts[a] * counts[b] / volume)
                    row_w.append(counts[a] * counts[b] * (1.0 if a == b else 2.0))
            i, j, d = neighbor_pairs(atoms, r_search)
            ea, eb = el[i], el[j]
            keep = (ea <= eb) & (d > 0) & (d < r_search)
            ea, eb, d = ea[keep], eb[keep], d[keep]
            # linear share between the two nearest fine-grid centres
            u = d / step - 0.5
            lo = np.floor(u).astype(np.int64)
            t = u - lo
            row = local[ea, eb]
            w = 1.0 / d**2
            rows_all += [row, row]
            fine_all += [np.clip(lo, 0, n_fine - 1), np.clip(lo + 1, 0, n_fine - 1)]
            weight_all += [w * (1.0 - t), w * t]
        n_rows = len(row_struct)
        rows = np.concatenate(rows_all)
        cols = np.concatenate(fine_all)
        hist = np.bincount(rows * n_fine + cols, weights=np.concatenate(weight_all),
                           minlength=n_rows * n_fine).reshape(n_rows, n_fine)
        smeared = hist @ kernel
        row_struct_a = np.asarray(row_struct, dtype=np.int64)
        f = smeared / (4.0 * np.pi * bin_width * np.asarray(row_norm)[:, None]) - 1.0
        row_w_a = np.asarray(row_w)
        w_total = np.bincount(row_struct_a, weights=row_w_a, minlength=len(chunk))
        vec = np.sqrt(row_w_a / w_total[row_struct_a])[:, None] * f
        length = np.sqrt(np.bincount(row_struct_a, weights=(vec**2).sum(axis=1), minlength=len(chunk)))
        vec /= np.where(length > 0, length, 1.0)[row_struct_a, None]
        # rows are grouped by structure, pairs ascending within a structure
        indptr = np.concatenate([[0], np.cumsum(np.bincount(row_struct_a, minlength=len(chunk)) * n_bins)])
        indices = (np.asarray(row_pair, dtype=np.int64)[:, None] * n_bins + np.arange(n_bins)[None]).ravel()
        blocks.append(sparse.csr_matrix((vec.ravel(), indices, indptr), shape=(len(chunk), n_pairs * n_bins)))
    out = sparse.vstack(blocks, format="csr")
    return Fingerprints(matrix=out, species=zs, pairs=pairs, compositions=compositions,
                        r_max=float(r_top), bin_width=float(bin_width), sigma=float(sigma))


def _dot(a, b) -> np.ndarray:
    """Dense ``a @ b.T`` of two CSR fingerprint matrices."""
    if a.shape[1] <= 4096:  # few element pairs: dense BLAS is fastest
        return a.toarray() @ b.toarray().T
    return (a @ b.T).toarray()


def _check_compatible(a: Fingerprints, b: Fingerprints) -> None:
    if a.settings() != b.settings():
        raise ValueError(
            "fingerprints were built with different species or settings "
            f"({a.settings()} vs {b.settings()}); build both with the same species="
        )


def similarity_matrix(
    a: Fingerprints,
    b: Fingerprints | None = None,
    same_composition: bool = False,
) -> np.ndarray:
    """Cosine similarities between fingerprints, ``(len(a), len(b))``.

    Parameters
    ----------
    a, b:
        Fingerprints (``b`` defaults to ``a``), built with the same species and
        settings.
    same_composition:
        Set the similarity of structures with different reduced formulas to -1.

    Examples
    --------
    >>> from ase.build import bulk
    >>> fp = rdf_fingerprints([bulk("Cu", "fcc", a=3.6), bulk("Cu", "bcc", a=2.87)])
    >>> s = similarity_matrix(fp)
    >>> float(round(s[0, 0], 6)), bool(s[0, 1] < 0.9)
    (1.0, True)
    """
    b = a if b is None else b
    _check_compatible(a, b)
    sim = _dot(a.matrix, b.matrix)
    if same_composition:
        sim = np.where(_same_composition(a.compositions, b.compositions), sim, -1.0)
    return sim


def _same_composition(ca: list[str], cb: list[str]) -> np.ndarray:
    codes: dict[str, int] = {}
    xa = np.array([codes.setdefault(c, len(codes)) for c in ca])
    xb = np.array([codes.setdefault(c, len(codes)) for c in cb])
    return xa[:, None] == xb[None, :]


@dataclass
class DedupResult:
    """Result of :func:`deduplicate`.

    Attributes
    ----------
    keep:
        ``True`` for the first structure of each group of duplicates.
    duplicate_of:
        Index of the kept structure each removed one duplicates; -1 for kept ones.
    similarity:
        Similarity to that structure (1.0 for kept ones).
    """

    keep: np.ndarray
    duplicate_of: np.ndarray
    similarity: np.ndarray

    @property
    def n_unique(self) -> int:
        return int(self.keep.sum())


def deduplicate(
    structures: Sequence[Atoms] | Fingerprints,
    threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
    same_composition: bool = True,
    structure_matcher: bool | dict = False,
    block: int = 2048,
    **fingerprint_kwargs,
) -> DedupResult:
    """Remove duplicates by RDF-fingerprint similarity (pipeline step 4).

    Structures are taken in order; one is a duplicate when its similarity to an
    earlier *kept* structure is at least ``threshold``. With ``structure_matcher``
    the survivors are compared again with pymatgen's ``StructureMatcher``.

    Parameters
    ----------
    structures:
        Crystals, or their precomputed :class:`Fingerprints` (then
        ``structure_matcher`` is not available).
    threshold:
        Similarity (cosine of fingerprints, at most 1) from which two structures
        are the same.
    same_composition:
        Only structures with the same reduced formula can be duplicates.
    structure_matcher:
        Also group the survivors with ``pymatgen.analysis.structure_matcher.
        StructureMatcher``; a dict gives its keyword arguments.
    block:
        Rows of the similarity matrix computed at once (memory only).
    **fingerprint_kwargs:
        Passed to :func:`rdf_fingerprints`.

    Returns
    -------
    DedupResult

    Raises
    ------
    ValueError
        If ``threshold`` is not in (-1, 1].

    Examples
    --------
    >>> from ase.build import bulk
    >>> si = bulk("Si")
    >>> deduplicate([si, si.repeat(2), bulk("Ge")]).keep.tolist()
    [True, False, True]
    """
    if not -1.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (-1, 1], got {threshold!r}")
    if isinstance(structures, Fingerprints):
        if structure_matcher:
            raise ValueError("structure_matcher needs the structures, not fingerprints")
        fp = structures
    else:
        fp = rdf_fingerprints(structures, **fingerprint_kwargs)
    n = len(fp)
    # candidate earlier duplicates of every structure, from blocks of the similarity matrix
    earlier: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * n
    earlier_sim: list[np.ndarray] = [np.empty(0)] * n
    for start in range(0, n, block):
        stop = min(start + block, n)
        sim = _dot(fp.matrix[start:stop], fp.matrix[:stop])
        if same_composition:
            sim = np.where(_same_composition(fp.compositions[start:stop], fp.compositions[:stop]), sim, -1.0)
        rows, cols = np.nonzero(sim >= threshold)
        before = cols < rows + start
        rows, cols = rows[before], cols[before]
        if len(rows):
            vals = sim[rows, cols]
            order = np.argsort(rows, kind="stable")
            rows, cols, vals = rows[order], cols[order], vals[order]
            splits = np.flatnonzero(np.diff(rows)) + 1
            for r, c, v in zip(np.split(rows, splits), np.split(cols, splits), np.split(vals, splits)):
                earlier[start + int(r[0])] = c
                earlier_sim[start + int(r[0])] = v
    keep = np.ones(n, dtype=bool)
    duplicate_of = -np.ones(n, dtype=np.int64)
    similarity = np.ones(n)
    for k in range(n):
        cands = earlier[k]
        if len(cands):
            kept = keep[cands]
            if kept.any():
                best = int(np.argmax(np.where(kept, earlier_sim[k], -np.inf)))
                keep[k] = False
                duplicate_of[k] = int(cands[best])
                similarity[k] = float(earlier_sim[k][best])
    if structure_matcher:
        _matcher_pass(structures, keep, duplicate_of, similarity,
                      structure_matcher if isinstance(structure_matcher, dict) else {})
    return DedupResult(keep=keep, duplicate_of=duplicate_of, similarity=similarity)


def _matcher_pass(structures, keep, duplicate_of, similarity, kwargs) -> None:
    from pymatgen.analysis.structure_matcher import StructureMatcher
    from pymatgen.io.ase import AseAtomsAdaptor

    kept = np.flatnonzero(keep)
    pmg = [AseAtomsAdaptor.get_structure(structures[k]) for k in kept]
    for k, s in zip(kept, pmg):
        s.properties["_index"] = int(k)
    groups = StructureMatcher(**kwargs).group_structures(pmg)
    for group in groups:
        idx = sorted(s.properties["_index"] for s in group)
        for k in idx[1:]:
            keep[k] = False
            duplicate_of[k] = idx[0]
            similarity[k] = np.nan  # matched by StructureMatcher, not by fingerprint


@dataclass
class NoveltyResult:
    """Result of :func:`novelty`.

    Attributes
    ----------
    novel:
        ``True`` when no reference is at least ``threshold`` similar.
    nearest:
        Index of the most similar reference (-1 when there is none to compare).
    similarity:
        Similarity to it (-1 when there is none).
    """

    novel: np.ndarray
    nearest: np.ndarray
    similarity: np.ndarray


def novelty(
    structures: Sequence[Atoms] | Fingerprints,
    references: Sequence[Atoms] | Fingerprints,
    threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
    same_composition: bool = True,
    block: int = 2048,
    **fingerprint_kwargs,
) -> NoveltyResult:
    """Which structures are new with respect to references (pipeline step 5).

    Filter the references beforehand (e.g. by energy above hull with
    :func:`aseguide.analysis.filter_references`) to ignore high-energy entries.

    Parameters
    ----------
    structures, references:
        Crystals or precomputed fingerprints (the latter built with the same
        species). When crystals are given, the fingerprints use the elements of
        both sets.
    threshold:
        Similarity from which a structure counts as known.
    same_composition:
        Only references with the same reduced formula can make a structure known.
    block:
        Rows of the similarity matrix computed at once.
    **fingerprint_kwargs:
        Passed to :func:`rdf_fingerprints`.

    Returns
    -------
    NoveltyResult

    Examples
    --------
    >>> from ase.build import bulk
    >>> novelty([bulk("Si"), bulk("Ge")], [bulk("Si").repeat(2)]).novel.tolist()
    [False, True]
    """
    if not -1.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (-1, 1], got {threshold!r}")
    if isinstance(structures, Fingerprints) != isinstance(references, Fingerprints):
        raise TypeError("give both sets as structures or both as Fingerprints")
    n = len(structures)
    if len(references) == 0:
        return NoveltyResult(np.ones(n, dtype=bool), -np.ones(n, dtype=np.int64), -np.ones(n))
    if isinstance(structures, Fingerprints):
        fa, fb = structures, references
    else:
        species = fingerprint_kwargs.pop("species", None) or _species_of(list(structures) + list(references))
        fa = rdf_fingerprints(structures, species=species, **fingerprint_kwargs)
        fb = rdf_fingerprints(references, species=species, **fingerprint_kwargs)
    _check_compatible(fa, fb)
    nearest = -np.ones(n, dtype=np.int64)
    best = -np.ones(n)
    for start in range(0, n, block):
        stop = min(start + block, n)
        sim = _dot(fa.matrix[start:stop], fb.matrix)
        if same_composition:
            sim = np.where(_same_composition(fa.compositions[start:stop], fb.compositions), sim, -1.0)
        k = np.argmax(sim, axis=1)
        nearest[start:stop] = k
        best[start:stop] = sim[np.arange(stop - start), k]
    nearest[best <= -1.0] = -1
    return NoveltyResult(novel=best < threshold, nearest=nearest, similarity=best)
