"""The forgetting matrix as a PNG heatmap (`draw_heatmap`).

Needs matplotlib, an optional extra: `pip install 'pytest-sleepy[plots]'`. It is
imported only when a heatmap is drawn, and drawn with the non-interactive Agg canvas
(pyplot is never imported), so drawing never opens a window, works on a headless CI
machine and leaves the caller's matplotlib backend alone; without matplotlib
`draw_heatmap` raises `PlotsUnavailable` with that install hint.

The image: one row per koan (koan ids on the left; `rows="changed"` keeps only the koans
gained or lost in some column), one column per matrix column (labels on top, the
reference column first, set apart by a thicker line). Each cell is coloured by its
state and also carries its symbol, so the image still reads without colour (printed in
grey, or by a colour-blind reader). The colours come from the Okabe-Ito palette:

    P  kept passing   muted green (a light Okabe-Ito bluish green)
    .  kept failing   light grey
    +  gained         blue, white symbol
    +? gained, not significant (samples > 1)   sky blue
    -  lost           vermillion, white symbol
    -? lost, not significant (samples > 1)     orange
    ~  not compared   yellow, hatched (the koan changed since the baseline, or is new)
       not run        white, no symbol

In the reference column `P` and `.` are simply the reference's passing and failing
koans. Under the grid one row per symbol counts each column's P, +, - and . cells (and
+?, -? and ~ when any column has one), over all the matrix's koans even when `rows="changed"`
shows fewer (a note says so); a legend sits to the right of the grid.
"""

from __future__ import annotations

from pathlib import Path

from .comparison import (GAIN, GAIN_NOT_SIGNIFICANT, KEPT_FAIL, KEPT_PASS, LOSS, LOSS_NOT_SIGNIFICANT, NOT_COMPARED,
                         SYMBOL_NAMES, ForgettingMatrix)

__all__ = ["PlotsUnavailable", "draw_heatmap", "CATEGORIES", "NOT_RUN"]

NOT_RUN = ""

# symbol -> (legend name, fill colour, symbol colour, hatch)
CATEGORIES: dict[str, tuple[str, str, str, str]] = {
    KEPT_PASS: (SYMBOL_NAMES[KEPT_PASS], "#A6DCC8", "#1A1A1A", ""),
    KEPT_FAIL: (SYMBOL_NAMES[KEPT_FAIL], "#DDDDDD", "#1A1A1A", ""),
    GAIN: (SYMBOL_NAMES[GAIN], "#0072B2", "#FFFFFF", ""),
    GAIN_NOT_SIGNIFICANT: (SYMBOL_NAMES[GAIN_NOT_SIGNIFICANT], "#56B4E9", "#1A1A1A", ""),
    LOSS: (SYMBOL_NAMES[LOSS], "#D55E00", "#FFFFFF", ""),
    LOSS_NOT_SIGNIFICANT: (SYMBOL_NAMES[LOSS_NOT_SIGNIFICANT], "#E69F00", "#1A1A1A", ""),
    NOT_COMPARED: ("not compared (changed or new)", "#F0E442", "#1A1A1A", "///"),
    NOT_RUN: ("not run", "#FFFFFF", "#1A1A1A", ""),
}
TOTAL_SYMBOLS = (KEPT_PASS, GAIN, LOSS, KEPT_FAIL)
# Total rows drawn only when some column has the symbol.
OCCASIONAL_SYMBOLS = (GAIN_NOT_SIGNIFICANT, LOSS_NOT_SIGNIFICANT, NOT_COMPARED)

DPI = 150
CELL_W = 0.95  # inches per column
CELL_H = 0.24  # inches per row
FONT = 8
INSTALL_HINT = "drawing a heatmap needs matplotlib: pip install 'pytest-sleepy[plots]'"


class PlotsUnavailable(RuntimeError):
    """matplotlib (the `plots` extra) is not installed."""


def _agg_figure():
    """A function making a matplotlib Figure drawn by the Agg canvas. pyplot is never
    imported: no window can open and the caller's own matplotlib backend is untouched."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise PlotsUnavailable(INSTALL_HINT) from error
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def figure(figsize: tuple[float, float]) -> Figure:
        fig = Figure(figsize=figsize, dpi=DPI)
        FigureCanvasAgg(fig)
        return fig
    return figure


def _text_width(text: str, size: float = FONT) -> float:
    """A generous estimate, in inches, of `text` set in the default sans-serif font."""
    return len(text) * size * 0.62 / 72


def draw_heatmap(matrix: ForgettingMatrix, path, *, title: str = "", rows: str = "full") -> Path:
    """Draw `matrix` as a PNG at `path` (parent folders are created) and return the path.
    `rows`: "full" (every koan) or "changed" (only koans gained or lost somewhere)."""
    if rows not in ("full", "changed"):
        raise ValueError(f"rows must be 'full' or 'changed', not {rows!r}")
    new_figure = _agg_figure()
    from matplotlib.patches import Patch, Rectangle

    koans = list(matrix.koans) if rows == "full" else matrix.changed_rows()
    columns = list(matrix.columns)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not title:
        title = "forgetting matrix" + ("" if rows == "full" else ": koans that changed")

    if not koans or not columns:
        fig = new_figure((4.5, 1.2))
        fig.text(0.5, 0.65, title, ha="center", va="center", fontsize=FONT + 3, weight="bold")
        note = "no koan changed" if rows == "changed" and matrix.koans else "no koans to show"
        fig.text(0.5, 0.3, note, ha="center", va="center", fontsize=FONT + 1)
        fig.savefig(path, dpi=DPI, format="png")
        return path

    totals = matrix.totals()
    total_symbols = list(TOTAL_SYMBOLS)
    total_symbols += [s for s in OCCASIONAL_SYMBOLS if any(totals[c][s] for c in columns)]
    n_rows, n_cols = len(koans), len(columns)
    gap = 0.6  # rows of space between the grid and the totals
    total_top = n_rows + gap
    y_extent = total_top + len(total_symbols)

    # Column labels: horizontal when they fit in a cell, otherwise rotated.
    longest = max(_text_width(c) for c in columns)
    rotation = 0 if longest <= CELL_W * 0.92 else 35
    label_h = 0.25 if rotation == 0 else longest * 0.574 + 0.15  # sin(35 degrees)
    title_h = 0.35
    left = max(_text_width(k) for k in [*koans, "total kept passing (P)"]) + 0.25
    right = 2.6  # the legend
    top = label_h + title_h
    bottom = 0.2
    grid_w, grid_h = n_cols * CELL_W, y_extent * CELL_H
    fig_w, fig_h = left + grid_w + right, top + grid_h + bottom
    fig = new_figure((fig_w, fig_h))
    ax = fig.add_axes((left / fig_w, bottom / fig_h, grid_w / fig_w, grid_h / fig_h))
    ax.set_xlim(0, n_cols)
    ax.set_ylim(y_extent, 0)
    for spine in ax.spines.values():
        spine.set_visible(False)

    for r, koan in enumerate(koans):
        for c, column in enumerate(columns):
            symbol = matrix.cell(koan, column)
            _, fill, ink, hatch = CATEGORIES.get(symbol, CATEGORIES[NOT_RUN])
            ax.add_patch(Rectangle((c, r), 1, 1, facecolor=fill, edgecolor="#FFFFFF", linewidth=0.8,
                                   hatch=hatch or None, antialiased=False))
            if not symbol:  # a thin grey outline so an empty cell does not read as a gap
                ax.add_patch(Rectangle((c + 0.04, r + 0.1), 0.92, 0.8, fill=False, edgecolor="#BBBBBB",
                                       linewidth=0.6, linestyle=(0, (2, 2))))
            else:
                # On a hatched cell the symbol gets a patch of plain fill so the hatch
                # does not run through it.
                ax.text(c + 0.5, r + 0.5, symbol, ha="center", va="center_baseline", color=ink,
                        fontsize=FONT + 3, weight="bold", family="monospace",
                        bbox=dict(boxstyle="square,pad=0.1", facecolor=fill, edgecolor="none")
                        if hatch else None)
    # The grid's frame, and a thicker line after the reference column.
    ax.add_patch(Rectangle((0, 0), n_cols, n_rows, fill=False, edgecolor="#555555", linewidth=0.8))
    if n_cols > 1:
        ax.plot([1, 1], [0, n_rows], color="#333333", linewidth=1.6)

    # Totals under each column, one row per symbol.
    for i, symbol in enumerate(total_symbols):
        y = total_top + i + 0.5
        for c, column in enumerate(columns):
            ax.text(c + 0.5, y, str(totals[column][symbol]), ha="center", va="center_baseline",
                    fontsize=FONT, color="#1A1A1A")
    ax.plot([0, n_cols], [total_top, total_top], color="#555555", linewidth=0.8)
    if len(koans) < len(matrix.koans):
        ax.text(0, y_extent + 0.3, f"totals count all {len(matrix.koans)} koans, not only the rows shown",
                ha="left", va="top", fontsize=FONT - 1, style="italic", color="#444444")

    ax.set_yticks([r + 0.5 for r in range(n_rows)]
                  + [total_top + i + 0.5 for i in range(len(total_symbols))])
    ax.set_yticklabels(koans + [f"total {CATEGORIES[s][0].split(' (')[0]} ({s})" for s in total_symbols],
                       fontsize=FONT)
    for label in ax.get_yticklabels()[n_rows:]:
        label.set_style("italic")
    ax.set_xticks([c + 0.5 for c in range(n_cols)])
    ax.set_xticklabels(columns, fontsize=FONT, rotation=rotation,
                       ha="left" if rotation else "center", rotation_mode="anchor")
    ax.xaxis.tick_top()
    ax.tick_params(length=0, pad=3)

    handles = [Patch(facecolor=fill, edgecolor="#555555", linewidth=0.6, hatch=hatch or None,
                     label=f"{symbol or ' '}  {name}")
               for symbol, (name, fill, _, hatch) in CATEGORIES.items()]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0 + 0.2 / grid_w, 1.0),
              borderaxespad=0, frameon=False, title="cell", title_fontsize=FONT,
              alignment="left", handlelength=1.6, handleheight=1.1,
              prop={"family": "monospace", "size": FONT})
    # Matplotlib lifts an axes title above top tick labels, rotated or not.
    ax.set_title(title, loc="left", fontsize=FONT + 3, weight="bold", pad=8)
    fig.savefig(path, dpi=DPI, format="png", bbox_inches="tight", pad_inches=0.15, facecolor="white")
    return path
