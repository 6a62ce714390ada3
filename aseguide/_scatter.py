"""Pure-PyTorch stand-ins for the subset of torch_scatter / torch_sparse MatterGen uses.

MatterGen 1.0.3 imports the compiled extensions ``torch_scatter`` and ``torch_sparse``.
It uses only:

* ``torch_scatter.scatter(src, index, dim, dim_size, reduce)`` with ``sum``/``add``/
  ``mean``/``max``/``min``, ``scatter_add``, ``segment_coo`` and ``segment_csr``;
* ``torch_sparse.SparseTensor(row=, col=, value=, sparse_sizes=)`` followed by row
  selection ``adj[rows]`` and ``.storage.row()`` / ``.storage.value()`` (GemNet-T
  triplets).

:func:`install` registers these modules in :data:`sys.modules` **only** when the compiled
packages are not importable, so an installed ``torch_scatter`` always wins.

Examples
--------
>>> import torch
>>> from aseguide._scatter import scatter
>>> scatter(torch.tensor([1., 2., 3.]), torch.tensor([0, 1, 0]), dim=0, reduce="sum")
tensor([4., 2.])
"""

from __future__ import annotations

import importlib.util
import sys
import types

import torch

__all__ = ["scatter", "scatter_add", "segment_coo", "segment_csr", "SparseTensor", "install"]


def _broadcast_index(index: torch.Tensor, src: torch.Tensor, dim: int) -> torch.Tensor:
    if index.dim() == src.dim():
        return index.expand_as(src) if index.shape != src.shape else index
    shape = [1] * src.dim()
    shape[dim] = -1
    return index.reshape(shape).expand_as(src)


def scatter(
    src: torch.Tensor,
    index: torch.Tensor,
    dim: int = -1,
    out: torch.Tensor | None = None,
    dim_size: int | None = None,
    reduce: str = "sum",
) -> torch.Tensor:
    """Reduce ``src`` into ``dim_size`` slots along ``dim`` according to ``index``.

    Slots that receive nothing are 0 for every reduction (as in torch_scatter).
    """
    dim = dim % src.dim() if src.dim() else 0
    if dim_size is None:
        dim_size = int(index.max()) + 1 if index.numel() else 0
    shape = list(src.shape)
    shape[dim] = dim_size
    idx = _broadcast_index(index, src, dim)
    if reduce in ("sum", "add"):
        base = torch.zeros(shape, dtype=src.dtype, device=src.device) if out is None else out
        return base.scatter_add_(dim, idx, src)
    if reduce == "mean":
        total = torch.zeros(shape, dtype=src.dtype, device=src.device).scatter_add_(dim, idx, src)
        count = torch.zeros(shape, dtype=src.dtype, device=src.device).scatter_add_(
            dim, idx, torch.ones_like(src)
        )
        result = total / count.clamp(min=1)
        if out is not None:
            out.copy_(result)
            return out
        return result
    if reduce in ("max", "min", "amax", "amin", "mul", "prod"):
        mode = {"max": "amax", "min": "amin", "mul": "prod"}.get(reduce, reduce)
        base = torch.zeros(shape, dtype=src.dtype, device=src.device)
        result = base.scatter_reduce(dim, idx, src, reduce=mode, include_self=False)
        if out is not None:
            out.copy_(result)
            return out
        return result
    raise ValueError(f"unsupported scatter reduction {reduce!r}")


def scatter_add(
    src: torch.Tensor,
    index: torch.Tensor,
    dim: int = -1,
    out: torch.Tensor | None = None,
    dim_size: int | None = None,
) -> torch.Tensor:
    """``scatter(..., reduce="sum")``."""
    return scatter(src, index, dim=dim, out=out, dim_size=dim_size, reduce="sum")


def segment_coo(
    src: torch.Tensor,
    index: torch.Tensor,
    out: torch.Tensor | None = None,
    dim_size: int | None = None,
    reduce: str = "sum",
) -> torch.Tensor:
    """Reduce along the first dimension of ``index`` (sorted) — same result as ``scatter``."""
    dim = index.dim() - 1
    return scatter(src, index, dim=dim, out=out, dim_size=dim_size, reduce=reduce)


def segment_csr(
    src: torch.Tensor,
    indptr: torch.Tensor,
    out: torch.Tensor | None = None,
    reduce: str = "sum",
) -> torch.Tensor:
    """Reduce consecutive segments ``src[indptr[i]:indptr[i+1]]`` (CSR pointers, 1-D)."""
    if indptr.dim() != 1:
        raise NotImplementedError("segment_csr stand-in supports 1-D indptr only")
    counts = indptr[1:] - indptr[:-1]
    n_segments = counts.numel()
    # Elements before indptr[0] or after indptr[-1] do not belong to any segment.
    start, stop = int(indptr[0]), int(indptr[-1])
    body = src[start:stop]
    index = torch.repeat_interleave(torch.arange(n_segments, device=src.device), counts)
    return scatter(body, index, dim=0, out=out, dim_size=n_segments, reduce=reduce)


class _Storage:
    def __init__(self, row: torch.Tensor, col: torch.Tensor, value: torch.Tensor | None, sizes):
        self._row, self._col, self._value, self._sizes = row, col, value, sizes

    def row(self) -> torch.Tensor:
        return self._row

    def col(self) -> torch.Tensor:
        return self._col

    def value(self) -> torch.Tensor | None:
        return self._value

    def sparse_sizes(self):
        return self._sizes

    def rowptr(self) -> torch.Tensor:
        counts = torch.bincount(self._row, minlength=int(self._sizes[0]))
        return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])


class SparseTensor:
    """Coordinate sparse matrix sorted by (row, column), with row selection.

    Only what GemNet-T needs: construction from ``row``, ``col``, ``value``,
    ``sparse_sizes``; ``adj[rows]`` (a new matrix whose i-th row is row ``rows[i]``);
    ``.storage.row()``, ``.storage.col()``, ``.storage.value()``; ``.to(device)``.
    """

    def __init__(
        self,
        row: torch.Tensor,
        col: torch.Tensor,
        value: torch.Tensor | None = None,
        sparse_sizes=None,
        is_sorted: bool = False,
        **_: object,
    ):
        if sparse_sizes is None:
            sparse_sizes = (int(row.max()) + 1 if row.numel() else 0, int(col.max()) + 1 if col.numel() else 0)
        sizes = tuple(int(s) for s in sparse_sizes)
        if not is_sorted and row.numel():
            key = row * max(sizes[1], 1) + col
            perm = torch.sort(key, stable=True).indices
            row, col = row[perm], col[perm]
            value = None if value is None else value[perm]
        self.storage = _Storage(row, col, value, sizes)

    def sparse_sizes(self):
        return self.storage.sparse_sizes()

    def to(self, device) -> "SparseTensor":
        s = self.storage
        return SparseTensor(
            row=s.row().to(device),
            col=s.col().to(device),
            value=None if s.value() is None else s.value().to(device),
            sparse_sizes=s.sparse_sizes(),
            is_sorted=True,
        )

    def index_select_rows(self, rows: torch.Tensor) -> "SparseTensor":
        s = self.storage
        rowptr = s.rowptr()
        rows = rows.to(torch.long)
        counts = rowptr[rows + 1] - rowptr[rows]
        total = int(counts.sum())
        new_row = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), counts)
        offsets = torch.cumsum(counts, 0) - counts
        within = torch.arange(total, device=rows.device) - torch.repeat_interleave(offsets, counts)
        picked = torch.repeat_interleave(rowptr[rows], counts) + within
        return SparseTensor(
            row=new_row,
            col=s.col()[picked],
            value=None if s.value() is None else s.value()[picked],
            sparse_sizes=(rows.numel(), s.sparse_sizes()[1]),
            is_sorted=True,
        )

    def __getitem__(self, rows) -> "SparseTensor":
        if not isinstance(rows, torch.Tensor):
            rows = torch.as_tensor(rows, dtype=torch.long)
        if rows.dtype == torch.bool:
            rows = rows.nonzero().flatten()
        return self.index_select_rows(rows)


def _module(name: str, **members) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(members)
    module.__dict__["__aseguide_standin__"] = True
    return module


def install() -> list[str]:
    """Register the stand-ins for whichever of torch_scatter / torch_sparse is missing.

    Returns the names registered (empty when both compiled packages are present).
    """
    registered = []
    if "torch_scatter" not in sys.modules and importlib.util.find_spec("torch_scatter") is None:
        sys.modules["torch_scatter"] = _module(
            "torch_scatter",
            scatter=scatter,
            scatter_add=scatter_add,
            segment_coo=segment_coo,
            segment_csr=segment_csr,
        )
        registered.append("torch_scatter")
    if "torch_sparse" not in sys.modules and importlib.util.find_spec("torch_sparse") is None:
        sys.modules["torch_sparse"] = _module("torch_sparse", SparseTensor=SparseTensor)
        registered.append("torch_sparse")
    return registered
