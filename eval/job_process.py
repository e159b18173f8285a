"""Run one job within a wall-clock limit: in a child process that can be killed, or in-thread.

A job run in a thread cannot be stopped: a pipeline stuck in native code would hold the worker
for ever. So `run_in_child` starts a fresh interpreter, `python -c "...child_main()"`, not a
`multiprocessing` process, whose spawn re-imports the parent's main script (app.py would build
a second service there). The parent sends the job as one JSON line on stdin; the child answers on
a pipe of its own, one JSON line per message: {"done": n, "total": m} after every image, then
{"ok": true} or {"error": "message"}. Its stdout and stderr, where libraries print, go to the
job's log file. It runs in a session of its own, so stopping it kills its whole process group,
and it exits when the parent dies. POSIX only (select on a pipe, process groups).

`run_in_thread` runs the job in the calling thread (tests, debugging); the limit is then
checked only after each image, so an image that never finishes is not stopped.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mammo.errors import MammoInputError

log = logging.getLogger(__name__)

DEFAULT_RUNNER = "eval.runner:evaluate"
STOP_GRACE_S = 5.0  # after SIGTERM, before SIGKILL
POLL_S = 0.5  # how often the watcher looks at the stop flag while the child is silent
_BOOT = "from eval.job_process import child_main; child_main()"
Progress = Callable[[int, int], None]


@dataclass
class JobRequest:
    """What the runner is called with: `runner(pipeline, dataset, out, split=, limit=, ...)`."""

    pipeline: str
    dataset: str  # "KIND:PATH"
    out: str
    split: str | None
    limit: int | None
    runner: str = DEFAULT_RUNNER  # "module:function", looked up when the job starts


class JobTimeout(Exception):
    """The job ran past its wall-clock limit."""


def timeout_message(timeout_s: float) -> str:
    hours = f" ({timeout_s / 3600:.3g} h)" if timeout_s >= 3600 else ""
    return f"stopped: the job ran longer than the server's limit of {timeout_s:g} s{hours} per job"


def describe_error(err: BaseException) -> str:
    """A user's mistake as its message; anything else with its type, as the worker logs it."""
    return str(err) if isinstance(err, MammoInputError) else f"{type(err).__name__}: {err}"


def run_request(request: JobRequest, progress: Progress) -> None:
    """Call the request's runner (in this process)."""
    module, _, name = request.runner.partition(":")
    runner = getattr(importlib.import_module(module), name)
    runner(request.pipeline, request.dataset, request.out, split=request.split,
           limit=request.limit, workers=1, progress=progress, quiet=True)


# -- in the worker thread -----------------------------------------------------------------------
def run_in_thread(request: JobRequest, *, timeout_s: float, progress: Progress) -> str | None:
    """Run the job here; None when it finished, else the error (checked after each image)."""
    deadline = time.monotonic() + timeout_s

    def report(done: int, total: int) -> None:
        progress(done, total)
        if time.monotonic() > deadline:
            raise JobTimeout(timeout_message(timeout_s))

    try:
        run_request(request, report)
    except JobTimeout as err:
        return str(err)
    except Exception as err:  # noqa: BLE001 - a worker outlives any job; the message is the record
        log.debug("job failed", exc_info=True)
        return describe_error(err)
    return None


# -- in a child process ------------------------------------------------------------------------
def run_in_child(request: JobRequest, *, timeout_s: float, log_path: Path, progress: Progress,
                 stop: threading.Event) -> str | None:
    """Run the job in a child process; None when it finished, else why not (its error, the time
    limit, `stop` set, or the process dying). The child is gone when this returns."""
    read_fd, write_fd = os.pipe()
    try:
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen([sys.executable, "-c", _BOOT], stdin=subprocess.PIPE,
                                    stdout=log_file, stderr=subprocess.STDOUT, pass_fds=(write_fd,),
                                    start_new_session=True, env=_child_env())
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)  # the child holds its copy: end of file on read_fd = the child exited
    try:
        try:
            proc.stdin.write(json.dumps({**asdict(request), "fd": write_fd}).encode() + b"\n")
            proc.stdin.close()
        except OSError:  # it died at once; the watcher reports how
            pass
        return _watch(proc, read_fd, timeout_s, progress, stop)
    finally:
        os.close(read_fd)
        _stop(proc)


def _watch(proc: subprocess.Popen, fd: int, timeout_s: float, progress: Progress,
           stop: threading.Event) -> str | None:
    """Relay the child's progress until its outcome, its end, the deadline or `stop`."""
    deadline, buffer = time.monotonic() + timeout_s, b""
    while True:
        if stop.is_set():
            return "the server stopped while the job was running; submit it again"
        left = deadline - time.monotonic()
        if left <= 0:
            return timeout_message(timeout_s)
        if not select.select([fd], [], [], min(left, POLL_S))[0]:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        *lines, buffer = (buffer + chunk).split(b"\n")
        for message in map(_parse, lines):
            if "done" in message:
                progress(int(message["done"]), int(message["total"]))
            elif "ok" in message or "error" in message:
                return message.get("error")
    try:
        code = proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        code = None
    return (f"the evaluation process ended without a result (exit code {code}; a negative code "
            "is the signal that killed it, e.g. -9 when memory ran out)")


def _parse(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}


def _stop(proc: subprocess.Popen) -> None:
    """End the child and its process group: it may finish by itself, then SIGTERM, then SIGKILL."""
    for sig, wait_s in ((None, 1.0), (signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, None)):
        if proc.poll() is not None:
            return
        if sig is not None:
            try:
                os.killpg(proc.pid, sig)  # its own session: the pid is the group id
            except ProcessLookupError:
                return
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue


def _child_env() -> dict[str, str]:
    """The parent's environment, with its import path, so the child imports the same modules."""
    paths = [os.path.abspath(p) if p else os.getcwd() for p in sys.path]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


def child_main() -> None:
    """The child: read the request from stdin, run it, report on the pipe named in it."""
    request = json.loads(sys.stdin.readline())
    channel = os.fdopen(request.pop("fd"), "w", buffering=1, encoding="utf-8")
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()

    def send(**message: Any) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    try:
        run_request(JobRequest(**request), lambda done, total: send(done=done, total=total))
    except Exception as err:  # noqa: BLE001 - the parent gets every failure as a message
        traceback.print_exc()  # into job.log, for the operator
        send(error=describe_error(err))
    else:
        send(ok=True)


def _exit_with_parent(parent: int) -> None:
    """A child whose server died stops (it would otherwise run on, unseen, to the end)."""
    while os.getppid() == parent:
        time.sleep(2.0)
    os._exit(1)
