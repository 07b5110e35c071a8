"""Text that ``pat-seg report`` prints as it is given, and must not break a markdown, LaTeX or CSV table.

A data set's name (:meth:`pat_seg.data.SegmentationFolderDataModule.data_set_name`) heads the report's
columns and titles its tables in all three formats (docs/datasets.md). The CSV writer quotes a field
holding a comma or a quote, and the LaTeX writer escapes ``& % $ # _ { }``; what neither can carry is
refused where the text is given (:func:`table_text_problem`), not discovered in a broken table.
No torch: the run folder's checks use it too.
"""

from __future__ import annotations

# Characters no writer of the report escapes, and what each does there.
BREAKING = {
    "|": "ends a markdown table cell",
    "\\": "starts a LaTeX command",
    "^": "is LaTeX's superscript outside math mode",
    "~": "is LaTeX's non-breaking space",
}


def holds_control_character(text: str) -> bool:
    """Whether ``text`` holds a C0 control character (newline, carriage return, tab, NUL) or DEL."""
    return any(character < " " or character == "\x7f" for character in text)


def table_text_problem(text: str) -> str | None:
    """Why ``text`` cannot stand in a table cell as it is (``"it holds '|', which ends a markdown table
    cell"``), or None when it can.

    Empty text names nothing; a space at either end is lost in a markdown cell, where ``"a "`` would
    read as ``"a"`` and two names would look one; a control character (a newline) ends a markdown row
    or a LaTeX line; :data:`BREAKING` are the characters the writers leave as they are.
    """
    if not text.strip():
        return "it is empty"
    if text != text.strip():
        return "it starts or ends with a space"
    if holds_control_character(text):
        return "it holds a control character (a newline, a tab)"
    for character, effect in BREAKING.items():
        if character in text:
            return f"it holds {character!r}, which {effect}"
    return None
