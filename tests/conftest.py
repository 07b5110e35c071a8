"""Shared test settings: deterministic, offline, single-threaded torch (the CI machine has 2 cores)."""

import os
import shutil
import tempfile

import pytest
import torch

from pat_seg.cli.warning_filters import ini_filter_lines

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# pat-seg's cache (class counts) in a folder of the test session's own, not the user's ~/.cache/pat_seg;
# the console script's runs in subprocesses inherit it.
TEST_CACHE = tempfile.mkdtemp(prefix="pat-seg-test-cache-")
os.environ.setdefault("PAT_SEG_CACHE_DIR", TEST_CACHE)
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_configure(config: pytest.Config) -> None:
    """Ignore the dependencies' warnings that the ``pat-seg`` command ignores, and only those."""
    for line in ini_filter_lines():
        config.addinivalue_line("filterwarnings", line)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(TEST_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests where no CUDA device is present."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restore_deterministic_algorithms():
    """Give each test the deterministic-algorithms setting the one before it found.

    An in-process ``pat-seg fit`` with ``trainer.deterministic: true`` switches torch's global
    deterministic mode on for the rest of the process, which makes later tests of ops without a
    deterministic kernel (SegNet's ``max_unpool2d``) fail or pass by test order.
    """
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
