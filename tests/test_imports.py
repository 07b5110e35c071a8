"""The loss and model packages are usable without the Lightning side of pat-seg."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("package", ["pat_seg.losses", "pat_seg.class_statistics", "pat_seg.models", "pat_seg"])
def test_import_leaves_lightning_and_torchmetrics_out(package: str) -> None:
    code = (
        f"import sys; import {package}; "
        "print(sorted(name for name in ('lightning', 'pytorch_lightning', 'torchmetrics') if name in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_the_module_is_still_reachable_from_the_package() -> None:
    import pat_seg
    from pat_seg.module import SegmentationModule

    assert pat_seg.SegmentationModule is SegmentationModule
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        pat_seg.Nothing  # noqa: B018
