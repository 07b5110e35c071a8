"""The ``Example:`` blocks of the docstrings run as written and print what they say (doctest).

Each module's expected outputs were worked out by hand in its docstring (PAT's ``2 e^{1/40} ln 2``, an
IoU of 1/3, a pixel count); a change of behaviour or of the example fails here, under plain
``python -m pytest``.
"""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ("pat_seg.losses.pat", "pat_seg.metrics", "pat_seg.class_statistics", "pat_seg.table_text")


@pytest.mark.parametrize("name", MODULES)
def test_the_docstring_examples_print_what_they_say(name: str) -> None:
    results = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, report=True)
    assert results.attempted > 0, f"{name} has no docstring example"
    assert results.failed == 0, f"{results.failed} of {results.attempted} docstring example lines of {name} failed"
