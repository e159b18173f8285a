"""The evaluation service's limits (issue "Reliability"): each test builds its hostile input itself.

`scripted_runner` stands in for `eval.runner.evaluate`; what it does depends on the dataset folder's
name. Where the time limit is the point, jobs run in child processes as on a server (the child
imports this module by its name); elsewhere in the worker thread (`isolate=False`).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eval.jobs import EvalService
from eval.limits import Limits, Redactor, check_limit
from eval.server import add_serve_args, serve
from eval.zips import ZipUpload, central_directory_size
from mammo.errors import MammoInputError
from tests.test_eval_server import wait_for

RUNNER = f"{__name__}:scripted_runner"
GATE = threading.Event()  # in-thread jobs on "wait" block on it
NAMES = ("ok", "hang", "ticks", "wait", "fail", "crash")


def scripted_runner(pipeline: str, dataset: str, out_dir: str, *, split: str | None = None,
                    limit: int | None = None, workers: int = 1, progress: Any = None,
                    quiet: bool = False) -> dict[str, Any]:
    """"ok" writes predictions.csv; "hang" sleeps (child processes only), "ticks" reports progress
    for ever, "wait" waits for GATE, "fail" raises with the dataset's path, "crash" exits."""
    path = dataset.partition(":")[2]
    name, out = Path(path).name, Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if name == "hang":
        (out.parent / "pid").write_text(str(os.getpid()))
        progress(0, 1)
        time.sleep(600)
    while name == "ticks":
        progress(1, 2)
        time.sleep(0.05)
    if name == "wait":
        assert GATE.wait(60), "the test never opened the gate"
    if name == "fail":
        raise MammoInputError(f"folder {path}: no images found")
    if name == "crash":
        os._exit(3)
    progress(1, 1)
    (out / "predictions.csv").write_text("image_id\na\n")
    return {}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for name in NAMES:
        (tmp_path / "datasets" / name).mkdir(parents=True)
    return tmp_path / "datasets"


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    GATE.clear()
    yield GATE
    GATE.set()  # never leave a worker waiting


def make_service(tmp_path: Path, root: Path | None = None, **kwargs: Any) -> EvalService:
    return EvalService(tmp_path / "jobs", root, runner=RUNNER, **{"isolate": False, **kwargs})


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def job_folders(svc: EvalService) -> list[Path]:
    return [p for p in svc.jobs_dir.iterdir() if p.is_dir()]


# -- the time limit -----------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_hung_job_is_killed_at_the_time_limit_and_the_worker_goes_on(tmp_path: Path, root: Path) -> None:
    svc = make_service(tmp_path, root, isolate=True, job_timeout_s=4)
    try:
        hung = svc.submit_dataset("folder", "hang", "breast")
        after = svc.submit_dataset("folder", "ok", "breast")
        info = wait_for(svc, hung)
        assert info["status"] == "failed"
        assert "longer than the server's limit of 4 s per job" in info["error"], info
        assert not alive(int((svc.jobs_dir / hung / "pid").read_text()))  # killed, and reaped
        assert wait_for(svc, after)["status"] == "done"
    finally:
        svc.close()


@pytest.mark.timeout(120)
def test_child_errors_and_crashes_become_messages(tmp_path: Path, root: Path) -> None:
    svc = make_service(tmp_path, root, isolate=True)
    try:
        failed, crashed = (svc.submit_dataset("folder", name, "breast") for name in ("fail", "crash"))
        info = wait_for(svc, failed)
        assert info["error"] == "folder <datasets>/fail: no images found"  # no server path
        on_disk = json.loads((svc.jobs_dir / failed / "job.json").read_text())
        assert on_disk["error"] == f"folder {root.resolve()}/fail: no images found"  # the operator's record
        assert "MammoInputError" in (svc.jobs_dir / failed / "job.log").read_text()  # the traceback
        assert "ended without a result (exit code 3" in wait_for(svc, crashed)["error"]
    finally:
        svc.close()


@pytest.mark.timeout(120)
def test_close_stops_the_running_child(tmp_path: Path, root: Path) -> None:
    svc = make_service(tmp_path, root, isolate=True)
    job_id = svc.submit_dataset("folder", "hang", "breast")
    pid_file = svc.jobs_dir / job_id / "pid"
    deadline = time.monotonic() + 60
    while not pid_file.is_file():
        assert time.monotonic() < deadline, svc.status(job_id)
        time.sleep(0.05)
    svc.close(timeout=30)
    info = svc.status(job_id)
    assert info["status"] == "failed" and "server stopped" in info["error"]
    assert not alive(int(pid_file.read_text()))


@pytest.mark.timeout(60)
def test_in_thread_the_limit_is_checked_after_each_image(tmp_path: Path, root: Path) -> None:
    svc = make_service(tmp_path, root, job_timeout_s=0.5)
    try:
        slow = svc.submit_dataset("folder", "ticks", "breast")
        after = svc.submit_dataset("folder", "ok", "breast")
        assert "limit of 0.5 s per job" in wait_for(svc, slow)["error"]
        assert wait_for(svc, after)["status"] == "done"
    finally:
        svc.close()


# -- zips ---------------------------------------------------------------------------------------
def test_zip_with_20000_members_refused_by_default(tmp_path: Path) -> None:
    upload = tmp_path / "many.zip"
    with zipfile.ZipFile(upload, "w") as zf:
        for i in range(20_000):
            zf.writestr(f"cases/{i}.png", b"")
    svc = make_service(tmp_path)
    with pytest.raises(MammoInputError, match="holds 20,000 members; the limit is 10,000"):
        svc.submit_zip(upload, "breast")
    assert job_folders(svc) == []
    svc.close()


def test_zip_directory_too_big_is_refused_before_parsing(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    upload = tmp_path / "names.zip"
    with zipfile.ZipFile(upload, "w") as zf:
        for i in range(12):
            zf.writestr(f"{i}{'x' * 1000}.png", b"")
    svc = make_service(tmp_path, max_zip_members=10)

    def parse(*args: Any) -> None:
        raise AssertionError("the central directory was parsed")

    monkeypatch.setattr(zipfile, "ZipFile", parse)
    with pytest.raises(MammoInputError, match="lists more members than the limit of 10"):
        svc.submit_zip(upload, "breast")
    svc.close()


def test_zip64_central_directory_size_is_read(tmp_path: Path) -> None:
    record = b"PK\x06\x06" + (44).to_bytes(8, "little") + bytes(4 + 8) + (7).to_bytes(8, "little") \
        + (7).to_bytes(8, "little") + (123_456).to_bytes(8, "little") + bytes(8)
    locator = b"PK\x06\x07" + bytes(4) + (4).to_bytes(8, "little") + (1).to_bytes(4, "little")
    end = b"PK\x05\x06" + bytes(4) + b"\xff\xff" * 2 + b"\xff" * 8 + bytes(2)
    (tmp_path / "z64.zip").write_bytes(b"junk" + record + locator + end)
    assert len(record) == 56 and central_directory_size(tmp_path / "z64.zip") == 123_456
    (tmp_path / "none.zip").write_bytes(b"no end record")
    assert central_directory_size(tmp_path / "none.zip") is None


def test_extraction_counts_bytes_in_case_headers_lie(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """zipfile stops at a member's declared size; were a member to yield more, the copy stops."""
    upload = tmp_path / "up.zip"
    with zipfile.ZipFile(upload, "w") as zf:
        zf.writestr("a.png", b"0123456789")
    with ZipUpload(upload, Limits()) as checked:
        monkeypatch.setattr(checked._zip, "open", lambda info: io.BytesIO(bytes(3 * 2**20)))
        with pytest.raises(MammoInputError, match="'a.png' unpacks to more than its declared size"):
            checked.extract(tmp_path / "dest")
    assert (tmp_path / "dest" / "a.png").stat().st_size == 0  # not one chunk written


@pytest.mark.timeout(120)
def test_zip_bomb_refused_before_extracting(tmp_path: Path) -> None:
    """256 MiB of zeros in a zip of a quarter MB: under the size limit, refused by the ratio."""
    upload = tmp_path / "bomb.zip"
    with zipfile.ZipFile(upload, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("cases/a.dcm", "w") as dst:
        for _ in range(256):
            dst.write(bytes(2**20))
    assert upload.stat().st_size < 2**20
    svc = make_service(tmp_path)
    start = time.monotonic()
    with pytest.raises(MammoInputError, match=r"times its size \(the limit is 200\)"):
        svc.submit_zip(upload, "breast")
    assert time.monotonic() - start < 5 and job_folders(svc) == []
    svc.close()


def test_jobs_folder_disk_budget_and_cleanup_by_age(tmp_path: Path, root: Path) -> None:
    upload = tmp_path / "up.zip"
    with zipfile.ZipFile(upload, "w") as zf:
        zf.writestr("cases/a.png", os.urandom(150_000))
    svc = make_service(tmp_path, root, max_jobs_disk_mb=0.25, keep_days=1)
    try:
        first = svc.submit_zip(upload, "breast")
        wait_for(svc, first)
        with pytest.raises(MammoInputError, match=r"jobs folder is full .* of its 0.25 MB; this upload"):
            svc.submit_zip(upload, "breast")
        assert len(job_folders(svc)) == 1
        svc.submit_dataset("folder", "ok", "breast")  # adds no upload: still under the budget
        svc._jobs[first].finished -= 2 * 86400  # as if finished two days ago
        wait_for(svc, svc.submit_zip(upload, "breast"))  # the old job made room
        assert not (svc.jobs_dir / first).exists()
        with pytest.raises(MammoInputError, match=r"no job .* \(finished jobs are kept 1 days\)"):
            svc.status(first)
    finally:
        svc.close()


def test_old_jobs_are_deleted_at_start(tmp_path: Path, root: Path) -> None:
    svc = make_service(tmp_path, root)
    job_id = svc.submit_dataset("folder", "ok", "breast")
    wait_for(svc, job_id)
    svc.close()
    path = svc.jobs_dir / job_id / "job.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "finished": time.time() - 8 * 86400}))
    restarted = make_service(tmp_path, root)  # keeps 7 days by default
    assert not path.parent.exists()
    restarted.close()


# -- the queue ----------------------------------------------------------------------------------
def test_forty_quick_submissions_meet_the_per_client_limit(tmp_path: Path, root: Path,
                                                           gate: threading.Event) -> None:
    svc = make_service(tmp_path, root)
    accepted, refused = [], []
    for _ in range(40):
        try:
            accepted.append(svc.submit_dataset("folder", "wait", "breast", client="10.0.0.1"))
        except MammoInputError as err:
            refused.append(str(err))
    assert len(accepted) == 5 and len(refused) == 35
    assert "you have 5 unfinished jobs on this server; the limit per client is 5" in refused[0]
    other = svc.submit_dataset("folder", "wait", "breast", client="10.0.0.2")  # another client
    gate.set()
    for job_id in [*accepted, other]:
        assert wait_for(svc, job_id)["status"] == "done"
    svc.submit_dataset("folder", "ok", "breast", client="10.0.0.1")  # its jobs are finished
    svc.close()


def test_queue_limit_in_all(tmp_path: Path, root: Path, gate: threading.Event) -> None:
    svc = make_service(tmp_path, root, max_queued=3, max_queued_per_client=100)
    running = svc.submit_dataset("folder", "wait", "breast")
    wait_for(svc, running, ("running",))
    for i in range(3):
        svc.submit_dataset("folder", "wait", "breast", client=f"c{i}")
    with pytest.raises(MammoInputError, match="queue is full: 3 jobs are waiting, the limit is 3"):
        svc.submit_dataset("folder", "ok", "breast", client="new")
    gate.set()
    svc.close()


# -- arguments ----------------------------------------------------------------------------------
@pytest.mark.parametrize("limit", [1.5, 10**30, 1e30, -1, True, "3", float("nan"), float("inf"), [2]])
def test_bad_limits_refused(limit: Any) -> None:
    with pytest.raises(MammoInputError, match="limit must be a whole number of images from 0"):
        check_limit(limit)


def test_upload_arguments_type_checked(tmp_path: Path) -> None:
    upload = tmp_path / "up.zip"
    with zipfile.ZipFile(upload, "w") as zf:
        zf.writestr("a.png", b"x")
    svc = make_service(tmp_path)
    for args, message in [((["up.zip"], "breast"), "the zip must be a file path, got list"),
                          ((upload, ["breast"]), "pipeline must be a string, got list"),
                          ((upload, "breast", 1.5), "limit must be a whole number")]:
        with pytest.raises(MammoInputError, match=message):
            svc.submit_zip(*args)
    assert job_folders(svc) == []
    svc.close()


def test_limits_validated() -> None:
    with pytest.raises(ValueError, match="max_queued must be a positive number"):
        Limits(max_queued=0)
    with pytest.raises(ValueError, match="job_timeout_s"):
        Limits(job_timeout_s=float("nan"))
    assert Limits(keep_days=0).keep_days == 0  # 0 keeps jobs for ever


def test_serve_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_serve_args(parser)
    args = parser.parse_args(["--job-timeout", "60", "--max-queued", "3", "--keep-days", "0"])
    assert (args.job_timeout_s, args.max_queued, args.keep_days, args.max_zip_members) == (60, 3, 0, 10_000)
    bad = parser.parse_args(["--jobs-dir", str(tmp_path / "jobs"), "--max-queued-per-client", "0"])
    assert serve(bad) == 2 and "max_queued_per_client must be a positive number" in capsys.readouterr().err


# -- messages -----------------------------------------------------------------------------------
def test_failed_job_messages_hold_no_server_paths(tmp_path: Path, root: Path) -> None:
    upload = tmp_path / "up.zip"
    with zipfile.ZipFile(upload, "w") as zf:
        zf.writestr("fail/a.png", b"x")
    svc = make_service(tmp_path, root)
    try:
        job_id = svc.submit_zip(upload, "breast")
        info = wait_for(svc, job_id)
        assert info["error"] == "folder <upload>/fail: no images found"
        with pytest.raises(MammoInputError) as err:
            svc.bundle(job_id)
        assert str(tmp_path) not in str(err.value) and "<upload>/fail" in str(err.value)
    finally:
        svc.close()


def test_redactor(tmp_path: Path) -> None:
    redact = Redactor(tmp_path / "jobs", tmp_path / "data")
    home = Path.home()
    cases = {
        f"cannot read {tmp_path}/jobs/0123456789ab/input/a.png": "cannot read <upload>/a.png",
        f"{tmp_path}/jobs/0123456789ab/out/x": "<output>/x",
        f"folder {tmp_path}/data/mias: no images": "folder <datasets>/mias: no images",
        f"[Errno 2] No such file: '{home}/.cache/w.pt'": "[Errno 2] No such file: '~/.cache/w.pt'",
        "No such file: '/usr/lib/python3/x.py'": "No such file: '<path>/x.py'",
        "see https://example.org/a/b and 1/2 of a/b": "see https://example.org/a/b and 1/2 of a/b",
    }
    for text, expected in cases.items():
        assert redact(text) == expected
