"""Batch evaluation as a service: the job queue of `eval.jobs` behind named Gradio API endpoints.

    python -m eval serve --datasets-root /data --jobs-dir ~/eval-jobs --port 7861

Endpoints (callable with `gradio_client`): `/eval_submit_zip` (file, pipeline, limit) and
`/eval_submit_dataset` (kind, name, pipeline, split, limit) return a job id; `/eval_status`
(job_id) returns its state and progress; `/eval_result` (job_id) returns predictions.csv and
`/eval_bundle` (job_id) a zip of the whole output folder. The app (`app.py`) adds the same
endpoints to its own Blocks with `add_api`.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eval.jobs import DEFAULT_JOBS_DIR, MIB, EvalService
from mammo.errors import MammoInputError

if TYPE_CHECKING:  # gradio is imported lazily: the CLI and the service itself do not need it
    import gradio as gr

logger = logging.getLogger(__name__)


# -- Gradio -----------------------------------------------------------------------------------
def add_api(blocks: gr.Blocks, service: EvalService) -> None:
    """Register the /eval_* API endpoints in `blocks` (works inside or outside its `with`)."""
    from gradio.context import Context

    if Context.root_block is blocks:
        _register(service)
    else:
        with blocks:
            _register(service)


def _api_call(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn MammoInputError into gr.Error, whose message gradio always sends to the client."""
    import gradio as gr

    @functools.wraps(fn)  # keeps the parameter names for the API docs
    def wrapper(*args: Any) -> Any:
        try:
            return fn(*args)
        except MammoInputError as err:
            # A user's mistake: one log line, no traceback (gradio's queue prints one for any
            # gr.Error unless told not to), and the message for the client.
            logger.info("%s: %s", fn.__name__, err)
            raise gr.Error(str(err), print_exception=False) from None

    return wrapper


def _api_limit(limit: float | None) -> int | None:
    return int(limit) if limit else None  # empty or 0 from a client means "all images"


def _register(service: EvalService) -> None:
    """Hidden components + hidden buttons: each click event is one named, file-aware endpoint."""
    import gradio as gr

    def submit_zip(file: str | None, pipeline: str, limit: float | None) -> str:
        if not file:
            raise MammoInputError("no zip file was sent")
        return service.submit_zip(file, (pipeline or "").strip(), _api_limit(limit))

    def submit_dataset(kind: str, name: str, pipeline: str, split: str, limit: float | None) -> str:
        return service.submit_dataset((kind or "").strip(), name or "", (pipeline or "").strip(),
                                      (split or "").strip() or None, _api_limit(limit))

    def result(job_id: str) -> str:
        return str(service.result(job_id))

    def bundle(job_id: str) -> str:
        return str(service.bundle(job_id))

    with gr.Column(visible=False):
        file_in = gr.File(label="zip", type="filepath")
        pipeline, kind = gr.Textbox(label="pipeline"), gr.Textbox(label="kind")
        name, split = gr.Textbox(label="name"), gr.Textbox(label="split")
        limit = gr.Number(label="limit", precision=0)
        job_id, status_out = gr.Textbox(label="job_id"), gr.JSON(label="status")
        file_out = gr.File(label="file")
        endpoints = [
            (submit_zip, [file_in, pipeline, limit], job_id, "eval_submit_zip"),
            (submit_dataset, [kind, name, pipeline, split, limit], job_id, "eval_submit_dataset"),
            (service.status, [job_id], status_out, "eval_status"),
            (result, [job_id], file_out, "eval_result"),
            (bundle, [job_id], file_out, "eval_bundle"),
        ]
        for fn, inputs, output, api_name in endpoints:
            gr.Button(visible=False).click(_api_call(fn), inputs, output, api_name=api_name,
                                           concurrency_limit=None)


def launch_options(service: EvalService) -> dict[str, Any]:
    """Keyword arguments `launch()` needs: serve files from jobs_dir, cap uploads at the limit."""
    return {"allowed_paths": [str(service.jobs_dir)],
            "max_file_size": int(service.max_upload_mb * MIB)}


def build_server(jobs_dir: str | Path, datasets_root: str | Path | None = None, *,
                 max_upload_mb: float = 500, max_unzipped_mb: float = 4000, workers: int = 1,
                 service: EvalService | None = None) -> gr.Blocks:
    """A Blocks app with a one-line UI and the /eval_* endpoints; launch it with
    `**launch_options(service)`. Pass `service` to reuse one (else one is made from the args)."""
    import gradio as gr

    service = service or EvalService(jobs_dir, datasets_root, max_upload_mb, max_unzipped_mb,
                                     workers)
    with gr.Blocks(title="mammo batch evaluation") as blocks:
        gr.Markdown("**mammo batch evaluation** - API only: `/eval_submit_zip`, "
                    "`/eval_submit_dataset`, `/eval_status`, `/eval_result`, `/eval_bundle` "
                    "(see *Use via API* below).")
        add_api(blocks, service)
    return blocks


# -- command line -----------------------------------------------------------------------------
def add_serve_args(parser: argparse.ArgumentParser) -> None:
    """Add the `serve` options to `parser` (eval/cli.py calls this for `python -m eval serve`)."""
    parser.add_argument("--datasets-root", type=Path, default=None,
                        help="folder whose sub-folders clients may evaluate by name (default: none)")
    parser.add_argument("--jobs-dir", type=Path, default=DEFAULT_JOBS_DIR,
                        help=f"where jobs and their results are kept (default: {DEFAULT_JOBS_DIR})")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=7861)
    parser.add_argument("--max-upload-mb", type=float, default=500)
    parser.add_argument("--max-unzipped-mb", type=float, default=4000)
    parser.add_argument("--workers", type=int, default=1, help="jobs run at the same time")


def serve(args: argparse.Namespace) -> int:
    """Run the server until interrupted; returns the exit code (2 for bad options)."""
    if args.datasets_root is not None and not args.datasets_root.is_dir():
        print(f"error: --datasets-root {args.datasets_root} is not a folder", file=sys.stderr)
        return 2
    try:
        service = EvalService(args.jobs_dir, args.datasets_root, args.max_upload_mb,
                              args.max_unzipped_mb, args.workers)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    blocks = build_server(args.jobs_dir, service=service)
    blocks.launch(server_name=args.host, server_port=args.port, **launch_options(service))
    return 0

