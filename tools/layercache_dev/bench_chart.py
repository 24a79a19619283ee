"""A grouped bar chart as a PNG, with no plotting library: a pixel canvas, a 5x7 font, zlib.

    png = bar_chart("Wall seconds", groups=["cold", ...], series=["no cache", ...],
                    values=[[12.0, ...], ...])     # values[group][series]
    Path("chart.png").write_bytes(png)

Text is drawn in capitals; characters the font lacks are drawn as blanks.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence

Color = tuple[int, int, int]
WHITE: Color = (255, 255, 255)
BLACK: Color = (30, 30, 30)
GRID: Color = (225, 225, 225)
PALETTE: tuple[Color, ...] = (
    (140, 140, 140),  # no cache
    (214, 96, 77),  # seed
    (244, 165, 80),  # inline
    (33, 102, 172),  # ours
    (90, 170, 90),  # warm
    (150, 110, 180),
)

# 5x7 glyphs, one string of 5 characters per row ('#' is ink).
_FONT_ROWS = {
    "A": " ### #   ##   #######   ##   ##   #",
    "B": "#### #   ##   ##### #   ##   ##### ",
    "C": " ### #   ##    #    #    #   # ### ",
    "D": "#### #   ##   ##   ##   ##   ##### ",
    "E": "######    #    #### #    #    #####",
    "F": "######    #    #### #    #    #    ",
    "G": " ### #   ##    # ####   ##   # ####",
    "H": "#   ##   ##   #######   ##   ##   #",
    "I": " ###   #    #    #    #    #   ### ",
    "J": "  ###   #    #    #    ##   # ###  ",
    "K": "#   ##  # # #  ##   # #  #  # #   #",
    "L": "#    #    #    #    #    #    #####",
    "M": "#   ### ### # ##   ##   ##   ##   #",
    "N": "#   ###  ## # ##  ###   ##   ##   #",
    "O": " ### #   ##   ##   ##   ##   # ### ",
    "P": "#### #   ##   ##### #    #    #    ",
    "Q": " ### #   ##   ##   ## # ##  #  ## #",
    "R": "#### #   ##   ##### # #  #  # #   #",
    "S": " #####    #     ###     #    ##### ",
    "T": "#####  #    #    #    #    #    #  ",
    "U": "#   ##   ##   ##   ##   ##   # ### ",
    "V": "#   ##   ##   ##   ##   # # #   #  ",
    "W": "#   ##   ##   ## # ## # ## # # # # ",
    "X": "#   ##   # # #   #   # # #   ##   #",
    "Y": "#   ##   # # #   #    #    #    #  ",
    "Z": "#####    #   #   #   #   #    #####",
    "0": " ### #   ##  ### # ###  ##   # ### ",
    "1": "  #   ##    #    #    #    #   ### ",
    "2": " ### #   #    #   #   #   #   #####",
    "3": "#####   #   #     #     ##   # ### ",
    "4": "   #   ##  # # #  # #####   #    # ",
    "5": "######    ####     #    ##   # ### ",
    "6": "  ##  #   #    #### #   ##   # ### ",
    "7": "#####    #   #   #   #    #    #   ",
    "8": " ### #   ##   # ### #   ##   # ### ",
    "9": " ### #   ##   # ####    #   #  ##  ",
    " ": " " * 35,
    ".": "                         ##   ##   ",
    ",": "                           #   #   ",
    ":": "      ##   ##         ##   ##      ",
    "-": "               ###                 ",
    "+": "       #    #  #####  #    #       ",
    "=": "          #####     #####          ",
    "(": "   #   #   #    #    #     #     # ",
    ")": " #     #     #    #    #   #   #   ",
    "/": "         #   #   #   #   #         ",
    "%": "##   ##  #   #   #   #   #  ##   ##",
    "*": "       # # # ### ##### ### # # #   ",
    "<": "   #   #   #   #     #     #     # ",
    ">": " #     #     #     #   #   #   #   ",
    "_": "                              #####",
    "'": "  #    #   #                       ",
}
_FONT = {char: rows.ljust(35)[:35] for char, rows in _FONT_ROWS.items()}


class Canvas:
    def __init__(self, width: int, height: int, background: Color = WHITE) -> None:
        self.width = width
        self.height = height
        self.pixels = bytearray(bytes(background) * (width * height))

    def rect(self, x: int, y: int, width: int, height: int, color: Color) -> None:
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(self.width, x + width), min(self.height, y + height)
        if x1 <= x0 or y1 <= y0:
            return
        row = bytes(color) * (x1 - x0)
        for line in range(y0, y1):
            start = (line * self.width + x0) * 3
            self.pixels[start : start + len(row)] = row

    def text(self, x: int, y: int, text: str, color: Color = BLACK, scale: int = 2) -> None:
        for index, char in enumerate(text.upper()):
            glyph = _FONT.get(char, _FONT[" "])
            left = x + index * 6 * scale
            for cell, ink in enumerate(glyph):
                if ink == "#":
                    row, column = divmod(cell, 5)
                    self.rect(left + column * scale, y + row * scale, scale, scale, color)

    def png(self) -> bytes:
        raw = b"".join(
            b"\x00" + bytes(self.pixels[row * self.width * 3 : (row + 1) * self.width * 3])
            for row in range(self.height)
        )

        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


def text_width(text: str, scale: int = 2) -> int:
    return len(text) * 6 * scale


def nice_step(top: float) -> float:
    """A round grid step giving 4 to 8 lines up to `top`."""
    if top <= 0:
        return 1.0
    raw = top / 6
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if factor * magnitude >= raw:
            return factor * magnitude
    return 10.0 * magnitude


def bar_chart(
    title: str,
    groups: Sequence[str],
    series: Sequence[str],
    values: Sequence[Sequence[float]],
    *,
    subtitle: str = "",
    unit: str = "s",
    width: int = 1280,
    height: int = 720,
) -> bytes:
    """Grouped bars: one group per `groups` entry, one bar per `series` entry."""
    canvas = Canvas(width, height)
    left, right, top, bottom = 90, 30, 80, 200
    plot_w, plot_h = width - left - right, height - top - bottom
    canvas.text(left, 20, title, scale=3)
    if subtitle:
        canvas.text(left, 52, subtitle, scale=2)
    peak = max((value for row in values for value in row), default=1.0) or 1.0
    step = nice_step(peak)
    ceiling = step * math.ceil(peak / step)
    lines = round(ceiling / step)
    for line in range(lines + 1):
        y = top + plot_h - int(plot_h * line / lines)
        canvas.rect(left, y, plot_w, 1, GRID)
        label = f"{line * step:g}{unit}"
        canvas.text(left - 10 - text_width(label), y - 7, label)
    canvas.rect(left, top, 2, plot_h, BLACK)
    canvas.rect(left, top + plot_h, plot_w, 2, BLACK)
    group_w = plot_w / max(1, len(groups))
    bar_w = max(2, int(group_w * 0.8 / max(1, len(series))))
    for g, group in enumerate(groups):
        x0 = left + int(g * group_w + group_w * 0.1)
        for s, value in enumerate(values[g]):
            bar_h = int(plot_h * value / ceiling)
            canvas.rect(
                x0 + s * bar_w, top + plot_h - bar_h, bar_w - 2, bar_h, PALETTE[s % len(PALETTE)]
            )
            label = f"{value:.1f}" if value < 100 else f"{value:.0f}"
            label_left = x0 + s * bar_w + (bar_w - 2 - text_width(label, 1)) // 2
            canvas.text(label_left, top + plot_h - bar_h - 10, label, scale=1)
        label_x = left + int(g * group_w + (group_w - text_width(group)) / 2)
        canvas.text(max(0, label_x), top + plot_h + 12, group)
    legend_y = top + plot_h + 50
    for s, name in enumerate(series):
        column, row = divmod(s, 3)
        x = left + column * (plot_w // 2)
        y = legend_y + row * 28
        canvas.rect(x, y, 18, 18, PALETTE[s % len(PALETTE)])
        canvas.text(x + 28, y + 2, name)
    return canvas.png()
