"""Batch evaluation as a service: the job queue of `eval.jobs` behind named Gradio API endpoints.

    python -m eval serve --datasets-root /data --jobs-dir ~/eval-jobs --port 7861

Endpoints (callable with `gradio_client`): `/eval_submit_zip` (file, pipeline, limit) and
`/eval_submit_dataset` (kind, name, pipeline, split, limit) return a job id; `/eval_status`
(job_id) returns its state and progress; `/eval_result` (job_id) returns predictions.csv and
`/eval_bundle` (job_id) a zip of the whole output folder. The app (`app.py`) adds the same
endpoints to its own Blocks with `add_api`.

Every limit of `eval.limits.Limits` is an option of `python -m eval serve` (`LIMIT_OPTIONS`). A
refused call raises gr.Error with a message naming the limit; messages never hold server paths.
A client is counted by its address (`gr.Request`): behind a proxy every client shares one.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eval.jobs import DEFAULT_JOBS_DIR, EvalService
from eval.limits import MIB, Limits
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


def client_of(request: gr.Request | None) -> str:
    """The client a submission counts against: its address (behind a proxy, all share one)."""
    client = getattr(request, "client", None)
    return str(getattr(client, "host", "") or "")


def _api_call(fn: Callable[..., Any], service: EvalService) -> Callable[..., Any]:
    """Turn MammoInputError into gr.Error, whose message gradio always sends to the client, with
    server paths replaced (`EvalService.redact`). A `request` parameter gets the gr.Request."""
    import gradio as gr

    @functools.wraps(fn)  # keeps the parameter names for the API docs
    def wrapper(*args: Any) -> Any:
        try:
            return fn(*args)
        except MammoInputError as err:
            # A user's mistake: one log line, no traceback (gradio's queue prints one for any
            # gr.Error unless told not to), and the message for the client.
            logger.info("%s: %s", fn.__name__, err)
            raise gr.Error(service.redact(str(err)), print_exception=False) from None

    # gradio passes the request to a parameter whose type hint is gr.Request; the hints here are
    # strings (`from __future__ import annotations`) that name a lazily imported module
    wants_request = "request" in inspect.signature(fn).parameters
    wrapper.__annotations__ = {"request": gr.Request} if wants_request else {}
    return wrapper


def _register(service: EvalService) -> None:
    """Hidden components + hidden buttons: each click event is one named, file-aware endpoint."""
    import gradio as gr

    def submit_zip(file: str | None, pipeline: str, limit: float | None, request: gr.Request) -> str:
        if not file:
            raise MammoInputError("no zip file was sent")
        return service.submit_zip(file, _strip(pipeline), limit, client=client_of(request))

    def submit_dataset(kind: str, name: str, pipeline: str, split: str, limit: float | None,
                       request: gr.Request) -> str:
        return service.submit_dataset(_strip(kind), name or "", _strip(pipeline),
                                      _strip(split) or None, limit, client=client_of(request))

    def result(job_id: str) -> str:
        return str(service.result(job_id))

    def bundle(job_id: str) -> str:
        return str(service.bundle(job_id))

    with gr.Column(visible=False):
        file_in = gr.File(label="zip", type="filepath")
        pipeline, kind = gr.Textbox(label="pipeline"), gr.Textbox(label="kind")
        name, split = gr.Textbox(label="name"), gr.Textbox(label="split")
        limit = gr.Number(label="limit", precision=None)  # unrounded: 1.5 is refused, not made 2
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
            gr.Button(visible=False).click(_api_call(fn, service), inputs, output,
                                           api_name=api_name, concurrency_limit=None)


def _strip(text: Any) -> Any:
    """Surrounding blanks off a string; anything else as it came, for the service to refuse."""
    return text.strip() if isinstance(text, str) else text


def launch_options(service: EvalService) -> dict[str, Any]:
    """Keyword arguments `launch()` needs: serve files from jobs_dir, cap uploads at the limit."""
    return {"allowed_paths": [str(service.jobs_dir)],
            "max_file_size": int(service.limits.max_upload_mb * MIB)}


#: gradio copies every upload and every file it returns into its cache: delete those after a day
CACHE_CLEANUP = (3600, 86400)


def build_server(jobs_dir: str | Path, datasets_root: str | Path | None = None, *,
                 workers: int = 1, service: EvalService | None = None,
                 **limits: float) -> gr.Blocks:
    """A Blocks app with a one-line UI and the /eval_* endpoints; launch it with
    `**launch_options(service)`. Pass `service` to reuse one (else one is made from the args;
    `limits` are fields of `eval.limits.Limits`)."""
    import gradio as gr

    service = service or EvalService(jobs_dir, datasets_root, workers=workers, **limits)
    with gr.Blocks(title="mammo batch evaluation", delete_cache=CACHE_CLEANUP) as blocks:
        gr.Markdown("**mammo batch evaluation** - API only: `/eval_submit_zip`, "
                    "`/eval_submit_dataset`, `/eval_status`, `/eval_result`, `/eval_bundle` "
                    "(see *Use via API* below).")
        add_api(blocks, service)
    return blocks


# -- command line -----------------------------------------------------------------------------
#: `python -m eval serve` options for the fields of `Limits`: flag, type, help (default added).
LIMIT_OPTIONS = {
    "max_upload_mb": ("--max-upload-mb", float, "largest zip a client may upload, MB"),
    "max_unzipped_mb": ("--max-unzipped-mb", float, "largest total one zip may extract to, MB"),
    "max_zip_members": ("--max-zip-members", int, "most files in one zip"),
    "max_zip_ratio": ("--max-zip-ratio", float,
                      "most bytes extracted per byte of zip (a zip-bomb guard)"),
    "max_jobs_disk_mb": ("--max-jobs-disk-mb", float,
                         "disk budget of the jobs folder, MB: a submission that would pass it is refused"),
    "keep_days": ("--keep-days", float, "delete finished jobs after this many days; 0 keeps them"),
    "max_queued": ("--max-queued", int, "most jobs waiting to run, from all clients together"),
    "max_queued_per_client": ("--max-queued-per-client", int,
                              "most unfinished (queued or running) jobs of one client address"),
    "job_timeout_s": ("--job-timeout", float,
                      "seconds a job may run; then it is stopped and marked failed"),
}


def add_serve_args(parser: argparse.ArgumentParser) -> None:
    """Add the `serve` options to `parser` (eval/cli.py calls this for `python -m eval serve`)."""
    parser.add_argument("--datasets-root", type=Path, default=None,
                        help="folder whose sub-folders clients may evaluate by name (default: none)")
    parser.add_argument("--jobs-dir", type=Path, default=DEFAULT_JOBS_DIR,
                        help=f"where jobs and their results are kept (default: {DEFAULT_JOBS_DIR})")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=7861)
    parser.add_argument("--workers", type=int, default=1, help="jobs run at the same time")
    for name, (flag, kind, text) in LIMIT_OPTIONS.items():
        default = getattr(Limits, name)
        metavar = {"mb": "MB", "days": "DAYS", "timeout": "SECONDS"}.get(flag.rsplit("-", 1)[-1], "N")
        parser.add_argument(flag, dest=name, type=kind, default=default, metavar=metavar,
                            help=f"{text} (default: {default:g})")


def serve(args: argparse.Namespace) -> int:
    """Run the server until interrupted; returns the exit code (2 for bad options)."""
    if args.datasets_root is not None and not args.datasets_root.is_dir():
        print(f"error: --datasets-root {args.datasets_root} is not a folder", file=sys.stderr)
        return 2
    limits = {name: getattr(args, name) for name in LIMIT_OPTIONS}
    try:
        service = EvalService(args.jobs_dir, args.datasets_root, workers=args.workers, **limits)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logger.info("limits: %s", service.limits.describe())
    try:
        blocks = build_server(args.jobs_dir, service=service)
        blocks.launch(server_name=args.host, server_port=args.port, **launch_options(service))
    finally:
        service.close()  # stops a running job's process: it must not outlive the server
    return 0
