"""What the evaluation service accepts: its limits (with their defaults), checks of the values a
client sends, and the removal of server paths from every message a client sees.

The limits keep one client from taking the whole server: the queue (jobs waiting in all, and
unfinished jobs per client), the disk (bytes per zip, members per zip, compression ratio, and a
budget for the whole jobs folder, with finished jobs deleted after `keep_days`) and the time (a
wall-clock limit per job). `eval.server` turns each field into a `python -m eval serve` option.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from mammo.errors import MammoInputError
from mammo.pipelines.registry import check_name

MIB = 1024 * 1024  # gradio's max_file_size counts MB this way too
MAX_LIMIT = 1_000_000  # `limit`: more images than any dataset here holds
MAX_TEXT = 1000  # characters in a pipeline, kind, dataset name or split


@dataclass(frozen=True)
class Limits:
    """The service's limits; every field is a keyword of `EvalService` and a `serve` option."""

    max_upload_mb: float = 500  # largest zip file accepted
    max_unzipped_mb: float = 4000  # largest total one zip may extract to
    max_zip_members: int = 10_000  # most files (and folders) in one zip
    max_zip_ratio: float = 200  # most bytes extracted per byte of zip: zip bombs reach 1000+
    max_jobs_disk_mb: float = 50_000  # the jobs folder (uploads, outputs, bundles) in all
    keep_days: float = 7  # finished jobs are deleted after this many days; 0 keeps them
    max_queued: int = 50  # jobs waiting to run, from all clients together
    max_queued_per_client: int = 5  # unfinished (queued or running) jobs of one client
    job_timeout_s: float = 7200  # wall-clock seconds one job may run before it is stopped

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            bad = isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)
            if bad or value < 0 or (value == 0 and item.name != "keep_days"):
                raise ValueError(f"{item.name} must be a positive number, got {value!r}")

    def describe(self) -> str:
        """One line with every limit, for the server's log."""
        return ", ".join(f"{item.name}={getattr(self, item.name):g}" for item in fields(self))


# -- checks of what a client sends ------------------------------------------------------------
def check_text(value: Any, what: str, *, optional: bool = False) -> str | None:
    """`value` if it is a string of at most MAX_TEXT characters (or None, when `optional`)."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise MammoInputError(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT or "\x00" in value:
        raise MammoInputError(f"{what} is longer than {MAX_TEXT} characters or holds a NUL")
    return value


def check_pipeline(pipeline: Any) -> str:
    """A registered pipeline name (see `mammo pipelines`)."""
    pipeline = check_text(pipeline, "pipeline")
    try:
        check_name(pipeline)
    except KeyError as err:
        raise MammoInputError(err.args[0]) from err
    return pipeline


def check_limit(limit: Any) -> int | None:
    """None (all images) for None or 0; else a whole number 1..MAX_LIMIT. Floats are accepted
    when whole, as gradio's Number sends 3.0 for 3; 1.5 is refused, never rounded."""
    if limit is None:
        return None
    whole = isinstance(limit, int) or (isinstance(limit, float) and limit.is_integer())
    if isinstance(limit, bool) or not whole or not 0 <= limit <= MAX_LIMIT:
        raise MammoInputError(f"limit must be a whole number of images from 0 (all) to "
                              f"{MAX_LIMIT:,}, got {limit!r}")
    return int(limit) or None


# -- disk ---------------------------------------------------------------------------------------
def disk_usage(path: Path) -> int:
    """Bytes in the files under `path` (symlinks not followed, vanishing files skipped)."""
    total, stack = 0, [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:  # a job folder deleted while we walk it
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                else:
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total


def mb(nbytes: float) -> str:
    return f"{nbytes / MIB:.3g} MB"


# -- messages for clients -----------------------------------------------------------------------
# An absolute path not already replaced: "/a/b/" of "/a/b/name" (a URL's "//" and "a/b" are not).
_ABS_PATH = re.compile(r"(?<![\w<>~.:/\\-])/(?:[^\s'\"/:,;()\[\]<>]+/)+")
_JOB_PART = re.compile(r"<jobs>/[0-9a-f]{12}/(input|out)\b")


class Redactor:
    """Replaces the server's paths in a message by placeholders: the jobs folder, the datasets
    folder, temp and upload folders, the home folder, then any other absolute folder path."""

    def __init__(self, jobs_dir: Path, datasets_root: Path | None) -> None:
        places = {"<jobs>": jobs_dir, "<datasets>": datasets_root, "<tmp>": tempfile.gettempdir(),
                  "<uploads>": os.environ.get("GRADIO_TEMP_DIR"), "~": Path.home()}
        pairs = set()
        for label, path in places.items():
            if path:
                for form in (str(path), os.path.realpath(path)):
                    if len(form.rstrip("/")) > 1:
                        pairs.add((form.rstrip("/"), label))
        self.pairs = sorted(pairs, key=lambda pair: -len(pair[0]))  # the jobs folder before ~

    def __call__(self, text: str) -> str:
        for path, label in self.pairs:
            text = text.replace(path, label)
        text = _JOB_PART.sub(lambda m: "<upload>" if m[1] == "input" else "<output>", text)
        return _ABS_PATH.sub("<path>/", text)
