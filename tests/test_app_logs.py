"""What the app writes to its log: a user's mistake is one line (no traceback), and loading the
Keras pipeline on a machine without a GPU does not log TensorFlow's failed CUDA probe."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from mammo.models import frameworks
from tests.dicom_factory import text_file
from tests.test_app_ui import app_module  # noqa: F401 - the fixture, reused

REPO = Path(__file__).resolve().parents[1]


def test_user_error_is_one_log_line(app_module: ModuleType, tmp_path: Path,  # noqa: F811
                                    caplog: pytest.LogCaptureFixture) -> None:
    """The page gets the message; the log one INFO line; gradio is told not to print the
    traceback (it prints a gr.Error's unless print_exception=False), and no cause is chained."""
    import gradio as gr

    caplog.set_level(logging.INFO, logger="mammo.app")
    with pytest.raises(gr.Error) as raised:
        app_module.predict(str(text_file(tmp_path / "notes.png")), "breast")
    err = raised.value
    assert "notes.png': it is not an image file" in err.message and not err.print_exception
    assert err.__cause__ is None and err.__suppress_context__
    with pytest.raises(gr.Error) as raised:
        app_module.compare(None, ["breast"])
    assert not raised.value.print_exception
    lines = [record.getMessage() for record in caplog.records if record.name == "mammo.app"]
    assert len(lines) == 2 and lines[0].startswith("predict: Cannot read image 'notes.png'")
    assert lines[1].startswith("compare: No file")
    assert all(record.exc_info is None for record in caplog.records)


def test_tf_log_level_hides_errors_only_without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Level 3 (errors hidden) only where no GPU is visible; the user's choice wins; GPUs are
    never hidden (CUDA_VISIBLE_DEVICES is left alone)."""
    for gpu, level in ((False, "3"), (True, "2")):
        monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        monkeypatch.setattr(frameworks, "gpu_visible", lambda gpu=gpu: gpu)
        frameworks._set_tf_env()
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == level and "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    frameworks._set_tf_env()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


def test_gpu_visible_respects_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert not frameworks.gpu_visible()


@pytest.mark.timeout(300)
def test_no_cuda_probe_error_without_gpu() -> None:
    """TensorFlow through the framework loader, its devices listed (the CUDA probe): stderr has
    no "failed call to cuInit" (it did on the CPU-only machine: an ERROR line that is no fault)."""
    if not frameworks.is_installed("tensorflow"):
        pytest.skip("tensorflow is not installed")
    code = ("from mammo.models.frameworks import import_tensorflow\n"
            "tf = import_tensorflow()\nprint(len(tf.config.list_physical_devices('GPU')))")
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=280, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "cuInit" not in proc.stderr, proc.stderr[-4000:]
    if frameworks.gpu_visible():  # and a GPU that exists is still used
        assert int(proc.stdout.split()[-1]) > 0
