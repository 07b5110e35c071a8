"""The wheel's ``pat_seg/configs/``: setuptools' ``build_py`` with the repository's ``configs/`` added.

``configs/`` (run configs, their pieces, sweep files) stays the one source: nothing is copied into the
package in the repository. pyproject.toml names :class:`BuildPyWithConfigs` as the ``build_py``
command, so a built wheel (and an sdist, which lists the files ``build_py`` reads) carries every
``configs/**/*.yaml`` as ``pat_seg/configs/**/*.yaml``, beside the package's own ``default.yaml``.
An editable install builds nothing: :mod:`pat_seg.config_files` reads the checkout's ``configs/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools.command.build_py import build_py

SOURCE = "configs"  # relative to the project root, where setuptools runs: the sdist lists it as it is
TARGET = ("pat_seg", "configs")


class BuildPyWithConfigs(build_py):
    """``build_py`` whose package data includes ``configs/**/*.yaml`` under ``pat_seg/configs/``."""

    def _get_data_files(self):  # the (package, source folder, build folder, file names) build_py copies
        names = sorted(path.relative_to(SOURCE).as_posix() for path in Path(SOURCE).rglob("*.yaml") if path.is_file())
        return [*super()._get_data_files(), (".".join(TARGET), SOURCE, os.path.join(self.build_lib, *TARGET), names)]
