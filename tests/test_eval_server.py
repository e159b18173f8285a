"""Tests for eval/jobs.py and eval/server.py: path and zip safety, the job queue, restarts, and the Gradio API.

Unit tests replace `eval.runner.evaluate` by `FakeRunner`; the end-to-end test at the bottom
runs the real runner with the "breast" pipeline on MIAS images through a launched server.
"""

from __future__ import annotations

import csv
import json
import os
import queue
import struct
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import eval.runner
from eval.jobs import EvalService
from eval.server import build_server, launch_options
from mammo.errors import MammoInputError
from tests.conftest import free_port, require_data

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}


@pytest.fixture(autouse=True, scope="module")
def _offline() -> Iterator[None]:
    """No internet here: keep gradio and huggingface_hub from trying."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in OFFLINE_ENV.items():
            mp.setenv(key, value)
        yield


class FakeRunner:
    """Stands in for `eval.runner.evaluate`: reports progress, waits for `release`, writes files."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.release = threading.Event()
        self.release.set()
        self.entered: queue.Queue[str] = queue.Queue()  # dataset of each call, once running
        self.log: list[tuple[str, str]] = []
        self.calls: list[dict[str, Any]] = []

    def __call__(self, pipeline: str, dataset: str, out_dir: str | Path, *, split: str | None = None,
                 limit: int | None = None, workers: int = 1, resume: bool = False,
                 progress: Any = None, quiet: bool = False) -> dict[str, Any]:
        self.calls.append({"pipeline": pipeline, "dataset": dataset, "split": split, "limit": limit})
        self.log.append(("start", dataset))
        progress(1, 2)
        self.entered.put(dataset)
        assert self.release.wait(60), "test never released the fake runner"
        if self.fail is not None:
            raise self.fail
        out = Path(out_dir)
        (out / "masks").mkdir(parents=True, exist_ok=True)
        (out / "masks" / "a.png").write_bytes(b"png")
        (out / "metrics.json").write_text("{}")
        (out / "predictions.csv").write_text("image_id,score\na,0.1\nb,0.2\n")
        progress(2, 2)
        self.log.append(("end", dataset))
        return {}


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> FakeRunner:
    fake = FakeRunner()
    monkeypatch.setattr(eval.runner, "evaluate", fake)
    return fake


@pytest.fixture
def datasets_root(tmp_path: Path) -> Path:
    root = tmp_path / "datasets"
    (root / "good" / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "escape").symlink_to(tmp_path / "outside")
    return root


@pytest.fixture
def service(tmp_path: Path, datasets_root: Path) -> Iterator[EvalService]:
    svc = EvalService(tmp_path / "jobs", datasets_root, isolate=False)  # FakeRunner runs in-thread
    yield svc
    svc.close(timeout=5)


def wait_for(svc: EvalService, job_id: str, states: tuple[str, ...] = ("done", "failed"),
             timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (info := svc.status(job_id))["status"] not in states:
        assert time.monotonic() < deadline, f"job stuck: {info}"
        time.sleep(0.02)
    return info


def make_zip(path: Path, members: dict[str, bytes], compress: bool = False) -> Path:
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def job_folders(svc: EvalService) -> list[Path]:
    return [p for p in svc.jobs_dir.iterdir() if p.is_dir()]


# -- path safety --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../x", "/etc", "a/../../b", "escape", "good\\sub", "C:/Windows",
                                  "..", "good/../../outside", ""])
def test_dataset_names_outside_root_refused(service: EvalService, runner: FakeRunner, name: str) -> None:
    with pytest.raises(MammoInputError):
        service.submit_dataset("folder", name, "breast")
    assert job_folders(service) == [] and runner.calls == []


def test_symlink_escape_message(service: EvalService) -> None:
    with pytest.raises(MammoInputError, match="outside the server's datasets folder"):
        service.submit_dataset("folder", "escape", "breast")


def test_dataset_inside_root_runs(service: EvalService, runner: FakeRunner, datasets_root: Path) -> None:
    job_id = service.submit_dataset("mias", "good/sub", "breast", split="test", limit=3)
    assert wait_for(service, job_id)["status"] == "done"
    assert runner.calls == [{"pipeline": "breast", "dataset": f"mias:{datasets_root.resolve()}/good/sub",
                             "split": "test", "limit": 3}]
    assert service.status(job_id)["dataset"] == "mias:good/sub"  # no server path shown


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "nope"}, "unknown dataset kind"),
    ({"pipeline": "nope"}, "unknown pipeline 'nope'"),
    ({"split": "/etc/passwd"}, "split must be one of"),
    ({"limit": -1}, "limit must be a whole number"),
    ({"limit": 1.5}, "limit must be a whole number"),
    ({"limit": 10**30}, "limit must be a whole number of images from 0 .all. to 1,000,000"),
    ({"pipeline": ["breast"]}, "pipeline must be a string, got list"),
    ({"kind": None}, "dataset kind must be a string"),
    ({"name": 7}, "dataset name must be a string, got int"),
    ({"split": ["test"]}, "split must be a string"),
    ({"name": "missing"}, r"no dataset 'missing' in the server's datasets folder; name a folder"),
])
def test_submit_dataset_bad_arguments(service: EvalService, kwargs: dict[str, Any], message: str) -> None:
    args = {"kind": "folder", "name": "good", "pipeline": "breast", **kwargs}
    with pytest.raises(MammoInputError, match=message):
        service.submit_dataset(**args)
    assert job_folders(service) == []


def test_unknown_dataset_never_lists_the_root(service: EvalService) -> None:
    with pytest.raises(MammoInputError) as err:
        service.submit_dataset("folder", "missing", "breast")
    assert "good" not in str(err.value) and "escape" not in str(err.value)
    assert str(service.datasets_root) not in str(err.value)


@pytest.mark.parametrize(("limit", "stored"),
                         [(None, None), (0, None), (3, 3), (3.0, 3), (1_000_000, 1_000_000)])
def test_limit_values_accepted(service: EvalService, runner: FakeRunner, limit: Any, stored: Any) -> None:
    job_id = service.submit_dataset("folder", "good", "breast", limit=limit)
    assert service.status(job_id)["limit"] == stored
    wait_for(service, job_id)


def test_datasets_disabled_without_root(tmp_path: Path) -> None:
    svc = EvalService(tmp_path / "jobs")
    with pytest.raises(MammoInputError, match="--datasets-root"):
        svc.submit_dataset("folder", "good", "breast")
    svc.close()


@pytest.mark.parametrize("job_id", ["../../etc/passwd", "0123456789AB", "0123456789ab\n", "abc", 12])
def test_job_ids_validated(service: EvalService, job_id: Any) -> None:
    with pytest.raises(MammoInputError, match="invalid job id"):
        service.status(job_id)


def test_unknown_job_id(service: EvalService) -> None:
    with pytest.raises(MammoInputError, match="no job '0123456789ab'"):
        service.status("0123456789ab")


# -- uploads ------------------------------------------------------------------------------------
@pytest.mark.parametrize("member", ["../evil.png", "/abs.png", "C:/evil.png", "a/../../evil.png",
                                    "..\\evil.png"])
def test_zip_slip_refused(service: EvalService, runner: FakeRunner, tmp_path: Path, member: str) -> None:
    upload = make_zip(tmp_path / "up.zip", {"ok.png": b"x", member: b"evil"})
    with pytest.raises(MammoInputError, match="nothing was extracted"):
        service.submit_zip(upload, "breast")
    assert not list(tmp_path.rglob("evil.png")) and job_folders(service) == [] and runner.calls == []


def test_upload_over_limit_states_limit(tmp_path: Path) -> None:
    svc = EvalService(tmp_path / "jobs", max_upload_mb=0.001)
    upload = make_zip(tmp_path / "big.zip", {"a.png": os.urandom(4000)})
    with pytest.raises(MammoInputError, match="upload is") as err:
        svc.submit_zip(upload, "breast")
    size_mb = f"{upload.stat().st_size / 2**20:.3g} MB"
    assert "limit is 0.001 MB" in str(err.value) and size_mb in str(err.value)
    svc.close()


def test_unzipped_size_limited(tmp_path: Path) -> None:
    svc = EvalService(tmp_path / "jobs", max_unzipped_mb=0.01)
    upload = make_zip(tmp_path / "bomb.zip", {"a.png": bytes(1_000_000)}, compress=True)
    with pytest.raises(MammoInputError, match="limit is 0.01 MB"):
        svc.submit_zip(upload, "breast")
    assert job_folders(svc) == []
    svc.close()


def test_zip_lying_about_sizes_refused(service: EvalService, tmp_path: Path) -> None:
    """A member whose header claims 10 bytes but inflates to 100 kB is refused, not extracted."""
    data = bytearray(make_zip(tmp_path / "lie.zip", {"a.png": bytes(100_000)}, compress=True).read_bytes())
    struct.pack_into("<I", data, data.find(b"PK\x03\x04") + 22, 10)  # local header size
    struct.pack_into("<I", data, data.rfind(b"PK\x01\x02") + 24, 10)  # central directory size
    (tmp_path / "lie.zip").write_bytes(bytes(data))
    with pytest.raises(MammoInputError, match="cannot read zip"):
        service.submit_zip(tmp_path / "lie.zip", "breast")
    assert job_folders(service) == []


def test_empty_zip_refused(service: EvalService, tmp_path: Path) -> None:
    upload = make_zip(tmp_path / "empty.zip", {"cases/": b"", "__MACOSX/._x": b"j"})
    with pytest.raises(MammoInputError, match="holds no files"):
        service.submit_zip(upload, "breast")


def test_not_a_zip_and_unknown_pipeline(service: EvalService, tmp_path: Path) -> None:
    bogus = tmp_path / "x.zip"
    bogus.write_text("not a zip")
    with pytest.raises(MammoInputError, match="not a zip"):
        service.submit_zip(bogus, "breast")
    upload = make_zip(tmp_path / "up.zip", {"a.png": b"x"})
    with pytest.raises(MammoInputError, match="unknown pipeline 'nope'; choose one of: breast"):
        service.submit_zip(upload, "nope")
    assert job_folders(service) == []


@pytest.mark.parametrize(("members", "root"), [
    ({"a.png": b"1", "masks/a.png": b"2", "labels.csv": b"image\n"}, "input"),
    ({"cases/a.png": b"1", "cases/masks/a.png": b"2", "__MACOSX/cases/._a.png": b"j"}, "input/cases"),
])
def test_zip_layouts(service: EvalService, runner: FakeRunner, tmp_path: Path,
                     members: dict[str, bytes], root: str) -> None:
    job_id = service.submit_zip(make_zip(tmp_path / "up.zip", members), "breast", limit=2)
    assert wait_for(service, job_id)["status"] == "done"
    expected = service.jobs_dir / job_id / root
    assert runner.calls[0]["dataset"] == f"folder:{expected}" and runner.calls[0]["limit"] == 2
    assert (expected / "masks" / "a.png").is_file()
    assert not (service.jobs_dir / job_id / "input" / "__MACOSX").exists()


# -- the queue ----------------------------------------------------------------------------------
def test_one_job_at_a_time_queued_running_done(service: EvalService, runner: FakeRunner) -> None:
    runner.release.clear()
    first = service.submit_dataset("folder", "good", "breast")
    second = service.submit_dataset("folder", "good/sub", "breast")
    assert runner.entered.get(timeout=10).endswith("good")
    running, queued = service.status(first), service.status(second)
    progress = (running["status"], running["done"], running["total"], running["progress"])
    assert progress == ("running", 1, 2, 0.5)
    assert running["queue_position"] is None and running["started"] is not None
    assert (queued["status"], queued["queue_position"], queued["started"]) == ("queued", 1, None)
    with pytest.raises(MammoInputError, match="is running"):
        service.result(first)
    time.sleep(0.3)  # the second job must not start while the first is unfinished
    assert runner.entered.empty() and service.status(second)["status"] == "queued"
    runner.release.set()
    done1, done2 = wait_for(service, first), wait_for(service, second)
    assert done1["status"] == done2["status"] == "done" and done1["progress"] == 1.0
    assert [event for event, _ in runner.log] == ["start", "end", "start", "end"]
    assert done2["started"] >= done1["finished"]
    on_disk = json.loads((service.jobs_dir / first / "job.json").read_text())
    assert on_disk["status"] == "done" and on_disk["done"] == 2


def test_result_and_bundle(service: EvalService, runner: FakeRunner) -> None:
    job_id = service.submit_dataset("folder", "good", "breast")
    wait_for(service, job_id)
    assert service.result(job_id).read_text().count("\n") == 3
    bundle = service.bundle(job_id)
    with zipfile.ZipFile(bundle) as zf:
        assert sorted(zf.namelist()) == ["masks/a.png", "metrics.json", "predictions.csv"]
    assert service.bundle(job_id) == bundle


@pytest.mark.parametrize(("error", "message"), [
    (MammoInputError("folder: no images found"), "folder: no images found"),
    (RuntimeError("boom"), "RuntimeError: boom"),
])
def test_failing_evaluate(service: EvalService, runner: FakeRunner, error: Exception, message: str) -> None:
    runner.fail = error
    job_id = service.submit_dataset("folder", "good", "breast")
    info = wait_for(service, job_id)
    assert (info["status"], info["error"]) == ("failed", message)
    with pytest.raises(MammoInputError, match=f"is failed: {message}"):
        service.bundle(job_id)
    runner.fail = None  # the worker survives and runs the next job
    assert wait_for(service, service.submit_dataset("folder", "good", "breast"))["status"] == "done"


def test_restart_marks_unfinished_jobs_failed(service: EvalService, runner: FakeRunner) -> None:
    finished = service.submit_dataset("folder", "good", "breast")
    wait_for(service, finished)
    runner.entered.get(timeout=5)
    runner.release.clear()
    running = service.submit_dataset("folder", "good", "breast")
    queued = service.submit_dataset("folder", "good", "breast")
    runner.entered.get(timeout=10)
    restarted = EvalService(service.jobs_dir, service.datasets_root, isolate=False)  # what the "crash" left
    try:
        for job_id, was in ((running, "running"), (queued, "queued")):
            info = restarted.status(job_id)
            assert info["status"] == "failed" and f"restarted while the job was {was}" in info["error"]
            assert json.loads((service.jobs_dir / job_id / "job.json").read_text())["status"] == "failed"
        assert restarted.status(finished)["status"] == "done"
        assert restarted.result(finished).is_file()
        time.sleep(0.2)
        assert len(runner.calls) == 2  # nothing was re-run by the new service
    finally:
        runner.release.set()
        restarted.close()


# -- Gradio -------------------------------------------------------------------------------------
ENDPOINTS = ["eval_submit_zip", "eval_submit_dataset", "eval_status", "eval_result", "eval_bundle"]


@pytest.mark.parametrize("inside", [True, False])
def test_add_api_registers_endpoints(service: EvalService, inside: bool) -> None:
    """app.py may call add_api inside its own `with gr.Blocks()` or after it."""
    import gradio as gr

    from eval.server import add_api

    with gr.Blocks() as blocks:
        gr.Markdown("the demo")
        if inside:
            add_api(blocks, service)
    if not inside:
        add_api(blocks, service)
    names = [fn.api_name for fn in blocks.fns.values()]
    assert names == ENDPOINTS


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, _offline: None) -> Iterator[tuple[Any, EvalService]]:
    """A launched server (module-wide: launching is slow on 2 cores) and a client for it."""
    from gradio_client import Client

    base = tmp_path_factory.mktemp("server")
    (base / "datasets" / "good").mkdir(parents=True)
    svc = EvalService(base / "jobs", base / "datasets", isolate=False)  # the end-to-end test isolates
    blocks = build_server(svc.jobs_dir, service=svc)
    port = free_port()
    blocks.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True,
                  **launch_options(svc))
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=base / "downloads",
                        analytics_enabled=False)
        yield client, svc
    finally:
        blocks.close()
        svc.close(timeout=5)


def poll_status(client: Any, job_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (info := client.predict(job_id, api_name="/eval_status"))["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, f"job did not finish in {timeout} s: {info}"
        time.sleep(0.5)
    return info


@pytest.mark.timeout(300)
def test_api_errors_reach_client(server: tuple[Any, EvalService]) -> None:
    from gradio_client.exceptions import AppError

    client, _ = server
    with pytest.raises(AppError, match=r"dataset name '\.\./etc' contains '\.\.'"):
        client.predict("folder", "../etc", "breast", "", None, api_name="/eval_submit_dataset")
    with pytest.raises(AppError, match="invalid job id"):
        client.predict("../../etc/passwd", api_name="/eval_status")
    with pytest.raises(AppError, match="no dataset 'missing'") as err:
        client.predict("folder", "missing", "breast", "", None, api_name="/eval_submit_dataset")
    assert "good" not in str(err.value)  # the datasets folder is never listed


@pytest.mark.timeout(300)
@pytest.mark.parametrize("limit", [1.5, 1e30, -1])
def test_api_limit_is_checked_not_rounded(server: tuple[Any, EvalService], limit: float) -> None:
    from gradio_client.exceptions import AppError

    client, svc = server
    with pytest.raises(AppError, match="limit must be a whole number"):
        client.predict("folder", "good", "breast", "", limit, api_name="/eval_submit_dataset")


@pytest.mark.timeout(300)
def test_api_counts_jobs_per_client_address(server: tuple[Any, EvalService], runner: FakeRunner) -> None:
    client, svc = server
    runner.release.clear()
    try:
        job_id = client.predict("folder", "good", "breast", "", 2.0, api_name="/eval_submit_dataset")
        assert svc.status(job_id)["limit"] == 2
        assert svc._clients[job_id] == "127.0.0.1"  # gr.Request's client host
    finally:
        runner.release.set()
    assert poll_status(client, job_id, 60)["status"] == "done"


@pytest.mark.timeout(300)
def test_api_with_fake_runner(server: tuple[Any, EvalService], runner: FakeRunner, tmp_path: Path) -> None:
    from gradio_client import handle_file

    client, svc = server
    job_id = client.predict("folder", "good", "breast", "", 0, api_name="/eval_submit_dataset")
    assert poll_status(client, job_id, 60)["status"] == "done"
    predictions = Path(client.predict(job_id, api_name="/eval_result"))
    assert predictions.name == "predictions.csv" and predictions.read_text().count("\n") == 3
    with zipfile.ZipFile(client.predict(job_id, api_name="/eval_bundle")) as zf:
        assert "metrics.json" in zf.namelist()
    upload = make_zip(tmp_path / "cases.zip", {"cases/a.png": b"1"})
    zip_job = client.predict(handle_file(upload), "breast", 1, api_name="/eval_submit_zip")
    assert poll_status(client, zip_job, 60)["status"] == "done"
    assert runner.calls[-1]["dataset"] == f"folder:{svc.jobs_dir / zip_job / 'input' / 'cases'}"


@pytest.mark.timeout(600)
def test_end_to_end_real_runner(server: tuple[Any, EvalService], tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The real eval.runner with the "breast" pipeline on 3 MIAS images, limit 2, in a child process
    as a server runs it."""
    from gradio_client import handle_file

    mias = require_data("mias")
    images = sorted(p for p in mias.iterdir() if p.stem.startswith("mdb") and p.suffix in (".png", ".pgm"))
    assert len(images) >= 3, f"too few MIAS images in {mias}"
    upload = tmp_path / "mias3.zip"
    with zipfile.ZipFile(upload, "w") as zf:
        for image in images[:3]:
            zf.write(image, f"mias3/{image.name}")
    client, svc = server
    monkeypatch.setattr(svc, "isolate", True)
    job_id = client.predict(handle_file(upload), "breast", 2, api_name="/eval_submit_zip")
    info = poll_status(client, job_id, 120 if os.cpu_count() and os.cpu_count() > 2 else 400)
    assert info["status"] == "done", info["error"]
    with open(client.predict(job_id, api_name="/eval_result"), newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 2
    with zipfile.ZipFile(client.predict(job_id, api_name="/eval_bundle")) as zf:
        names = set(zf.namelist())
    assert {"predictions.csv", "metrics.json", "report.html"} <= names, names
