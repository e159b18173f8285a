"""The page as gradio describes it (`app.demo.config`), in-process: outputs look like outputs,
galleries show every picture, the scores chart has a number axis and hides without scores.

`app` is imported here with the eval jobs folder in tmp and no warm-up (MAMMO_WARMUP=0); the
live server's behaviour is tested in `tests/test_app.py` and `tests/test_app_browser.py`.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("gradio")


@pytest.fixture(scope="module")
def app_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """`import app` (builds the Blocks; starts no warm-up and no server)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("MAMMO_EVAL_JOBS_DIR", str(tmp_path_factory.mktemp("jobs")))
    patch.setenv("MAMMO_WARMUP", "0")
    patch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    patch.setattr(sys, "argv", ["pytest"])
    try:
        yield importlib.import_module("app")
    finally:
        patch.undo()


def _outputs(app: ModuleType, *api_names: str) -> list[tuple[Any, dict[str, Any]]]:
    """(component, its config) for each output of the events named `api_names`."""
    config = app.demo.config
    by_id = {c["id"]: c for c in config["components"]}
    ids = [i for dep in config["dependencies"] if dep.get("api_name") in api_names for i in dep["outputs"]]
    return [(app.demo.blocks[i], by_id[i]) for i in dict.fromkeys(ids)]


def test_outputs_are_not_inputs(app_module: ModuleType) -> None:
    """Every output of both tabs that could take input is non-interactive (the Compare tab's
    Overlays gallery said "Drop Media Here / Click to Upload" before a run)."""
    checked = []
    for block, config in _outputs(app_module, "predict", "compare"):
        if "interactive" in inspect.signature(type(block).__init__).parameters:
            assert config["props"].get("interactive") is False, (config["type"], block.elem_id)
            checked.append(block.elem_id)
    assert {"overlay", "patches", "maps", "downloads", "compare-overlays", "compare-maps",
            "compare-table", "compare-downloads"} <= set(checked)


def test_galleries_show_every_picture(app_module: ModuleType) -> None:
    """gradio's default height caps a gallery at 55% of the window (cascade's 5th map was cut,
    Compare showed 8 of 17 maps): every gallery grows with its pictures instead."""
    galleries = [(b, c) for b, c in _outputs(app_module, "predict", "compare") if c["type"] == "gallery"]
    assert {b.elem_id for b, _ in galleries} == {"maps", "compare-overlays", "compare-maps"}
    for block, config in galleries:
        assert config["props"]["height"] == "max-content", block.elem_id
        assert config["props"]["allow_preview"], block.elem_id  # a click still enlarges a map


def test_scores_are_numbers_on_a_0_1_axis(app_module: ModuleType) -> None:
    """The chart's data says "quantitative" for the score, with and without scores (an empty
    frame's object column was sent as "nominal": categories, and y_lim dropped)."""
    (chart, config), = [(b, c) for b, c in _outputs(app_module, "predict") if c["type"] == "nativeplot"]
    assert config["props"]["y_lim"] == [0, 1] and config["props"]["visible"] is False
    rows = [{"class": "benign", "score": 0.2}, {"class": "malignant", "score": 0.7}]
    for data in ([], rows):
        plot = chart.postprocess(app_module._scores_frame(data))
        assert plot.datatypes == {"class": "nominal", "score": "quantitative"}
        assert plot.data == [[row["class"], row["score"]] for row in data]


def test_chart_and_patch_map_hidden_when_empty(app_module: ModuleType) -> None:
    """The follow-up event reads the Details: no scores, no chart (it was an empty pair of axes)."""
    patches, scores = app_module._show_if_set({"patches": 0, "scores": {}})
    assert (patches.visible, scores.visible) == (False, False)
    patches, scores = app_module._show_if_set({"patches": 3, "scores": {"malignant": 0.7}})
    assert (patches.visible, scores.visible) == (True, True)
    assert app_module._show_if_set(None)[1].visible is False


def test_table_refreshes_while_loading(app_module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipelines table shows the load states; its timer runs only while one is loading."""
    from mammo.demo import LoadState, loading

    monkeypatch.setattr(loading, "_STATES", {"breast": LoadState("loading")})
    table, timer = app_module._pipelines_table()
    assert "| `breast` | numpy |" in table and "| loading… |" in table and timer.active
    monkeypatch.setattr(loading, "_STATES", {"breast": LoadState("ready", seconds=1.25)})
    table, timer = app_module._pipelines_table()
    assert "ready (loaded in 1.2 s)" in table and not timer.active


def test_importing_app_starts_no_warmup(app_module: ModuleType) -> None:
    import threading

    assert app_module.demo is not None
    assert "mammo-warmup" not in {thread.name for thread in threading.enumerate()}
