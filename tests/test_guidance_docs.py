"""The examples in the docstrings of the guidance modules run and give what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["aseguide.sampling.guidance", "aseguide.sampling.dynamics", "aseguide.sampling.writers",
           "aseguide.models.analytic", "aseguide.models.conditions"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
