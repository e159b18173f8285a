"""Batch evaluation jobs: a queue of `eval.runner.evaluate` calls, one job at a time per worker.

A job runs one pipeline on one dataset: an uploaded zip, or a folder under the operator's
`datasets_root`. Each job lives in `jobs_dir/<id>/`: `job.json` (its state, rewritten atomically
on every change), `input/` (the extracted upload), `out/` (the runner's predictions.csv, masks/,
metrics.json, report.html), `job.log` (what the job's process printed) and `eval_<id>.zip` (the
bundle, made on first request).

Each job runs in a child process (`eval.job_process`) that is killed when it passes the time
limit, so a hung job fails and the worker goes on. Submissions are refused with a message that
names the limit when the queue, the client's share of it or the jobs folder's disk budget is
full (`eval.limits`; uploads are checked by `eval.zips` before anything is extracted). Finished
jobs are deleted after `keep_days`. Messages for clients never hold server paths (`redact`).

Restart policy: a job that `job.json` shows "queued" or "running" when the service starts is
marked "failed" ("server restarted ...") instead of being re-queued, because a job that brought
the server down (out of memory, a killed process) would otherwise bring it down on every start.
The user resubmits. `eval.server` puts this behind named Gradio API endpoints.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import shutil
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eval.job_process import (DEFAULT_RUNNER, JobRequest, describe_error, run_in_child,
                               run_in_thread)
from eval.limits import MIB, Limits, Redactor, check_limit, check_pipeline, check_text, disk_usage, mb
from eval.zips import ZipUpload
from mammo.datasets import LOADERS
from mammo.errors import MammoInputError

log = logging.getLogger(__name__)

DATASET_KINDS = tuple(dict.fromkeys((*LOADERS, "folder", "csv")))  # LOADERS may hold both
SPLITS = ("train", "val", "test")
DEFAULT_JOBS_DIR = Path.home() / ".cache" / "mammo" / "eval-jobs"
_ID_RE = re.compile(r"^[0-9a-f]{12}$")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
UNFINISHED = ("queued", "running")


@dataclass
class Job:
    """One evaluation job, as stored in `job.json`."""

    id: str
    pipeline: str
    dataset: str  # what the user asked for: "upload:cases.zip" or "KIND:NAME"
    spec: str = ""  # "KIND:PATH" for the runner; holds server paths, so status never shows it
    split: str | None = None
    limit: int | None = None
    status: str = "queued"  # queued / running / done / failed
    done: int = 0
    total: int | None = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None


class EvalService:
    """A queue of evaluation jobs run by `workers` daemon threads, one job per thread at a time.

    Args:
        jobs_dir: where job folders live; existing jobs are loaded (see the restart policy above).
        datasets_root: folder whose sub-folders `submit_dataset` may name; None disables that.
        max_upload_mb, max_unzipped_mb: see `eval.limits.Limits`, as the other `limits`.
        workers: jobs run at the same time.
        isolate: run each job in a child process, stopped at `job_timeout_s`; False runs it in
            the worker thread, where the limit is checked only between images (tests).
        runner: "module:function" called like `eval.runner.evaluate`, looked up per job.
        limits: any other field of `eval.limits.Limits` (queue, disk, time), by keyword.
    """

    def __init__(self, jobs_dir: str | Path, datasets_root: str | Path | None = None,
                 max_upload_mb: float = Limits.max_upload_mb,
                 max_unzipped_mb: float = Limits.max_unzipped_mb, workers: int = 1, *,
                 isolate: bool = True, runner: str = DEFAULT_RUNNER, **limits: float) -> None:
        if workers < 1:
            raise ValueError("workers must be positive")
        self.limits = Limits(max_upload_mb=max_upload_mb, max_unzipped_mb=max_unzipped_mb,
                             **limits)
        self.jobs_dir = Path(jobs_dir).expanduser().resolve()
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.datasets_root = None if datasets_root is None else Path(datasets_root).resolve()
        self.isolate, self.runner = isolate, runner
        self.redact = Redactor(self.jobs_dir, self.datasets_root)  # for every message to a client
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._pending: list[str] = []  # queued ids in queue order, for queue positions
        self._clients: dict[str, str] = {}  # unfinished job id -> its client, for the per-client limit
        self._reserved: list[tuple[str, int]] = []  # (client, bytes) of submissions being prepared
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stop = threading.Event()
        self._load_jobs()
        self._clean_old()
        self._threads = [threading.Thread(target=self._work, name=f"eval-worker-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    # -- submitting ---------------------------------------------------------------------------
    def submit_zip(self, zip_path: str | Path, pipeline: str, limit: int | None = None, *,
                   client: str = "") -> str:
        """Queue an evaluation of the images in a zip (top level or one folder; optional masks/,
        labels.csv); returns the job id. `client` names whose job it is, for the per-client
        limit. Raises MammoInputError before queuing anything."""
        if not isinstance(zip_path, (str, os.PathLike)):
            raise MammoInputError(f"the zip must be a file path, got {type(zip_path).__name__}")
        pipeline, limit = check_pipeline(pipeline), check_limit(limit)
        zip_path = Path(zip_path)
        if not zip_path.is_file():
            raise MammoInputError(f"upload {zip_path.name!r} not found")
        size = zip_path.stat().st_size
        if size > self.limits.max_upload_mb * MIB:
            raise MammoInputError(f"upload is {mb(size)}; the limit is {self.limits.max_upload_mb:g} MB")
        job = Job(id=uuid.uuid4().hex[:12], pipeline=pipeline, dataset=f"upload:{zip_path.name}",
                  limit=limit)
        job_dir = self._job_dir(job.id)
        with ZipUpload(zip_path, self.limits) as upload, self._admit(client, upload.declared):
            try:
                root = upload.extract(job_dir / "input")
            except BaseException:
                shutil.rmtree(job_dir, ignore_errors=True)  # a refused upload leaves nothing behind
                raise
            job.spec = f"folder:{root}"
            return self._enqueue(job, client)

    def submit_dataset(self, kind: str, name: str, pipeline: str, split: str | None = None,
                       limit: int | None = None, *, client: str = "") -> str:
        """Queue an evaluation of `datasets_root/name` read as `kind`; returns the job id."""
        kind = check_text(kind, "dataset kind")
        if kind not in DATASET_KINDS:
            raise MammoInputError(f"unknown dataset kind {kind!r}; valid: {', '.join(DATASET_KINDS)}")
        pipeline, limit = check_pipeline(pipeline), check_limit(limit)
        split = check_text(split, "split", optional=True)
        if split is not None and split not in SPLITS:
            # a split may also be a CSV path for the runner; refused so it cannot name server files
            raise MammoInputError(f"split must be one of {', '.join(SPLITS)} or empty, got {split!r}")
        path = self.resolve_dataset(name)
        job = Job(id=uuid.uuid4().hex[:12], pipeline=pipeline, dataset=f"{kind}:{name}",
                  spec=f"{kind}:{path}", split=split, limit=limit)
        with self._admit(client, 0):
            return self._enqueue(job, client)

    def resolve_dataset(self, name: str) -> Path:
        """`datasets_root/name`, resolved; MammoInputError unless it exists inside the root."""
        if self.datasets_root is None:
            raise MammoInputError("this server has no datasets folder (start it with "
                                  "--datasets-root DIR); upload a zip instead")
        if not check_text(name, "dataset name"):
            raise MammoInputError("dataset name is empty")
        if "\\" in name:
            raise MammoInputError(f"dataset name {name!r} contains a backslash; use / between folders")
        if name.startswith("/") or _DRIVE_RE.match(name):
            raise MammoInputError(f"dataset name {name!r} is absolute; give a folder "
                                  "relative to the server's datasets folder")
        if ".." in name:
            raise MammoInputError(f"dataset name {name!r} contains '..'")
        path = (self.datasets_root / name).resolve()  # follows symlinks, so links out are caught
        if not path.is_relative_to(self.datasets_root):
            raise MammoInputError(f"dataset {name!r} resolves outside the server's datasets folder")
        if not path.exists():
            # never list the folder: its names are the operator's, not every client's to see
            raise MammoInputError(f"no dataset {name!r} in the server's datasets folder; name a "
                                  "folder relative to it (ask the server's operator which exist)")
        return path

    # -- reading ------------------------------------------------------------------------------
    def status(self, job_id: str) -> dict[str, Any]:
        """The job's public state: progress, rate, error, ISO times, queue position (1 = next).
        Server paths never show: `spec` is left out and the error is redacted."""
        with self._lock:
            job = self._get(job_id)
            position = self._pending.index(job.id) + 1 if job.id in self._pending else None
            info = {key: value for key, value in asdict(job).items() if key != "spec"}
        end = job.finished or time.time()
        elapsed = end - job.started if job.started else 0.0
        fraction = job.done / job.total if job.total else (1.0 if job.status == "done" else 0.0)
        info.update(progress=round(fraction, 4), queue_position=position,
                    images_per_s=round(job.done / elapsed, 3) if job.done and elapsed > 0 else None,
                    created=_iso(job.created), started=_iso(job.started),
                    finished=_iso(job.finished), error=job.error and self.redact(job.error))
        return info

    def result(self, job_id: str) -> Path:
        """Path of the finished job's predictions.csv."""
        path = self._finished_out(job_id) / "predictions.csv"
        if not path.is_file():
            raise MammoInputError(f"job {job_id} finished without a predictions.csv")
        return path

    def bundle(self, job_id: str) -> Path:
        """Path of a zip of the finished job's output folder, made on first request."""
        out = self._finished_out(job_id)
        target = out.parent / f"eval_{out.parent.name}.zip"
        if not target.is_file():
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
                for path in sorted(out.rglob("*")):
                    if path.is_file():
                        zf.write(path, path.relative_to(out).as_posix())
            os.replace(tmp, target)  # two concurrent requests never see half a zip
        return target

    def close(self, timeout: float = 10.0) -> None:
        """Stop the workers: queued jobs stay queued in job.json (failed at the next start); a
        job running in a child process is stopped and marked failed, one in a thread finishes."""
        self._stop.set()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout)

    # -- internals ----------------------------------------------------------------------------
    def _job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def _get(self, job_id: str) -> Job:
        """The job called `job_id` (caller holds the lock); ids are checked so never a path."""
        if not isinstance(job_id, str) or not _ID_RE.fullmatch(job_id):
            raise MammoInputError(f"invalid job id {job_id!r}: expected 12 hex digits")
        job = self._jobs.get(job_id)
        if job is None:
            days = self.limits.keep_days
            kept = f" (finished jobs are kept {days:g} days)" if days else ""
            raise MammoInputError(f"no job {job_id!r} on this server{kept}")
        return job

    def _finished_out(self, job_id: str) -> Path:
        """The done job's out/ folder; MammoInputError while it is queued, running or failed."""
        with self._lock:
            job = self._get(job_id)
        if job.status != "done":
            reason = f": {self.redact(job.error)}" if job.error else ""
            raise MammoInputError(f"job {job.id} is {job.status}{reason}; "
                                  "results are ready when it is done")
        return self._job_dir(job.id) / "out"

    @contextmanager
    def _admit(self, client: str, nbytes: int) -> Iterator[None]:
        """Hold a place in the queue and `nbytes` of disk while a submission is prepared, so
        concurrent submissions cannot all pass; MammoInputError when a limit is reached."""
        self._clean_old()
        used = disk_usage(self.jobs_dir)  # outside the lock: the walk takes a while
        token = (check_text(client, "client"), nbytes)
        with self._lock:
            self._check_queue(client)
            budget = self.limits.max_jobs_disk_mb * MIB
            reserved = sum(size for _, size in self._reserved)
            if used + reserved + nbytes > budget or used >= budget:
                need = f"; this upload needs {mb(nbytes)}" if nbytes else ""
                raise MammoInputError(f"the server's jobs folder is full ({mb(used + reserved)} of "
                                      f"its {self.limits.max_jobs_disk_mb:g} MB{need}); "
                                      "try again when old jobs have been deleted")
            self._reserved.append(token)
        try:
            yield
        finally:
            with self._lock:
                self._reserved.remove(token)

    def _check_queue(self, client: str) -> None:
        """The queue limits, in all and per client (caller holds the lock)."""
        waiting = len(self._pending) + len(self._reserved)
        if waiting >= self.limits.max_queued:
            raise MammoInputError(f"the server's queue is full: {waiting} jobs are waiting, the "
                                  f"limit is {self.limits.max_queued}; try again later")
        mine = sum(who == client for who in self._clients.values())
        mine += sum(who == client for who, _ in self._reserved)
        if mine >= self.limits.max_queued_per_client:
            raise MammoInputError(f"you have {mine} unfinished jobs on this server; the limit per "
                                  f"client is {self.limits.max_queued_per_client}: submit more when "
                                  "one has finished")

    def _enqueue(self, job: Job, client: str) -> str:
        with self._lock:
            self._jobs[job.id] = job
            self._pending.append(job.id)
            self._clients[job.id] = client
            self._save(job)
        self._queue.put(job.id)
        log.info("queued job %s: %s on %s", job.id, job.pipeline, job.dataset)
        return job.id

    def _update(self, job_id: str, **changes: Any) -> None:
        with self._lock:
            job = self._jobs[job_id]
            for key, value in changes.items():
                setattr(job, key, value)
            self._save(job)

    def _save(self, job: Job) -> None:
        """Write job.json atomically (temp file + os.replace), so a crash never leaves half."""
        job_dir = self._job_dir(job.id)
        job_dir.mkdir(parents=True, exist_ok=True)
        tmp = job_dir / f".job.json.{uuid.uuid4().hex[:8]}"
        tmp.write_text(json.dumps(asdict(job), indent=1), encoding="utf-8")
        os.replace(tmp, job_dir / "job.json")

    def _load_jobs(self) -> None:
        known = {f.name for f in fields(Job)}
        for path in sorted(self.jobs_dir.glob("*/job.json")):
            if not _ID_RE.fullmatch(path.parent.name):
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                job = Job(**{k: v for k, v in data.items() if k in known})
            except (OSError, ValueError, TypeError) as err:
                log.warning("skipping unreadable %s: %s", path, err)
                continue
            if job.status in UNFINISHED:
                job.error = f"server restarted while the job was {job.status}; submit it again"
                job.status, job.finished = "failed", time.time()
                self._save(job)
            self._jobs[job.id] = job

    def _clean_old(self) -> None:
        """Delete the folders of jobs finished more than `keep_days` ago (0: keep every job)."""
        if not self.limits.keep_days:
            return
        cutoff = time.time() - self.limits.keep_days * 86400
        with self._lock:
            old = [job.id for job in self._jobs.values()
                   if job.status not in UNFINISHED and (job.finished or job.created) < cutoff]
            for job_id in old:
                del self._jobs[job_id]
        for job_id in old:
            shutil.rmtree(self._job_dir(job_id), ignore_errors=True)
            log.info("deleted job %s: finished more than %g days ago", job_id, self.limits.keep_days)

    def _work(self) -> None:
        while (job_id := self._queue.get()) is not None and not self._stop.is_set():
            self._run(job_id)

    def _run(self, job_id: str) -> None:
        with self._lock:
            self._pending.remove(job_id)
            job = self._jobs[job_id]
        self._update(job_id, status="running", started=time.time())
        out = self._job_dir(job_id) / "out"
        request = JobRequest(job.pipeline, job.spec, str(out), job.split, job.limit, self.runner)

        def progress(done: int, total: int) -> None:
            self._update(job_id, done=done, total=total)

        timeout_s = self.limits.job_timeout_s
        try:
            if self.isolate:
                error = run_in_child(request, timeout_s=timeout_s, progress=progress,
                                     stop=self._stop, log_path=self._job_dir(job_id) / "job.log")
            else:
                error = run_in_thread(request, timeout_s=timeout_s, progress=progress)
        except Exception as err:  # noqa: BLE001 - e.g. no process could start; the worker goes on
            error = describe_error(err)
        if error is None and not (out / "predictions.csv").is_file():
            error = "the evaluation wrote no predictions.csv"
        if error is None:
            self._update(job_id, status="done", finished=time.time())
        else:
            log.warning("job %s failed: %s", job_id, error)
            self._update(job_id, status="failed", error=error, finished=time.time())
        with self._lock:
            self._clients.pop(job_id, None)


# -- helpers ----------------------------------------------------------------------------------
def _iso(stamp: float | None) -> str | None:
    return None if stamp is None else datetime.fromtimestamp(stamp, UTC).isoformat(
        timespec="seconds")
