"""Config files by name: a ``--config`` path that is not a file here names one that pat-seg ships.

The repository's ``configs/`` folder (the run configs, their pieces under ``data/``, ``loss/``,
``model/``, ``trainer/``, ``camvid/``, and the sweep files under ``sweeps/``) is the one source of
pat-seg's configs. A wheel carries a copy of it as ``pat_seg/configs/``, beside ``default.yaml``
(``build_configs.py`` copies it there when the wheel is built); a source checkout (an editable
install, or ``PYTHONPATH``) reads it in place. So ``pat-seg fit --config cityscapes_pat.yaml`` works
from any folder, as do ``configs/cityscapes_pat.yaml``, ``model/deeplabv3plus.yaml`` and the pieces
that options take (``--data data/cityscapes.yaml``). A path is first taken as it is (relative to the
current folder); only a ``.yaml`` path that is no file there is looked up among the shipped configs,
with a leading ``configs/`` dropped. The references inside a config (``loss: loss/pat.yaml``) are
relative to the config's own folder, so they resolve inside the shipped copy as in the repository.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
# A wheel's copy of configs/ (and default.yaml, which is pat_seg's own in either install).
PACKAGED = PACKAGE / "configs"
# A source checkout's configs/: the folder beside the package, when the package sits in a checkout.
CHECKOUT = PACKAGE.parent / "configs"
CONFIG_SUFFIXES = (".yaml", ".yml")


def shipped_config_folders() -> list[Path]:
    """Where the shipped configs are, in the order they are searched: the package's copy, then a
    checkout's ``configs/`` (recognised by the ``pyproject.toml`` beside it, so that an unrelated
    ``configs`` folder next to an installed package is never read)."""
    folders = [PACKAGED]
    if (PACKAGE.parent / "pyproject.toml").is_file() and CHECKOUT.is_dir():
        folders.append(CHECKOUT)
    return folders


def shipped_config(name: str | Path) -> Path | None:
    """The shipped config that ``name`` names (``cityscapes_pat.yaml``, ``configs/loss/pat.yaml``,
    ``sweeps/table3.yaml``), or None when ``name`` is a file as it is, an absolute path, or names
    no shipped config."""
    path = Path(name).expanduser()
    if path.is_absolute() or path.is_file() or path.suffix not in CONFIG_SUFFIXES:
        return None
    relative = [path]
    if path.parts[0] == "configs" and len(path.parts) > 1:
        relative.append(Path(*path.parts[1:]))
    for folder in shipped_config_folders():
        for candidate in relative:
            if (folder / candidate).is_file():
                return folder / candidate
    return None


def resolve_config(name: str) -> str:
    """``name``, or the path of the shipped config it names (:func:`shipped_config`)."""
    found = shipped_config(name)
    return str(found) if found is not None else name


def with_shipped_configs(argv: list[str]) -> list[str]:
    """``argv`` with each ``.yaml`` argument that is not a file here replaced by the shipped config it
    names: ``--config FILE`` and ``--config=FILE``, and the config pieces that options take
    (``--data data/cityscapes.yaml``, ``--model.model=model/segnet.yaml``). Other arguments stay."""
    resolved = []
    for argument in argv:
        option, equals, value = argument.partition("=")
        if equals and option.startswith("--"):
            resolved.append(f"{option}={resolve_config(value)}")
        else:
            resolved.append(resolve_config(argument))
    return resolved
