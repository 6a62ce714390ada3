"""MatterGen's periodic radius graph, searching only the periodic images that can be in range.

GemNet (MatterGen's score network) rebuilds its graph at every call with
``mattergen.common.utils.data_utils.radius_graph_pbc``. That function computes, for
every atom pair of the batch, the distance to the same box of
``(2 r_1 + 1)(2 r_2 + 1)(2 r_3 + 1)`` periodic images, where ``r_k`` is the *largest*
image count any structure of the batch needs along axis ``k`` (capped at
``max_cell_images_per_dim``). A single thin or skewed (e.g. noisy) cell therefore
multiplies the distance computations of every structure; on a CPU this search was more
than half of a sampling step of the carbon model.

:func:`periodic_radius_graph` returns the same graph (the same edges in the same order,
the same image offsets, the same neighbour counts) from far fewer candidates. Two atoms
at most ``radius`` apart are separated along axis ``k`` by at most
``radius * |b_k|`` in fractional units (``b_k`` the reciprocal vector without
``2 pi``: ``1 / |b_k|`` is the spacing of the lattice planes), so for each pair only the
shifts ``n_k`` with ``|f2_k - f1_k + n_k| <= radius * |b_k|`` are tried, cut to MatterGen's
box. No candidate that can pass MatterGen's distance test is skipped, whatever the
fractional coordinates (wrapped or not); candidates keep MatterGen's order; the cap on
neighbours per atom is MatterGen's own ``get_max_neighbors_mask``, so ties are broken
identically.

:func:`pruned_image_search` switches GemNet to this graph inside a ``with`` block;
:class:`~aseguide.models.mattergen.MatterGenSession` and ``aseguide train`` use it
(``ASEGUIDE_RADIUS_GRAPH=mattergen`` restores MatterGen's padded search, e.g. to
measure the difference).

Examples
--------
>>> import torch
>>> cell = torch.eye(3).unsqueeze(0) * 2.0
>>> pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
>>> edges, images, counts = periodic_radius_graph(pos, cell, torch.tensor([2]), 1.8, 50)
>>> counts.tolist()  # 8 body-centred neighbours of each atom
[16]
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

__all__ = ["periodic_radius_graph", "pruned_image_search", "RADIUS_GRAPH_ENV"]

#: Environment variable: ``mattergen`` keeps MatterGen's padded image search.
RADIUS_GRAPH_ENV = "ASEGUIDE_RADIUS_GRAPH"


def _image_box(cell: torch.Tensor, radius: float, max_cell_images_per_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MatterGen's searched box and the per-structure reach.

    Returns ``box`` ``(3,)``: images searched on each side along each axis, the batch
    maximum capped at ``max_cell_images_per_dim`` (MatterGen's arithmetic, so the very
    same box), and ``reach`` ``(B, 3)`` float64: ``radius * |b_k|``, the largest
    fractional separation along axis ``k`` of two atoms within ``radius``.
    """
    volume = torch.sum(cell[:, 0] * torch.cross(cell[:, 1], cell[:, 2], dim=-1), dim=-1, keepdim=True)
    box, reach = [], []
    for k in range(3):
        cross = torch.cross(cell[:, (k + 1) % 3], cell[:, (k + 2) % 3], dim=-1)
        box.append(min(int(torch.ceil(radius * torch.norm(cross / volume, p=2, dim=-1)).max()),
                       max_cell_images_per_dim))
        cross64 = torch.cross(cell[:, (k + 1) % 3].double(), cell[:, (k + 2) % 3].double(), dim=-1)
        reach.append(radius * torch.norm(cross64, dim=-1) / volume.double().squeeze(-1).abs())
    return torch.tensor(box, device=cell.device), torch.stack(reach, dim=1)


def periodic_radius_graph(
    cart_coords: torch.Tensor,
    lattice: torch.Tensor,
    num_atoms: torch.Tensor,
    radius: float,
    max_num_neighbors_threshold: int,
    max_cell_images_per_dim: int = 10,
    topk_per_pair: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Periodic radius graph of a batch: MatterGen's result, only in-range images searched.

    Parameters
    ----------
    cart_coords : torch.Tensor
        ``(N, 3)`` Cartesian positions of all atoms of the batch.
    lattice : torch.Tensor
        ``(B, 3, 3)`` cells, lattice vectors as rows.
    num_atoms : torch.Tensor
        ``(B,)`` atoms per structure.
    radius : float
        Cutoff (Å).
    max_num_neighbors_threshold : int
        Keep at most this many nearest neighbours per atom (positive, as in GemNet).
    max_cell_images_per_dim : int
        Cap on the images searched on each side along one axis.
    topk_per_pair : None
        Unsupported, as in MatterGen (must be ``None``).

    Returns
    -------
    edge_index : torch.Tensor
        ``(2, E)``: neighbour (source) and centre (target) atom of every edge.
    cell_offsets : torch.Tensor
        ``(E, 3)`` integer image offsets (float32), in lattice vectors.
    num_neighbors_image : torch.Tensor
        ``(B,)`` edges per structure.

    Examples
    --------
    >>> import torch
    >>> cell = torch.eye(3).unsqueeze(0) * 3.0
    >>> edges, images, counts = periodic_radius_graph(torch.zeros(1, 3), cell, torch.tensor([1]), 3.1, 50)
    >>> counts.tolist(), images.abs().sum(dim=1).tolist()  # the six face images
    ([6], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    """
    if topk_per_pair is not None:
        raise ValueError("topk_per_pair is not supported (MatterGen's radius_graph_pbc does not support it either)")
    from aseguide.models._mattergen_compat import prepare_mattergen

    prepare_mattergen()
    from mattergen.common.utils.ocp_graph_utils import get_max_neighbors_mask

    pos, cell, natoms = cart_coords, lattice, num_atoms.long()
    device = pos.device
    with torch.no_grad():
        box, reach = _image_box(cell, radius, max_cell_images_per_dim)
        # a degenerate cell (zero volume): its reach is inf or nan; the box bounds it
        reach = torch.nan_to_num(reach, nan=float(box.max()) + 1.0, posinf=float(box.max()) + 1.0)
        structure = torch.repeat_interleave(torch.arange(len(natoms), device=device), natoms)
        frac = torch.linalg.solve(cell.transpose(1, 2)[structure].double(), pos.double().unsqueeze(-1)).squeeze(-1)
        # atom pairs (centre a1, neighbour a2) of each structure, row-major as in MatterGen
        pairs = natoms * natoms
        pair_structure = torch.repeat_interleave(torch.arange(len(natoms), device=device), pairs)
        local = torch.arange(int(pairs.sum()), device=device) - (torch.cumsum(pairs, 0) - pairs)[pair_structure]
        atom_offset = (torch.cumsum(natoms, dim=0) - natoms)[pair_structure]
        n = natoms[pair_structure]
        pair1, pair2 = local // n + atom_offset, local % n + atom_offset
        # only images with |frac2 - frac1 + shift|_k <= reach_k can lie within radius
        # (distance >= |fractional separation along k| x plane spacing); the window is
        # widened by a rounding margin and cut to MatterGen's box
        separation = frac[pair2] - frac[pair1]
        margin = reach[pair_structure] * (1 + 1e-6) + 1e-6
        low = torch.maximum(torch.ceil(-margin - separation), -box.double()).long()
        high = torch.minimum(torch.floor(margin - separation), box.double()).long()
        sides = (high - low + 1).clamp(min=0)
        images = sides.prod(dim=1)
        edge_pair = torch.repeat_interleave(torch.arange(len(images), device=device), images)
        image = torch.arange(int(images.sum()), device=device) - (torch.cumsum(images, 0) - images)[edge_pair]
        side = sides[edge_pair]
        # images of a pair in torch.cartesian_prod order (last axis fastest), as in MatterGen
        offsets = torch.stack((image // (side[:, 1] * side[:, 2]), (image // side[:, 2]) % side[:, 1],
                               image % side[:, 2]), dim=1) + low[edge_pair]
        offsets = offsets.to(torch.float)
        index1, index2 = pair1[edge_pair], pair2[edge_pair]
        shift = torch.bmm(offsets.to(cell.dtype).unsqueeze(1), cell[pair_structure[edge_pair]]).squeeze(1)
        distance_squared = torch.sum((pos[index1] - (pos[index2] + shift)) ** 2, dim=1)
        keep = (distance_squared <= radius * radius) & (distance_squared > 0.0001)
        index1, index2, offsets, distance_squared = (index1[keep], index2[keep], offsets[keep],
                                                     distance_squared[keep])
        nearest, num_neighbors_image = get_max_neighbors_mask(
            natoms=natoms, index=index1, atom_distance_squared=distance_squared,
            max_num_neighbors_threshold=max_num_neighbors_threshold)
        if not torch.all(nearest):
            index1, index2, offsets = index1[nearest], index2[nearest], offsets[nearest]
    return torch.stack((index2, index1)), offsets, num_neighbors_image


@contextlib.contextmanager
def pruned_image_search() -> Iterator[None]:
    """Inside the block, GemNet builds its graph with :func:`periodic_radius_graph`.

    Does nothing when the environment variable ``ASEGUIDE_RADIUS_GRAPH`` is
    ``mattergen``. Re-entrant; MatterGen's function is restored on exit.

    Examples
    --------
    >>> with pruned_image_search():
    ...     pass
    """
    if os.environ.get(RADIUS_GRAPH_ENV, "").lower() == "mattergen":
        yield
        return
    from mattergen.common.gemnet import gemnet

    previous = gemnet.radius_graph_pbc
    gemnet.radius_graph_pbc = periodic_radius_graph
    try:
        yield
    finally:
        gemnet.radius_graph_pbc = previous
