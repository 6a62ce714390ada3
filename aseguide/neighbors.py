"""Batched periodic neighbour search with differentiable pair distances.

The search is split in two parts:

1. :func:`neighbor_list` finds, without gradients, every pair ``(i, j, shift)`` of
   atoms of the same structure whose distance
   ``|(frac[j] - frac[i] + shift) @ cell|`` is at most ``cutoff``, for all periodic
   images. It is a batched cell-list (binning) search written with plain tensor
   operations, so its cost grows linearly with the number of atoms at fixed density.
2. :meth:`NeighborList.vectors` / :meth:`NeighborList.distances` recompute the pair
   vectors from ``frac`` and ``cell`` with ordinary differentiable torch operations,
   so gradients flow to the fractional coordinates and to the lattice.

Correctness for any cell: each structure is cut into ``n_k`` bins along each
fractional axis ``k``, with ``n_k <= 2 d_k / cutoff`` (bins at least half a cutoff
wide; ``d_k = 1 / |b_k|`` is the spacing of the lattice planes, ``b_k`` the
reciprocal vector without the ``2 pi``; also ``n_k <= N^(1/3) + 1``). A distance
``<= cutoff`` spans at most ``cutoff * |b_k|`` in fractional units along ``k``, so
the search visits ``m_k = ceil(cutoff * |b_k| * n_k)`` bins (periodic images
included) on each side of an atom's bin, computed per structure (structures with
the same ``m`` are searched together: a loop over a few groups, never over
structures). In a large cell ``m_k <= 2``; in a cell thinner than the cutoff
(``n_k = 1``) it visits ``ceil(cutoff * |b_k|)`` images on each side, as many as an
atom can see of itself and of the others. Skewed cells and fractional coordinates
outside ``[0, 1)`` are handled exactly (coordinates are wrapped for the search and
the integer shifts are corrected back to the unwrapped coordinates). The index
search runs in the batch's precision (float64 or float32).

The self pair ``i == j`` with zero shift is excluded explicitly; an atom's own
periodic images (``i == j``, non-zero shift) are genuine neighbours and are kept.

Examples
--------
>>> from ase.build import bulk
>>> from aseguide.state import CrystalBatch
>>> batch = CrystalBatch.from_atoms(bulk("C", "diamond", a=3.567))
>>> pairs = neighbor_list(batch, cutoff=1.8)
>>> pairs.n_pairs  # 2 atoms x 4 bonds, counted from both ends
8
>>> round(float(pairs.distances(batch.frac, batch.cell)[0]), 4)
1.5446
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from aseguide.state import CrystalBatch

__all__ = ["NeighborList", "neighbor_list", "MAX_IMAGES_PER_AXIS", "MAX_PERIODIC_IMAGES", "periodic_image_count",
           "check_periodic_images", "MAX_NEIGHBORS_PER_ATOM", "check_neighbor_search"]

#: Largest number of periodic images searched on each side of a cell along one axis.
#: More would mean lattice planes closer than ``cutoff / MAX_IMAGES_PER_AXIS``: a
#: degenerate (e.g. very noisy) cell. The search is then truncated with a warning.
MAX_IMAGES_PER_AXIS = 8

#: Largest number of periodic images (the box of shifts ``|n_k| <= ceil(cutoff * |b_k|)``)
#: that an external potential or calculator is asked to search. A sampled cell whose
#: lattice planes are ~0.01 Å apart would need ~1e9 images, and the neighbour search of
#: CHGNet (or ASE) then exhausts the memory of the machine; such a cell is refused instead.
MAX_PERIODIC_IMAGES = 100_000


def periodic_image_count(cell, cutoff: float) -> int:
    """Number of periodic images a neighbour search within ``cutoff`` visits in ``cell``.

    ``prod_k (2 * ceil(cutoff / h_k) + 1)``, with ``h_k = 1 / |b_k|`` the spacing of the
    lattice planes (``b`` the reciprocal vectors without 2π).

    Parameters
    ----------
    cell : array-like, shape (3, 3)
        Lattice vectors as rows (Å).
    cutoff : float
        Search radius (Å).

    Returns
    -------
    int
        The image count (``sys.maxsize`` for a singular cell).

    Examples
    --------
    >>> periodic_image_count(np.eye(3) * 4.0, 6.0)
    125
    """
    cell = np.asarray(cell, dtype=float).reshape(3, 3)
    if not np.all(np.isfinite(cell)) or abs(np.linalg.det(cell)) < 1e-12:
        return np.iinfo(np.int64).max
    reciprocal_lengths = np.linalg.norm(np.linalg.inv(cell).T, axis=1)
    count = 1
    for length in reciprocal_lengths:
        count *= 2 * math.ceil(cutoff * length - _ROUNDING_SLACK) + 1
    return int(min(count, np.iinfo(np.int64).max))


def check_periodic_images(cell, cutoff: float, limit: int = MAX_PERIODIC_IMAGES) -> None:
    """Raise ``ValueError`` when a neighbour search in ``cell`` would visit more than ``limit`` images.

    Examples
    --------
    >>> check_periodic_images(np.eye(3) * 4.0, 6.0)
    >>> check_periodic_images(np.diag([4.0, 4.0, 0.001]), 6.0)
    Traceback (most recent call last):
    ...
    ValueError: degenerate cell: lattice planes 0.001 Å apart; a 6 Å neighbour search would visit 300,025 periodic images (limit 100,000)
    """
    count = periodic_image_count(cell, cutoff)
    if count > limit:
        cell = np.asarray(cell, dtype=float).reshape(3, 3)
        with np.errstate(all="ignore"):
            try:
                spacing = f"{float(1.0 / np.linalg.norm(np.linalg.inv(cell).T, axis=1).max()):.3g} Å"
            except np.linalg.LinAlgError:
                spacing = "0 Å"
        raise ValueError(f"degenerate cell: lattice planes {spacing} apart; a {cutoff:g} Å neighbour search "
                         f"would visit {count:,} periodic images (limit {limit:,})")


#: Largest expected number of neighbours per atom (``n / V * 4/3 pi cutoff^3``) that an
#: external potential is asked to handle: ~2.5x the densest crystals (0.2 atoms/Å³ at
#: 6 Å gives 181). A collapsed noisy estimate of 20 carbon atoms in 15 Å³ (1.3 atoms/Å³)
#: took CHGNet 20 s and 1.9 GB for that one structure; at 3.4 atoms/Å³ it ran out of memory.
MAX_NEIGHBORS_PER_ATOM = 400


def check_neighbor_search(cell, n_atoms: int, cutoff: float, max_images: int = MAX_PERIODIC_IMAGES,
                          max_neighbors: float = MAX_NEIGHBORS_PER_ATOM) -> None:
    """Raise ``ValueError`` for a cell whose neighbour search would exhaust the memory.

    Either too many periodic images (:func:`check_periodic_images`: lattice planes a
    fraction of an Å apart) or too many expected neighbours per atom
    (``n_atoms / volume * 4/3 pi cutoff^3 > max_neighbors``: a collapsed cell).

    Parameters
    ----------
    cell : array-like, shape (3, 3)
        Lattice vectors as rows (Å).
    n_atoms : int
        Atoms in the cell.
    cutoff : float
        Search radius (Å).
    max_images, max_neighbors : int, float
        The two limits.

    Examples
    --------
    >>> check_neighbor_search(np.eye(3) * 3.567, 8, 6.0)  # diamond: 159 neighbours per atom
    >>> check_neighbor_search(np.eye(3) * 2.5, 20, 6.0)
    Traceback (most recent call last):
    ...
    ValueError: collapsed cell: 20 atoms in 15.6 Å³ (1.28 atoms/Å³) would give 1158 neighbours per atom within 6 Å (limit 400)
    """
    check_periodic_images(cell, cutoff, max_images)
    volume = abs(float(np.linalg.det(np.asarray(cell, dtype=float).reshape(3, 3))))
    density = n_atoms / volume
    neighbors = density * 4.0 / 3.0 * math.pi * cutoff**3
    if neighbors > max_neighbors:
        raise ValueError(f"collapsed cell: {n_atoms} atoms in {volume:.3g} Å³ ({density:.3g} atoms/Å³) would give "
                         f"{neighbors:.0f} neighbours per atom within {cutoff:g} Å (limit {max_neighbors:g})")


# Candidate pairs handled at once (bounds the memory of the search, not its result).
_CANDIDATES_PER_CHUNK = 4_000_000
# Bins are at least cutoff / _BINS_PER_CUTOFF wide (smaller bins: fewer candidates, more bins).
_BINS_PER_CUTOFF = 2
# Relative slack on the number of bins to visit, against rounding in the cell inverse.
_ROUNDING_SLACK = 1e-9


@dataclass(frozen=True)
class NeighborList:
    """Periodic pairs of a :class:`~aseguide.state.CrystalBatch`.

    Attributes
    ----------
    first, second:
        Atom indices ``i`` and ``j`` (into the batch's atoms), ``(n_pairs,)``.
    shift:
        Integer lattice shift of atom ``j``'s image, ``(n_pairs, 3)``, ``torch.long``,
        valid for the batch's (possibly unwrapped) fractional coordinates.
    structure:
        Structure index of each pair, ``(n_pairs,)``.

    Pairs come in no particular order; both ``(i, j, S)`` and ``(j, i, -S)`` are present
    when both atoms are in the searched sets.
    """

    first: torch.Tensor
    second: torch.Tensor
    shift: torch.Tensor
    structure: torch.Tensor

    @property
    def n_pairs(self) -> int:
        return int(self.first.shape[0])

    def vectors(self, frac: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """Differentiable Cartesian pair vectors ``r_j + S @ cell - r_i``, ``(n_pairs, 3)``."""
        delta = frac[self.second] - frac[self.first] + self.shift.to(frac.dtype)
        return torch.einsum("pi,pij->pj", delta, cell[self.structure])

    def distances(self, frac: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """Differentiable pair distances, ``(n_pairs,)``, Å.

        The gradient stays finite for coincident atoms (distance clamped at 1e-10 Å).
        """
        squared = self.vectors(frac, cell).square().sum(-1)
        return squared.clamp_min(1e-20).sqrt()


def _empty(device: torch.device) -> NeighborList:
    empty = torch.zeros(0, dtype=torch.long, device=device)
    return NeighborList(empty, empty, torch.zeros(0, 3, dtype=torch.long, device=device), empty)


def neighbor_list(
    batch: CrystalBatch,
    cutoff: float,
    centers: torch.Tensor | None = None,
    neighbors: torch.Tensor | None = None,
) -> NeighborList:
    """All periodic pairs within ``cutoff`` of each structure of a batch.

    Parameters
    ----------
    batch:
        The crystals (any cell shape, fractional coordinates need not be wrapped).
    cutoff:
        Search radius in Å (pairs with distance ``<= cutoff`` are returned).
    centers, neighbors:
        Optional boolean masks ``(n_atoms,)`` restricting ``first`` to the atoms in
        ``centers`` and ``second`` to the atoms in ``neighbors`` (default: all atoms).

    Returns
    -------
    NeighborList
        Indices and integer shifts (no gradient); compute distances with
        :meth:`NeighborList.distances` to get gradients.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from aseguide.state import CrystalBatch
    >>> batch = CrystalBatch.from_atoms(bulk("NaCl", "rocksalt", a=5.64))
    >>> is_na = batch.numbers == 11
    >>> neighbor_list(batch, 3.0, centers=is_na, neighbors=~is_na).n_pairs
    6
    """
    cutoff = float(cutoff)
    if not cutoff > 0.0:
        raise ValueError(f"cutoff must be positive, got {cutoff!r}")
    device = batch.device
    if batch.n_atoms == 0:
        return _empty(device)
    with torch.no_grad():
        search_dtype = torch.float64 if batch.dtype == torch.float64 else torch.float32
        frac = batch.frac.detach().to(search_dtype)
        cell = batch.cell.detach().to(search_dtype)
        structure_of_atom = batch.batch
        # Skewed cells are searched in their Minkowski-reduced basis (same crystal, same pairs)
        frac, cell, basis_change = _reduce_skewed_cells(frac, cell, structure_of_atom, cutoff)

        # Geometry of each cell: bins per axis and bins to visit on each side.
        inverse = torch.linalg.inv(cell)  # columns are the reciprocal vectors b_k
        reciprocal_norm = inverse.norm(dim=1)  # (S, 3): |b_k|
        plane_spacing = 1.0 / reciprocal_norm
        atoms_per_axis = torch.ceil(batch.num_atoms.to(torch.float64) ** (1.0 / 3.0)) + 1.0
        n_bins = torch.floor(_BINS_PER_CUTOFF * plane_spacing / cutoff).clamp(min=1.0)
        n_bins = torch.minimum(n_bins, atoms_per_axis[:, None]).to(torch.long)  # (S, 3)
        reach = cutoff * reciprocal_norm * n_bins * (1.0 + _ROUNDING_SLACK)
        bins_to_visit = torch.ceil(reach).to(torch.long).clamp(min=1)
        if bool((bins_to_visit > MAX_IMAGES_PER_AXIS).any()):
            warnings.warn(
                f"degenerate cell: lattice planes closer than cutoff/{MAX_IMAGES_PER_AXIS} "
                f"(cutoff {cutoff:g} Å); the neighbour search is truncated to "
                f"{MAX_IMAGES_PER_AXIS} images per side",
                RuntimeWarning,
                stacklevel=2,
            )
            bins_to_visit = bins_to_visit.clamp(max=MAX_IMAGES_PER_AXIS)

        # Wrap coordinates for binning; remember the integer part for the shifts.
        image_of_atom = torch.floor(frac)
        wrapped = frac - image_of_atom
        wrapped_positions = torch.einsum("ni,nij->nj", wrapped, cell[structure_of_atom])
        atom_bins_n = n_bins[structure_of_atom]  # (N, 3)
        atom_bin = torch.minimum(torch.floor(wrapped * atom_bins_n).to(torch.long), atom_bins_n - 1)
        bins_per_structure = n_bins.prod(dim=1)
        first_bin = torch.cumsum(bins_per_structure, 0) - bins_per_structure

        def global_bin(structure: torch.Tensor, bin3: torch.Tensor, nb: torch.Tensor) -> torch.Tensor:
            return first_bin[structure] + (bin3[..., 0] * nb[..., 1] + bin3[..., 1]) * nb[..., 2] + bin3[..., 2]

        # Sort the neighbour atoms by bin: a bin's atoms are then a contiguous slice.
        neighbor_atoms = (
            torch.arange(batch.n_atoms, device=device) if neighbors is None else torch.nonzero(neighbors).flatten()
        )
        center_atoms = (
            torch.arange(batch.n_atoms, device=device) if centers is None else torch.nonzero(centers).flatten()
        )
        if neighbor_atoms.numel() == 0 or center_atoms.numel() == 0:
            return _empty(device)
        neighbor_bin = global_bin(
            structure_of_atom[neighbor_atoms], atom_bin[neighbor_atoms], atom_bins_n[neighbor_atoms]
        )
        neighbor_bin, order = torch.sort(neighbor_bin)
        atoms_by_bin = neighbor_atoms[order]
        total_bins = int(bins_per_structure.sum())
        bin_count = torch.bincount(neighbor_bin, minlength=total_bins)
        bin_start = torch.cumsum(bin_count, 0) - bin_count

        # Query the centre atoms, grouped by the number of bins to visit (a few groups).
        groups, group_of_structure = torch.unique(bins_to_visit, dim=0, return_inverse=True)
        center_group = group_of_structure[structure_of_atom[center_atoms]]
        found = []
        for group_index in range(groups.shape[0]):
            reach_x, reach_y, reach_z = (int(v) for v in groups[group_index])
            queries = center_atoms[center_group == group_index]
            if queries.numel() == 0:
                continue
            offsets = torch.cartesian_prod(
                torch.arange(-reach_x, reach_x + 1, device=device),
                torch.arange(-reach_y, reach_y + 1, device=device),
                torch.arange(-reach_z, reach_z + 1, device=device),
            )  # (O, 3)
            found.extend(
                _search_group(
                    queries, offsets, structure_of_atom, atom_bin, atom_bins_n, global_bin,
                    bin_count, bin_start, atoms_by_bin, wrapped_positions, cell, cutoff,
                )
            )
        if not found:
            return _empty(device)
        first = torch.cat([f[0] for f in found])
        second = torch.cat([f[1] for f in found])
        wrapped_shift = torch.cat([f[2] for f in found])
        # Shift for the unwrapped coordinates: frac = wrapped + image.
        shift = wrapped_shift + (image_of_atom[first] - image_of_atom[second]).to(torch.long)
        structure = structure_of_atom[first]
        if basis_change is not None:  # shifts in the reduced basis -> the batch's basis
            shift = torch.einsum("pi,pij->pj", shift, basis_change[structure])
    return NeighborList(first, second, shift, structure)


def _reduce_skewed_cells(
    frac: torch.Tensor, cell: torch.Tensor, structure_of_atom: torch.Tensor, cutoff: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Cells needing more than ``MAX_IMAGES_PER_AXIS`` images per side, Minkowski-reduced.

    Returns ``(frac, cell, basis_change)``: ``cell' = U @ cell`` and ``frac' = frac @ U^-1``
    for each such structure (``U`` integer, unimodular, from :func:`ase.geometry.minkowski_reduce`),
    so Cartesian positions are unchanged and a shift ``S'`` found in the reduced basis is
    ``S' @ U`` in the batch's. ``basis_change`` is ``None`` when no cell needs it (the usual
    case: nothing is copied); otherwise ``(S, 3, 3)`` long, the identity for the others.
    Only the skewed cells (rare: a sampled lattice written in a degenerate basis) are
    reduced, one by one.
    """
    reach = cutoff * torch.linalg.inv(cell).norm(dim=1)  # (S, 3): cutoff / plane spacing
    skewed = torch.nonzero(~(reach <= MAX_IMAGES_PER_AXIS).all(dim=1)).flatten()
    if skewed.numel() == 0:
        return frac, cell, None
    from ase.geometry import minkowski_reduce

    basis_change = torch.eye(3, dtype=torch.long, device=cell.device).repeat(cell.shape[0], 1, 1)
    for s in skewed.tolist():
        matrix = cell[s].cpu().numpy().astype(np.float64)
        if not (np.isfinite(matrix).all() and abs(np.linalg.det(matrix)) > 1e-12):
            continue  # a singular cell has no reduced basis: the search below truncates it
        _, op = minkowski_reduce(matrix)
        basis_change[s] = torch.as_tensor(op, dtype=torch.long, device=cell.device)
    change = basis_change.to(cell.dtype)
    cell = change @ cell
    frac = torch.einsum("ni,nij->nj", frac, torch.linalg.inv(change)[structure_of_atom])
    return frac, cell, basis_change


def _search_group(
    queries, offsets, structure_of_atom, atom_bin, atom_bins_n, global_bin,
    bin_count, bin_start, atoms_by_bin, wrapped_positions, cell, cutoff,
):
    """Candidate pairs of the query atoms with all atoms in the visited bins, filtered."""
    device = queries.device
    n_offsets = offsets.shape[0]
    query_structure = structure_of_atom[queries]
    query_nb = atom_bins_n[queries]  # (Q, 3)
    target = atom_bin[queries][:, None, :] + offsets[None]  # (Q, O, 3)
    image = torch.div(target, query_nb[:, None, :], rounding_mode="floor")
    target = target - image * query_nb[:, None, :]
    target_bin = global_bin(query_structure[:, None], target, query_nb[:, None, :]).reshape(-1)  # (Q*O,)
    image = image.reshape(-1, 3)
    image_vector = torch.einsum(
        "qoi,qij->qoj", image.reshape(-1, n_offsets, 3).to(cell.dtype), cell[query_structure]
    ).reshape(-1, 3)
    zero_image = (image == 0).all(dim=1)
    counts = bin_count[target_bin]  # (Q*O,)
    per_query = counts.reshape(-1, n_offsets).sum(dim=1)
    # Split the queries into chunks of bounded candidate count (at least one query each).
    chunk_of_query = torch.div(torch.cumsum(per_query, 0) - per_query, _CANDIDATES_PER_CHUNK, rounding_mode="floor")
    chunk_sizes = torch.unique_consecutive(chunk_of_query, return_counts=True)[1].tolist()
    results = []
    start = 0
    for size in chunk_sizes:
        segments = slice(start * n_offsets, (start + size) * n_offsets)
        start += size
        chunk_counts = counts[segments]
        n_candidates = int(chunk_counts.sum())
        if n_candidates == 0:
            continue
        # candidate c belongs to segment (query, offset) number `segment[c]` of this chunk
        segment = torch.repeat_interleave(
            torch.arange(chunk_counts.shape[0], device=device), chunk_counts, output_size=n_candidates
        )
        segment_start = torch.cumsum(chunk_counts, 0) - chunk_counts
        first = queries[segments.start // n_offsets + torch.div(segment, n_offsets, rounding_mode="floor")]
        slot = bin_start[target_bin[segments]][segment] + torch.arange(n_candidates, device=device)
        second = atoms_by_bin[slot - segment_start[segment]]
        global_segment = segment + segments.start
        vectors = wrapped_positions[second] - wrapped_positions[first] + image_vector[global_segment]
        keep = vectors.square().sum(-1) <= cutoff * cutoff
        keep &= ~((first == second) & zero_image[global_segment])  # the atom itself
        results.append((first[keep], second[keep], image[global_segment[keep]]))
    return results
