"""Terminal output through rich: tables, and a console that suits where the output goes."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TextIO

from rich import box
from rich.cells import cell_len
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

# Piped or redirected output is never wrapped: one build, one line, whatever its width.
UNWRAPPED_WIDTH = 10_000
STATUS_STYLES = {
    "SUCCEEDED": "green",
    "IN_PROGRESS": "cyan",
    "REQUESTED": "cyan",
    "STOPPED": "yellow",
}
FAILED_STYLE = "bold red"
# Free text that may fold over lines when a terminal is too narrow for the whole table.
FOLDING_COLUMNS = frozenset({"REQUESTED (UTC)", "IMAGE", "BRANCH", "BUILD ID", "QUEUE"})
FOLDED_WIDTH = 10

Cell = str | Text


def plain_text(renderables: Sequence[RenderableType]) -> str:
    """Renderables as plain text: no colour, no wrapping, no trailing blanks."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=UNWRAPPED_WIDTH, color_system=None, highlight=False)
    for renderable in renderables:
        console.print(renderable)
    return "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())


def write_output(out: TextIO, renderables: Sequence[RenderableType]) -> None:
    """To a terminal in its width and colours; to a pipe or a file as `plain_text`."""
    console = Console(file=out, highlight=False)
    if console.is_terminal:
        terminal_width = console.width
        unbounded = console.options.update_width(UNWRAPPED_WIDTH)
        for renderable in renderables:
            # Folding names makes a table fit a slightly narrow terminal; when even that is
            # too wide, print it whole and let the terminal wrap, rather than crop a column.
            measured = Measurement.get(console, unbounded, renderable)
            fits = measured.minimum <= terminal_width
            console.width = terminal_width if fits else measured.maximum
            console.print(renderable)
    else:
        out.write(plain_text(renderables))


def status_cell(text: str, status: str) -> Text:
    return Text(text, style=STATUS_STYLES.get(status, FAILED_STYLE))


def build_table(headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> Table:
    """Columns two spaces apart; on a narrow terminal only names and ids fold."""
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1, 0, 0),
        header_style="bold",
        expand=False,
    )
    # Text, not markup: a branch named "[fix]" is shown as it is.
    texts = [[cell if isinstance(cell, Text) else Text(cell) for cell in row] for row in rows]
    for index, header in enumerate(headers):
        if header in FOLDING_COLUMNS:
            table.add_column(header, overflow="fold", min_width=FOLDED_WIDTH)
        else:
            # Never narrower than its widest cell: `write_output` measures the table's
            # minimum width from these.
            widest = max([cell_len(header), *(row[index].cell_len for row in texts)])
            table.add_column(header, no_wrap=True, min_width=widest)
    for row in texts:
        table.add_row(*row)
    return table


def key_value_table(pairs: Sequence[tuple[str, Cell]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in pairs:
        table.add_row(key, value if isinstance(value, Text) else Text(value))
    return table
