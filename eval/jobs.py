"""Batch evaluation jobs: a queue of `eval.runner.evaluate` calls, one job at a time per worker.

A job runs one pipeline on one dataset: an uploaded zip, or a folder under the operator's
`datasets_root`. Each job lives in `jobs_dir/<id>/`: `job.json` (its state, rewritten atomically
on every change), `input/` (the extracted upload), `out/` (the runner's predictions.csv, masks/,
metrics.json, report.html) and `eval_<id>.zip` (the bundle, made on first request).

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
import zlib
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mammo.datasets import LOADERS
from mammo.errors import MammoInputError
from mammo.pipelines.registry import check_name

log = logging.getLogger(__name__)

MIB = 1024 * 1024  # gradio's max_file_size counts MB this way too
DATASET_KINDS = tuple(dict.fromkeys((*LOADERS, "folder", "csv")))  # LOADERS may hold both
SPLITS = ("train", "val", "test")
DEFAULT_JOBS_DIR = Path.home() / ".cache" / "mammo" / "eval-jobs"
_ID_RE = re.compile(r"^[0-9a-f]{12}$")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_JUNK = ("__MACOSX", ".DS_Store")  # macOS zip debris that would break the folder layout


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
        max_upload_mb: largest zip `submit_zip` accepts.
        max_unzipped_mb: largest total an upload may extract to (zip-bomb guard).
        workers: jobs run at the same time.
    """

    def __init__(self, jobs_dir: str | Path, datasets_root: str | Path | None = None,
                 max_upload_mb: float = 500, max_unzipped_mb: float = 4000,
                 workers: int = 1) -> None:
        if workers < 1 or max_upload_mb <= 0 or max_unzipped_mb <= 0:
            raise ValueError("workers, max_upload_mb and max_unzipped_mb must be positive")
        self.jobs_dir = Path(jobs_dir).expanduser().resolve()
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.datasets_root = None if datasets_root is None else Path(datasets_root).resolve()
        self.max_upload_mb = max_upload_mb
        self.max_unzipped_mb = max_unzipped_mb
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._pending: list[str] = []  # queued ids in queue order, for queue positions
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._load_jobs()
        self._threads = [threading.Thread(target=self._work, name=f"eval-worker-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    # -- submitting ---------------------------------------------------------------------------
    def submit_zip(self, zip_path: str | Path, pipeline: str, limit: int | None = None) -> str:
        """Queue an evaluation of the images in a zip (top level or one folder; optional masks/,
        labels.csv); returns the job id. Raises MammoInputError before queuing anything."""
        _check_pipeline(pipeline)
        limit = _check_limit(limit)
        zip_path = Path(zip_path)
        if not zip_path.is_file():
            raise MammoInputError(f"upload {zip_path.name!r} not found")
        size = zip_path.stat().st_size
        if size > self.max_upload_mb * MIB:
            raise MammoInputError(f"upload is {_mb(size)}; the limit is {self.max_upload_mb:g} MB")
        if not zipfile.is_zipfile(zip_path):
            raise MammoInputError(f"upload {zip_path.name!r} is not a zip file")
        job = Job(id=uuid.uuid4().hex[:12], pipeline=pipeline, dataset=f"upload:{zip_path.name}",
                  limit=limit)
        job_dir = self._job_dir(job.id)
        try:
            root = extract_zip(zip_path, job_dir / "input", self.max_unzipped_mb)
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)  # a refused upload leaves nothing behind
            raise
        job.spec = f"folder:{root}"
        return self._enqueue(job)

    def submit_dataset(self, kind: str, name: str, pipeline: str, split: str | None = None,
                       limit: int | None = None) -> str:
        """Queue an evaluation of `datasets_root/name` read as `kind`; returns the job id."""
        if kind not in DATASET_KINDS:
            raise MammoInputError(f"unknown dataset kind {kind!r}; valid: {', '.join(DATASET_KINDS)}")
        _check_pipeline(pipeline)
        limit = _check_limit(limit)
        if split is not None and split not in SPLITS:
            # a split may also be a CSV path for the runner; refused so it cannot name server files
            raise MammoInputError(f"split must be one of {', '.join(SPLITS)} or empty, got {split!r}")
        path = self.resolve_dataset(name)
        job = Job(id=uuid.uuid4().hex[:12], pipeline=pipeline, dataset=f"{kind}:{name}",
                  spec=f"{kind}:{path}", split=split, limit=limit)
        return self._enqueue(job)

    def resolve_dataset(self, name: str) -> Path:
        """`datasets_root/name`, resolved; MammoInputError unless it exists inside the root."""
        if self.datasets_root is None:
            raise MammoInputError("this server has no datasets folder (start it with "
                                  "--datasets-root DIR); upload a zip instead")
        if not name or "\x00" in name:
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
            names = sorted(p.name for p in self.datasets_root.iterdir() if not p.name.startswith("."))
            raise MammoInputError(f"no dataset {name!r} in the server's datasets folder; "
                                  f"available: {', '.join(names[:30]) or 'none'}")
        return path

    # -- reading ------------------------------------------------------------------------------
    def status(self, job_id: str) -> dict[str, Any]:
        """The job's public state: progress, rate, error, ISO times, queue position (1 = next)."""
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
                    finished=_iso(job.finished))
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
        """Stop the workers after their current jobs (queued jobs stay queued in job.json)."""
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
            raise MammoInputError(f"no job {job_id!r} on this server")
        return job

    def _finished_out(self, job_id: str) -> Path:
        """The done job's out/ folder; MammoInputError while it is queued, running or failed."""
        with self._lock:
            job = self._get(job_id)
        if job.status != "done":
            reason = f": {job.error}" if job.error else ""
            raise MammoInputError(f"job {job.id} is {job.status}{reason}; "
                                  "results are ready when it is done")
        return self._job_dir(job.id) / "out"

    def _enqueue(self, job: Job) -> str:
        with self._lock:
            self._jobs[job.id] = job
            self._pending.append(job.id)
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
            if job.status in ("queued", "running"):
                job.error = f"server restarted while the job was {job.status}; submit it again"
                job.status, job.finished = "failed", time.time()
                self._save(job)
            self._jobs[job.id] = job

    def _work(self) -> None:
        while (job_id := self._queue.get()) is not None:
            self._run(job_id)

    def _run(self, job_id: str) -> None:
        from eval.runner import evaluate  # looked up per job so tests can monkeypatch it

        with self._lock:
            self._pending.remove(job_id)
            job = self._jobs[job_id]
        self._update(job_id, status="running", started=time.time())
        out = self._job_dir(job_id) / "out"
        try:
            evaluate(job.pipeline, job.spec, out, split=job.split, limit=job.limit, workers=1,
                     progress=lambda done, total: self._update(job_id, done=done, total=total),
                     quiet=True)
            if not (out / "predictions.csv").is_file():
                raise RuntimeError("the evaluation wrote no predictions.csv")
        except Exception as err:  # noqa: BLE001 - a worker outlives any job; the message is the record
            log.warning("job %s failed: %s", job_id, err)
            message = str(err) if isinstance(err, MammoInputError) else f"{type(err).__name__}: {err}"
            self._update(job_id, status="failed", error=message, finished=time.time())
        else:
            self._update(job_id, status="done", finished=time.time())


# -- helpers ----------------------------------------------------------------------------------
def _check_pipeline(pipeline: str) -> None:
    try:
        check_name(pipeline)
    except KeyError as err:
        raise MammoInputError(err.args[0]) from err


def _check_limit(limit: int | None) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise MammoInputError(f"limit must be a positive whole number of images, got {limit!r}")
    return limit


def _mb(nbytes: float) -> str:
    return f"{nbytes / MIB:.3g} MB"


def _iso(stamp: float | None) -> str | None:
    return None if stamp is None else datetime.fromtimestamp(stamp, UTC).isoformat(
        timespec="seconds")


def _member_parts(name: str) -> list[str]:
    """Path components of a zip member; MammoInputError when it could land outside the folder."""
    if name.startswith(("/", "\\")) or _DRIVE_RE.match(name):
        raise MammoInputError(f"zip member {name!r} has an absolute path; nothing was extracted")
    parts = [part for part in re.split(r"[/\\]", name) if part not in ("", ".")]
    if ".." in parts:
        raise MammoInputError(f"zip member {name!r} points outside the zip (..); nothing was extracted")
    return parts


def extract_zip(zip_path: Path, dest: Path, max_unzipped_mb: float) -> Path:
    """Extract `zip_path` into `dest` safely; return the dataset folder (dest, or its only folder).

    Every member name is checked before anything is written. The declared sizes bound what is
    written: Python's zipfile never yields more than a member's declared size (a lying member
    fails its CRC check, which is refused here), so a zip bomb stops at the size check.
    """
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = [(info, _member_parts(info.filename)) for info in zf.infolist()]
            members = [(info, parts) for info, parts in members if parts and not info.is_dir()
                       and parts[0] not in _JUNK and not parts[-1].startswith("._")
                       and parts[-1] not in _JUNK]
            declared = sum(info.file_size for info, _ in members)
            if declared > max_unzipped_mb * MIB:
                raise MammoInputError(f"zip unpacks to {_mb(declared)}; the limit is "
                                      f"{max_unzipped_mb:g} MB")
            for info, parts in members:
                target = dest.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, MIB)
    except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as err:
        raise MammoInputError(f"cannot read zip {zip_path.name!r}: {err}") from err
    if not members:
        raise MammoInputError(f"zip {zip_path.name!r} holds no files")
    entries = list(dest.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest
