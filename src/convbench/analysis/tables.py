"""Aligned text tables: plain columns when the output goes to a pipe or a file (one row a line,
for grep and less), and on a terminal a table no wider than it: the columns named in `drop`
are left out, in that order, until the rows fit; then the column named `below` (a run's folder,
which stays whole to be copied) moves under each row, indented; and then the widest column that
may wrap (not one in `keep`) wraps inside itself."""

import shutil
import sys
import textwrap
from collections.abc import Collection, Sequence

GAP = "  "


def render_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, right: Collection[str] = ()
) -> list[str]:
    """The lines of a table: columns separated by two spaces, the columns named in `right`
    (numbers) aligned right, every other column left; no trailing spaces."""
    lines = [tuple(header), *(tuple(row) for row in rows)]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    return [_line(line, widths, header=header, right=right) for line in lines]


def _line(cells, widths, *, header, right) -> str:
    return GAP.join(
        cell.rjust(width) if name in right else cell.ljust(width)
        for name, cell, width in zip(header, cells, widths, strict=True)
    ).rstrip()


def terminal_width() -> int | None:
    """The width of the terminal standard output writes to; None for a pipe or a file."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size().columns


def fitted_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: Collection[str] = (),
    keep: Collection[str] = (),
    drop: Sequence[str] = (),
    below: str | None = None,
    width: int | None = None,
) -> list[str]:
    """`render_table`'s lines, or on a terminal (`width`: its columns, by default those of the
    terminal standard output writes to) a table no wider than it (module docstring)."""
    width = width or terminal_width()
    header, rows = list(header), [list(row) for row in rows]
    lines = render_table(header, rows, right=right)
    for name in drop:
        if width is None or max(map(len, lines)) <= width or name not in header:
            continue
        column = header.index(name)
        header.pop(column)
        for row in rows:
            row.pop(column)
        lines = render_table(header, rows, right=right)
    if width is None or max(map(len, lines)) <= width:
        return lines
    if below in header:
        column = header.index(below)
        under = [row.pop(column) for row in rows]
        header.pop(column)
        table = fitted_table(header, rows, right=right, keep=keep, width=width)
        if len(table) == len(rows) + 1:  # one line a row: each row's value goes under it
            return [
                table[0],
                *(f"{line}\n  {value}" for line, value in zip(table[1:], under, strict=True)),
            ]
        return [*table, "", f"{below}:", *(f"  {value}" for value in under)]
    return _wrapped(header, rows, right=right, keep=keep, width=width)


def _wrapped(header, rows, *, right, keep, width) -> list[str]:
    """The table with its widest column that may wrap cut to what is left of `width`."""
    widths = [max(len(str(r[c])) for r in [header, *rows]) for c in range(len(header))]
    flexible = [c for c, name in enumerate(header) if name not in keep and name not in right]
    if not flexible:
        return render_table(header, rows, right=right)
    column = max(flexible, key=lambda c: widths[c])
    others = sum(w for c, w in enumerate(widths) if c != column) + len(GAP) * (len(header) - 1)
    widths[column] = max(len(header[column]), width - others, 8)
    lines = []
    for cells in [header, *rows]:
        parts = textwrap.wrap(cells[column], widths[column]) or [""]
        for index, part in enumerate(parts):
            shown = [cell if index == 0 else "" for cell in cells]
            shown[column] = part
            lines.append(_line(shown, widths, header=header, right=right))
    return lines
