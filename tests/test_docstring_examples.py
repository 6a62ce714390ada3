"""Every module's docstring examples run as doctests and give what they say.

Examples that need the network, a GPU or hours of compute carry ``# doctest: +SKIP``;
everything else runs here, so that the documentation cannot drift from the code.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import aseguide

#: Modules whose import needs an optional dependency that may be absent.
OPTIONAL = {"aseguide.testing.tiny_grace": "tensorpotential", "aseguide.potentials.grace": "tensorpotential"}

MODULES = sorted(info.name for info in pkgutil.walk_packages(aseguide.__path__, "aseguide.")
                 if not info.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    if name in OPTIONAL:
        pytest.importorskip(OPTIONAL[name])
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed"


def test_the_walk_finds_the_layers():
    for package in ("aseguide.sampling.dynamics", "aseguide.runs.folder", "aseguide.thermo.hull",
                    "aseguide.potentials.registry", "aseguide.training.loop", "aseguide.cli.generate"):
        assert package in MODULES
