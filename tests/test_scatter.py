"""The pure-PyTorch torch_scatter / torch_sparse stand-ins against hand-computed results."""

import importlib.util

import pytest
import torch

from aseguide._scatter import SparseTensor, scatter, scatter_add, segment_coo, segment_csr


def _compiled(name: str) -> bool:
    import sys

    module = sys.modules.get(name)
    if module is not None:
        return not getattr(module, "__aseguide_standin__", False)
    return importlib.util.find_spec(name) is not None


def test_scatter_sum_mean_max_hand_computed():
    src = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0])
    index = torch.tensor([0, 2, 0, 2, 3])
    assert scatter(src, index, dim=0, dim_size=5, reduce="sum").tolist() == [4.0, 0.0, 6.0, 10.0, 0.0]
    assert scatter(src, index, dim=0, dim_size=5, reduce="mean").tolist() == [2.0, 0.0, 3.0, 10.0, 0.0]
    assert scatter(src, index, dim=0, dim_size=5, reduce="max").tolist() == [3.0, 0.0, 4.0, 10.0, 0.0]
    assert scatter(src, index, dim=0, reduce="sum").shape == (4,)  # size from max index


def test_scatter_rows_of_a_matrix_and_negative_dim():
    src = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    index = torch.tensor([1, 0, 1])
    expected = torch.tensor([[3.0, 4.0], [6.0, 8.0]])
    assert torch.equal(scatter(src, index, dim=0, reduce="sum"), expected)
    assert torch.equal(scatter_add(src.T, index, dim=-1), expected.T)


def test_segment_coo_and_csr():
    src = torch.tensor([1, 2, 3, 4, 5, 6])
    assert segment_coo(src, torch.tensor([0, 0, 1, 1, 1, 3]), dim_size=4).tolist() == [3, 12, 0, 6]
    assert segment_csr(src, torch.tensor([0, 2, 2, 5])).tolist() == [3, 0, 12]
    # elements outside [indptr[0], indptr[-1]) belong to no segment
    assert segment_csr(src, torch.tensor([1, 3, 4])).tolist() == [5, 4]


def test_sparse_row_selection_matches_dense():
    row = torch.tensor([2, 0, 1, 0, 2, 2])
    col = torch.tensor([1, 2, 0, 1, 0, 1])
    value = torch.arange(6)
    adj = SparseTensor(row=row, col=col, value=value, sparse_sizes=(3, 3))
    selected = adj[torch.tensor([2, 0, 2])]
    rows = selected.storage.row().tolist()
    values = selected.storage.value().tolist()
    # row 2 has entries (col 0 -> 4), (col 1 -> 0), (col 1 -> 5): sorted by column, stable
    assert rows == [0, 0, 0, 1, 1, 2, 2, 2]
    assert values == [4, 0, 5, 3, 1, 4, 0, 5]
    assert selected.storage.col().tolist() == [0, 1, 1, 1, 2, 0, 1, 1]


@pytest.mark.skipif(not _compiled("torch_scatter"), reason="compiled torch_scatter absent")
def test_against_compiled_torch_scatter():  # pragma: no cover - only where the extension exists
    import torch_scatter

    src = torch.randn(50, 4)
    index = torch.randint(0, 7, (50,))
    for reduce in ("sum", "mean", "max"):
        assert torch.allclose(scatter(src, index, 0, dim_size=7, reduce=reduce),
                              torch_scatter.scatter(src, index, 0, dim_size=7, reduce=reduce))


def test_install_registers_only_missing_modules(monkeypatch):
    import sys

    from aseguide import _scatter

    monkeypatch.delitem(sys.modules, "torch_scatter", raising=False)
    monkeypatch.delitem(sys.modules, "torch_sparse", raising=False)
    real = importlib.util.find_spec
    compiled_scatter = real("torch_scatter") is not None
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "torch_sparse" else real(name, *a))
    registered = _scatter.install()
    assert "torch_sparse" not in registered
    if not compiled_scatter:
        assert registered == ["torch_scatter"]
        assert sys.modules["torch_scatter"].scatter is scatter
