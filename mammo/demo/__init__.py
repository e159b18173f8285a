"""The non-UI logic of the Gradio demo (`app.py`), by what it does:

- `pipelines`: which pipelines can run here (the menu, availability, the page's table);
- `loading`: building them once, one at a time, and the warm-up thread that builds them at start;
- `predict`: reading an uploaded file and running one pipeline on it (`Prediction`);
- `views`: the pictures and text the page shows of a prediction;
- `downloads`: the files offered for download, in per-request folders;
- `compare`: several pipelines on one file;
- `errors`: which failures are the user's (a message, not a traceback).

Nothing here imports gradio, torch or tensorflow: a pipeline's framework is imported by the
registry the first time that pipeline is built.
"""

from __future__ import annotations

from mammo.demo.compare import COMPARE_COLUMNS, compare_file, comparison_rows
from mammo.demo.downloads import (
    OVERLAY_SIDE,
    REQUEST_MAX_AGE_S,
    downloads_root,
    prediction_row,
    request_dir,
    write_comparison,
    write_downloads,
)
from mammo.demo.errors import USER_ERRORS, error_message
from mammo.demo.loading import (
    WARMUP_ENV,
    LoadState,
    any_loading,
    build_pipeline,
    load_states,
    start_warmup,
    warmup_names,
)
from mammo.demo.pipelines import (
    PipelineChoice,
    availability,
    default_pipeline,
    menu_items,
    pipeline_choices,
    pipeline_names,
    pipelines_markdown,
    required_weights,
)
from mammo.demo.predict import Prediction, load_image, predict_file, run_pipeline
from mammo.demo.views import (
    DISPLAY_SIDE,
    TISSUE_CLASSES,
    details,
    map_views,
    overlay_view,
    patch_view,
    score_rows,
    summary,
    view_masks,
)

__all__ = [
    "COMPARE_COLUMNS", "DISPLAY_SIDE", "OVERLAY_SIDE", "REQUEST_MAX_AGE_S", "TISSUE_CLASSES",
    "USER_ERRORS", "WARMUP_ENV", "LoadState", "PipelineChoice", "Prediction", "any_loading",
    "availability", "build_pipeline", "compare_file", "comparison_rows", "default_pipeline",
    "details", "downloads_root", "error_message", "load_image", "load_states", "map_views",
    "menu_items", "overlay_view", "patch_view", "pipeline_choices", "pipeline_names",
    "pipelines_markdown", "predict_file", "prediction_row", "request_dir", "required_weights",
    "run_pipeline", "score_rows", "start_warmup", "summary", "view_masks", "warmup_names",
    "write_comparison", "write_downloads",
]
