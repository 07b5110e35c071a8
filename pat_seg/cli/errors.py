"""pat-seg's own errors end a ``pat-seg`` command with ``pat-seg <command>: error: <message>`` and their
exit code instead of a traceback. They are told apart by type (:mod:`pat_seg.exceptions` says which, and
why every other exception keeps its traceback). A ``ValueError`` or ``TypeError`` with which a configured
class rejected its arguments while the command was being set up is a configuration error too
(:func:`configuration_error`). ``PAT_SEG_DEBUG=1`` shows the traceback of every error.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import import_module
from pathlib import Path
from typing import Any

import yaml

from pat_seg.arguments import NUMBER_TYPE_BOUNDS, expected_number
from pat_seg.cli.class_paths import explain_class_path
from pat_seg.exceptions import ConfigurationError, PatSegError

MAX_MESSAGE_LINES = 12


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and every exception it was raised from or while handling, outermost first."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def project_error(error: BaseException) -> PatSegError | None:
    """The pat-seg error behind ``error`` (jsonargparse and Lightning wrap them), or None."""
    return next((link for link in _chain(error) if isinstance(link, PatSegError)), None)


def configuration_error(error: BaseException) -> ConfigurationError | None:
    """A class rejecting its configured arguments, as a :class:`ConfigurationError` with the rejection's words.

    jsonargparse wraps what a constructor raised; the innermost error is the rejection. None when
    ``error`` holds a pat-seg error already, or when the innermost error is not a ``ValueError`` or
    ``TypeError`` (a torch error while building a network, say): those are raised as they are.
    """
    if project_error(error) is not None:
        return None
    innermost = list(_chain(error))[-1]
    return ConfigurationError(str(innermost)) if isinstance(innermost, (ValueError, TypeError)) else None


@contextmanager
def short_errors(command: str) -> Iterator[None]:
    """Turn pat-seg's own errors into a short message on stderr and an exit code (see the module doc)."""
    try:
        yield
    except Exception as error:
        cause = project_error(error)
        if cause is None or os.environ.get("PAT_SEG_DEBUG", "").strip() not in ("", "0"):
            raise
        lines = without_worker_traceback(str(cause)).strip().splitlines() or [type(cause).__name__]
        if len(lines) > MAX_MESSAGE_LINES:
            lines = lines[:MAX_MESSAGE_LINES] + ["..."]
        lines[0] = f"pat-seg {command}: error: {lines[0]}"
        sys.stderr.write("\n".join([*lines, "(set PAT_SEG_DEBUG=1 to see the traceback)"]) + "\n")
        sys.exit(cause.exit_code)


# A loader worker's exception reaches the main process as an exception of its type whose message is
# the worker's whole traceback (torch.utils.data's ExceptionWrapper): the file it names comes last.
_WORKER_ERROR = re.compile(
    r"Caught (?P<type>\w+) in DataLoader worker process \d+\.\nOriginal Traceback \(most recent call last\):\n"
)


def without_worker_traceback(message: str) -> str:
    """``message`` with a loader worker's traceback in it replaced by the message of the exception the
    traceback ends in (``cannot read image x.png: ...``); any other message as it is."""
    wrapped = _WORKER_ERROR.search(message)
    if wrapped is None:
        return message
    traceback = message[wrapped.end() :]
    raised = list(re.finditer(rf"^(?:[\w.]+\.)?{wrapped['type']}: ", traceback, re.MULTILINE))
    if not raised:
        return message
    return message[: wrapped.start()] + traceback[raised[-1].end() :].rstrip("\n")


_UNACCEPTED = re.compile(
    r"class_path '(?P<path>[\w.]+)':\s*\n\s*(?:Option|Key) '(?P<key>[\w.]+)' is not (?:accepted|expected)"
)
_UNRECOGNIZED = re.compile(r"unrecognized arguments: (?P<arguments>.+)")
_PARSER_KEY = re.compile(r'Parser key "(?P<key>[\w.]+)"')
_MISSING_CONFIG = re.compile(r'Parser key "config":\s*File does not exist')
# A value outside its type (pat_seg.arguments): a Literal alias's choices, or a restricted number type's range.
_NOT_A_CHOICE = re.compile(r"Expected a typing\.Literal\[(?P<choices>.*)\]\. Got value: (?P<value>.*)")
_OUT_OF_RANGE = re.compile(r"Not of type (?P<type>\w+): (?P<value>\S*) ?does not conform to restriction")
_GIVEN_VALUE = re.compile(r"Given value: (?P<value>.*)")
_CLASS_PATH = re.compile(r"class_path '(?P<path>[\w.]+)'")


def explain_parse_error(error: Exception, argv: list[str], options: list[str]) -> ConfigurationError:
    """A jsonargparse parse error as one short message: the file and key, and the closest valid key.

    ``argv``: the command's arguments (its ``--config`` files are searched for the key); ``options``:
    the option strings the command accepts (for a mistyped flag, and for a config file's unknown key).
    """
    unknown = unknown_config_key(config_files(argv), options)
    if unknown is not None:
        return unknown
    text = str(error)
    unaccepted = _UNACCEPTED.search(text)
    if unaccepted is not None:
        key, path = unaccepted["key"], unaccepted["path"]
        accepted = _init_arguments(path)
        section = _PARSER_KEY.search(text)
        name = f"{section['key']}.init_args.{key}" if section else key
        message = f"{_where(key, argv)}: {name} is not an argument of {path.rsplit('.', 1)[-1]}"
        return ConfigurationError(
            message + _closest(key, accepted) + (f"\naccepted: {', '.join(accepted)}" if accepted else "")
        )
    unrecognized = _UNRECOGNIZED.search(text)
    if unrecognized is not None:
        flag = unrecognized["arguments"].split()[0].split("=")[0]
        return ConfigurationError(f"unknown option {flag}" + _closest(flag, options))
    refused = explain_refused_value(text, argv)
    if refused is not None:
        return refused
    class_path = explain_class_path(text)
    if class_path is not None:
        return class_path
    # A union type's errors come once per type it tried, often word for word: each line once.
    lines = list(dict.fromkeys(line for line in text.strip().splitlines() if line.strip()))[: MAX_MESSAGE_LINES - 3]
    if _MISSING_CONFIG.search(text):  # neither a file here nor a shipped config (pat_seg.config_files)
        lines.append("--config takes a file, or a config pat-seg ships by its name in configs/ (see pat-seg --help)")
    return ConfigurationError("\n".join(lines) or type(error).__name__)


def explain_refused_value(text: str, argv: list[str]) -> ConfigurationError | None:
    """A value its type refuses (a typo among a ``Literal``'s choices, a number out of its type's range)
    as one line in :mod:`pat_seg.arguments`' wording: ``<where>: reduction of PATLoss must be one of
    'mean', 'sum', 'none'; got 'meen'``. None when ``text`` is about something else."""
    refusal = _NOT_A_CHOICE.search(text) or _OUT_OF_RANGE.search(text)
    if refusal is None:
        return None
    if refusal.re is _NOT_A_CHOICE:
        choices = refusal["choices"]
        expected = f"one of {choices}"
        value = repr(refusal["value"]) if choices.startswith("'") else refusal["value"]
    elif refusal["type"] in NUMBER_TYPE_BOUNDS:
        expected = expected_number(**NUMBER_TYPE_BOUNDS[refusal["type"]])
        # Inside an Optional the refusal leaves the value out; the union's "Given value" after it has it.
        given = _GIVEN_VALUE.search(text, refusal.end())
        value = refusal["value"] or (given["value"] if given else "?")
    else:
        return None  # another library's restricted type: jsonargparse's own words, below
    # The innermost key before the refusal is the argument; the class it belongs to, the last class_path.
    keys, classes = _PARSER_KEY.findall(text[: refusal.start()]), _CLASS_PATH.findall(text[: refusal.start()])
    if not keys:
        return None
    name = f"{keys[-1]} of {classes[-1].rsplit('.', 1)[-1]}" if classes else keys[-1]
    return ConfigurationError(f"{_where(keys[-1], argv)}: {name} must be {expected}; got {value}")


def _init_arguments(class_path: str) -> list[str]:
    """The ``__init__`` arguments of the class at ``class_path`` (empty when it cannot be imported)."""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(import_module(module), name)
        return [parameter for parameter in inspect.signature(cls.__init__).parameters if parameter != "self"]
    except (ImportError, AttributeError, ValueError, TypeError):
        return []


def _closest(key: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return f"; did you mean {match[0]}?" if match else ""


def config_files(argv: list[str]) -> list[str]:
    """The ``--config`` / ``-c`` files of a command's arguments, in the order given."""
    files = []
    for index, argument in enumerate(argv):
        if argument in ("--config", "-c") and index + 1 < len(argv):
            files.append(argv[index + 1])
        elif argument.startswith("--config="):
            files.append(argument.split("=", 1)[1])
    return files


def _mapping_nodes(file: str) -> yaml.MappingNode | None:
    """The top-level mapping of a YAML file, with the line of every key (None: no such file, or no mapping)."""
    path = Path(file)
    try:
        node = yaml.compose(path.read_text()) if path.is_file() else None
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return None  # jsonargparse names a file it cannot read or parse
    return node if isinstance(node, yaml.MappingNode) else None


def _key_line(node: yaml.MappingNode, keys: tuple[str, ...]) -> int | None:
    """The 1-based line of the key at the dotted path ``keys`` inside ``node``, or None where it is not set."""
    for depth, key in enumerate(keys):
        found = next(
            (pair for pair in node.value if isinstance(pair[0], yaml.ScalarNode) and pair[0].value == key), None
        )
        if found is None:
            return None
        if depth == len(keys) - 1:
            return int(found[0].start_mark.line) + 1
        if not isinstance(found[1], yaml.MappingNode):
            return None
        node = found[1]
    return None


def where_set(key: str, argv: list[str], defaults: Sequence[str] = ()) -> str:
    """Where the dotted config ``key`` (``trainer.max_epochs``) got its value: ``the command line``
    (``--trainer.max_epochs``), else ``FILE line N`` of the last ``--config`` file that sets it (later
    files win), else of the first of ``defaults`` (the default config files) that does, else ``its default``."""
    flag = f"--{key}"
    if any(argument == flag or argument.startswith(flag + "=") for argument in argv):
        return "the command line"
    for file in [*reversed(config_files(argv)), *defaults]:
        node = _mapping_nodes(file)
        line = _key_line(node, tuple(key.split("."))) if node is not None else None
        if line is not None:
            return f"{file} line {line}"
    return "its default"


def unknown_config_key(files: list[str], options: list[str]) -> ConfigurationError | None:
    """The first key of a ``--config`` file that the command has no option for (``trainer: max_epoch:``,
    a top-level ``modle:``), named with its file and line and the closest keys it has, or None.

    Keys are read where the command has a group of options (``trainer``, ``model``); below an option
    that takes a whole value (a class's ``class_path``/``init_args``, a callback list) jsonargparse
    checks the value itself, and :func:`explain_parse_error` words that.
    """
    known = {option[2:] for option in options if option.startswith("--")}
    for file in files:
        top = _mapping_nodes(file)
        found = _unknown_key(top, (), known) if top is not None else None
        if found is not None:
            keys, line = found
            parent, siblings = ".".join(keys[:-1]), _children(keys[:-1], known)
            section = f"under {parent}: " if parent else ""
            matches = difflib.get_close_matches(keys[-1], siblings, n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(matches)}?" if matches else ""
            return ConfigurationError(
                f"{file} line {line}: unknown key {'.'.join(keys)}{hint}\n"
                f"{section}valid keys are {', '.join(siblings[:24])}{' ...' if len(siblings) > 24 else ''}"
            )
    return None


def _children(prefix: tuple[str, ...], known: set[str]) -> list[str]:
    """The names one level below ``prefix`` that the command has options for (``help`` left out)."""
    depth = len(prefix)
    names = {
        key.split(".")[depth] for key in known if key.split(".")[:depth] == list(prefix) and len(key.split(".")) > depth
    }
    # "callbacks+" (append to a list) is a command-line form, not a key of a file.
    return sorted(name for name in names - {"help"} if not name.endswith("+"))


def _unknown_key(
    node: yaml.MappingNode, prefix: tuple[str, ...], known: set[str]
) -> tuple[tuple[str, ...], int] | None:
    for key_node, value in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        keys = (*prefix, str(key_node.value))
        dotted = ".".join(keys)
        group = bool(_children(keys, known))
        if not group and dotted not in known:
            return keys, int(key_node.start_mark.line) + 1
        if group and isinstance(value, yaml.MappingNode) and not _takes_a_class(value):
            found = _unknown_key(value, keys, known)
            if found is not None:
                return found
    return None


def _takes_a_class(node: yaml.MappingNode) -> bool:
    """A ``class_path`` / ``init_args`` mapping: jsonargparse checks its arguments against the class."""
    keys: set[Any] = {pair[0].value for pair in node.value if isinstance(pair[0], yaml.ScalarNode)}
    return bool(keys & {"class_path", "init_args"})


def _where(key: str, argv: list[str]) -> str:
    """``file.yaml line N`` of the first ``--config`` file that sets ``key``, else ``the command line``."""
    files = config_files(argv)
    pattern = re.compile(rf"^\s*['\"]?{re.escape(key)}['\"]?\s*:", re.MULTILINE)
    for file in files:
        path = Path(file)
        text = path.read_text() if path.is_file() else ""
        found = pattern.search(text) or re.search(rf"['\"]{re.escape(key)}['\"]\s*:", text)
        if found is not None:
            return f"{file} line {text.count(chr(10), 0, found.start()) + 1}"
    return "the command line"
