"""The forgetting matrix drawn as a PNG heatmap (pytest_sleepy.results.heatmap)."""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("matplotlib")

from matplotlib.image import imread  # noqa: E402

from pytest_sleepy.results.comparison import (GAIN, GAIN_NOT_SIGNIFICANT, KEPT_FAIL, KEPT_PASS, LOSS,  # noqa: E402
                                      LOSS_NOT_SIGNIFICANT, NOT_COMPARED, ForgettingMatrix)
from pytest_sleepy.results.heatmap import CATEGORIES, PlotsUnavailable, draw_heatmap  # noqa: E402

COLUMNS = ["baseline run: baseline", "hints", "lora"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LOSSES = {("koan_03", "hints"), ("koan_10", "lora"), ("koan_21", "lora")}
GAINS = {("koan_01", "hints"), ("koan_14", "lora")}
CHANGED_KOANS = {"koan_07"}  # not compared in both columns


def make_matrix(losses=LOSSES) -> ForgettingMatrix:
    """30 koans: odd ones fail in the reference, even ones pass; then the listed
    gains, losses and not-compared cells; koan_25 was not run by lora."""
    koans = [f"koan_{i:02d}" for i in range(30)]
    cells = {}
    for i, koan in enumerate(koans):
        reference = KEPT_FAIL if i % 2 else KEPT_PASS
        cells[(koan, COLUMNS[0])] = reference
        for column in COLUMNS[1:]:
            if (koan, column) in losses:
                symbol = LOSS
            elif (koan, column) in GAINS:
                symbol = GAIN
            elif koan in CHANGED_KOANS:
                symbol = NOT_COMPARED
            else:
                symbol = reference
            if not (koan == "koan_25" and column == "lora"):
                cells[(koan, column)] = symbol
    return ForgettingMatrix(koans, list(COLUMNS), cells)


def rgb(hex_colour: str) -> tuple[float, float, float]:
    return tuple(int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5))


def pixels_of(image, hex_colour: str) -> int:
    """How many pixels of `image` (imread's floats) have exactly this colour (to 1/255)."""
    import numpy
    return int((numpy.abs(image[..., :3] - numpy.array(rgb(hex_colour))) < 1.5 / 255).all(axis=-1).sum())


def test_the_example_matrix_is_what_the_tests_assume():
    matrix = make_matrix()
    assert matrix.cell("koan_03", "hints") == LOSS and matrix.cell("koan_25", "lora") == ""
    assert set(matrix.changed_rows()) == {k for k, _ in LOSSES | GAINS}


def test_draws_a_png_of_a_legible_size(tmp_path):
    target = tmp_path / "deep" / "er" / "matrix.png"  # parent folders are created
    path = draw_heatmap(make_matrix(), target, title="hints and lora against the baseline")
    assert path == target and path.is_file()
    assert path.read_bytes()[:8] == PNG_MAGIC
    height, width, channels = imread(path).shape
    assert channels in (3, 4)
    # 30 koans + 5 total rows at ~0.24 in and 150 dpi, 3 columns of ~0.95 in plus labels and legend.
    assert 1100 <= height <= 2200, height
    assert 800 <= width <= 1800, width


def test_draw_accepts_a_string_path(tmp_path):
    path = draw_heatmap(make_matrix(), str(tmp_path / "matrix.png"))
    assert path == tmp_path / "matrix.png" and path.read_bytes()[:8] == PNG_MAGIC


def test_changed_rows_make_a_shorter_image(tmp_path):
    full = imread(draw_heatmap(make_matrix(), tmp_path / "full.png"))
    changed = imread(draw_heatmap(make_matrix(), tmp_path / "changed.png", rows="changed"))
    assert changed.shape[0] < full.shape[0] / 2  # 5 rows instead of 30
    assert pixels_of(changed, CATEGORIES[LOSS][1]) > 0


def test_more_koans_make_a_taller_image_and_more_columns_a_wider_one(tmp_path):
    small = make_matrix()
    koans = [f"koan_{i:02d}" for i in range(80)]
    columns = [*COLUMNS, "few_shot:temperature=0.7", "chain_of_thought", "lora:rank=16"]
    big = ForgettingMatrix(koans, columns, {(k, c): KEPT_PASS for k in koans for c in columns})
    small_shape = imread(draw_heatmap(small, tmp_path / "small.png")).shape
    big_shape = imread(draw_heatmap(big, tmp_path / "big.png")).shape
    assert big_shape[0] > 2 * small_shape[0]
    assert big_shape[1] > small_shape[1] + 3 * 100  # three more columns of ~140 px


def test_lost_cells_are_drawn_in_the_lost_colour(tmp_path):
    lost = CATEGORIES[LOSS][1]
    with_losses = imread(draw_heatmap(make_matrix(), tmp_path / "losses.png"))
    without = imread(draw_heatmap(make_matrix(losses=set()), tmp_path / "none.png"))
    # The legend shows the lost colour in both; each lost cell adds a block of it
    # (~140 x 36 px at 150 dpi, less the symbol).
    assert pixels_of(with_losses, lost) - pixels_of(without, lost) > len(LOSSES) * 2000
    assert pixels_of(with_losses, CATEGORIES[GAIN][1]) > len(GAINS) * 2000


def test_every_category_colour_is_distinct():
    fills = [fill for _, fill, _, _ in CATEGORIES.values()]
    assert len(set(fills)) == len(fills)
    assert set(CATEGORIES) == {KEPT_PASS, KEPT_FAIL, GAIN, LOSS, GAIN_NOT_SIGNIFICANT, LOSS_NOT_SIGNIFICANT,
                               NOT_COMPARED, ""}


def test_no_changed_koan_still_writes_an_image(tmp_path):
    koans = ["a", "b"]
    matrix = ForgettingMatrix(koans, COLUMNS[:2], {(k, c): KEPT_PASS for k in koans for c in COLUMNS[:2]})
    path = draw_heatmap(matrix, tmp_path / "nothing.png", rows="changed")
    assert path.read_bytes()[:8] == PNG_MAGIC
    empty = draw_heatmap(ForgettingMatrix([], [], {}), tmp_path / "empty.png")
    assert empty.read_bytes()[:8] == PNG_MAGIC


def test_an_unknown_rows_value_is_refused(tmp_path):
    with pytest.raises(ValueError, match="rows"):
        draw_heatmap(make_matrix(), tmp_path / "x.png", rows="some")
    assert not (tmp_path / "x.png").exists()


def test_drawing_leaves_pyplot_alone(tmp_path):
    """No pyplot figure (and so no window) is made, whatever backend is in use."""
    pyplot_was_loaded = "matplotlib.pyplot" in sys.modules
    draw_heatmap(make_matrix(), tmp_path / "m.png")
    if not pyplot_was_loaded:
        assert "matplotlib.pyplot" not in sys.modules
    else:
        assert not sys.modules["matplotlib.pyplot"].get_fignums()


def test_without_matplotlib_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    # A None entry in sys.modules makes `import matplotlib` raise ImportError, as when
    # the package is not installed.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(PlotsUnavailable) as raised:
        draw_heatmap(make_matrix(), tmp_path / "m.png")
    assert isinstance(raised.value, RuntimeError)
    assert str(raised.value) == "drawing a heatmap needs matplotlib: pip install 'pytest-sleepy[plots]'"
    assert not (tmp_path / "m.png").exists()
