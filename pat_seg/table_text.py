"""Text in the tables of ``pat-seg report``: how each format's writer escapes it, and what none can carry.

Labels reach the tables as the user gives them: a data set's name
(:meth:`pat_seg.data.SegmentationFolderDataModule.data_set_name`), a class name, a method label built
from a loss's arguments (docs/datasets.md, docs/results.md). Every markdown writer prints them through
:func:`markdown_text` and the LaTeX writer through :func:`latex_text`; the CSV writer quotes a field
holding a comma or a quote. What no writer can carry is refused where the text is given
(:func:`table_text_problem`), not discovered in a broken table. No torch: the run folder's checks use it too.
"""

from __future__ import annotations

import re

# LaTeX's text-mode spelling of each character that means something else there: ``\`` starts a command,
# ``^`` and ``_`` are sub/superscripts, ``~`` a non-breaking space, ``&`` a column separator, ``%`` a comment,
# ``$`` math mode, ``#`` a macro parameter, braces a group; ``|`` prints as an em dash in the default (OT1)
# font encoding, ``<`` and ``>`` as ¡ and ¿; ``±``, ``↑`` and ``↓`` (in the writers' own cells and headers)
# are not in it at all.
LATEX = {
    "\\": r"\textbackslash{}",
    "^": r"\textasciicircum{}",
    "~": r"\textasciitilde{}",
    "|": r"\textbar{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "±": r"$\pm$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
}
_LATEX_SPECIAL = re.compile("|".join(map(re.escape, LATEX)))
# In GitHub-flavoured markdown a table row is split at every ``|`` not right after a backslash, then
# ``\|`` becomes ``|`` and the rest is read as inline text, where ``\\`` is one backslash.
_MARKDOWN_SPECIAL = re.compile(r"[\\|]")


def markdown_text(text: str) -> str:
    r"""``text`` as GitHub-flavoured markdown shows it in a table cell, a heading or a paragraph:
    ``|`` -> ``\|``, which neither ends the cell nor shows its backslash, and ``\`` -> ``\\``, so that a
    backslash before a ``|`` or another punctuation mark is shown, not read as an escape.

    Example:
    >>> markdown_text("a|b"), markdown_text("C:\\runs")
    ('a\\|b', 'C:\\\\runs')
    """
    return _MARKDOWN_SPECIAL.sub(lambda match: "\\" + match.group(), text)


def latex_text(text: str) -> str:
    r"""``text`` as LaTeX prints it in text mode (:data:`LATEX`); one pass over ``text``, so that no
    replacement's own ``\``, braces or ``$`` are escaped again.

    Example:
    >>> print(latex_text("x^2 & 50% ± 1"))
    x\textasciicircum{}2 \& 50\% $\pm$ 1
    """
    return _LATEX_SPECIAL.sub(lambda match: LATEX[match.group()], text)


def holds_control_character(text: str) -> bool:
    """Whether ``text`` holds a C0 control character (newline, carriage return, tab, NUL) or DEL."""
    return any(character < " " or character == "\x7f" for character in text)


def table_text_problem(text: str) -> str | None:
    """Why ``text`` cannot stand in a table cell (``"it starts or ends with a space"``), or None when it can.

    Empty text names nothing; a control character (a newline) ends a markdown row or a LaTeX line; a
    space at either end is lost in a markdown cell, where ``"a "`` would read as ``"a"`` and two names
    would look one. The writers escape every other character (:func:`markdown_text`, :func:`latex_text`).
    """
    if not text.strip():
        return "it is empty"
    if holds_control_character(text):
        return "it holds a control character (a newline, a tab)"
    if text != text.strip():
        return "it starts or ends with a space"
    return None
