"""Import order of torch vs tensorflow, through `mammo.models.frameworks`, in fresh processes.

Importing tensorflow before torchvision/triton segfaults (exit 139) even on this CPU-only
machine (see the `mammo.models.frameworks` docstring), so every check that imports a framework runs
in a subprocess. Only two subprocesses import tensorflow (~6-10 s each).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from mammo.models import frameworks

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, timeout: float = 300.0, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter at the repo root; return the completed process."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    for name in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND"):
        if name not in env:
            full_env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    """Exit 0 (139 would be the segfault), with the output in the failure message."""
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"


TINY_OPS = """
t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
assert float((t @ t.T).sum()) == 83.0
for name in ("torchvision", "triton"):
    assert name in sys.modules or not frameworks.is_installed(name), name
x = tf.constant([[1.0, 2.0], [3.0, 4.0]])
assert float(tf.reduce_sum(tf.matmul(x, x))) == 54.0
print("OK", os.environ["TF_CPP_MIN_LOG_LEVEL"], os.environ["KERAS_BACKEND"])
"""


def test_tensorflow_then_torch_is_safe() -> None:
    """import_tensorflow() first: torch side is loaded first anyway; keras works too."""
    code = (
        "import os, sys\nfrom mammo.models import frameworks\n"
        "tf = frameworks.import_tensorflow()\n"
        "for name in frameworks.TORCH_MODELS:\n"
        "    assert name in sys.modules or not frameworks.is_installed(name), name\n"
        "torch = frameworks.import_torch()\n"
        "keras = frameworks.import_keras()\n"
        "assert keras.backend.backend() == 'tensorflow'\n"
        "import segmentation_models_pytorch, timm\n" + TINY_OPS
    )
    proc = run_python(code)
    assert_ok(proc)
    # No GPU visible: level 3 also hides TensorFlow's "failed call to cuInit" error line.
    assert f"OK {'2' if frameworks.gpu_visible() else '3'} tensorflow" in proc.stdout


def test_torch_then_tensorflow_is_safe_and_respects_user_env() -> None:
    """import_torch() first, then import_tensorflow(); user-set env vars are kept."""
    code = (
        "import os, sys\nfrom mammo.models import frameworks\n"
        "torch = frameworks.import_torch()\n"
        "tf = frameworks.import_tensorflow()\n" + TINY_OPS
    )
    proc = run_python(code, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    assert_ok(proc)
    assert "OK 3 tensorflow" in proc.stdout


def test_unsafe_order_raises_instead_of_segfault(monkeypatch: pytest.MonkeyPatch) -> None:
    """tensorflow loaded without torchvision: a RuntimeError, checked before any import."""
    monkeypatch.setitem(sys.modules, "tensorflow", ModuleType("tensorflow"))
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    with pytest.raises(RuntimeError, match="tensorflow was imported before torchvision"):
        frameworks.assert_safe_order()
    with pytest.raises(RuntimeError, match="in its own process"):
        frameworks.import_torch()
    with pytest.raises(RuntimeError, match="import_torch"):
        frameworks.import_tensorflow()


def test_safe_order_passes_without_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """No tensorflow loaded: nothing to check."""
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    frameworks.assert_safe_order()


def test_mammo_import_and_breast_pipeline_load_no_framework() -> None:
    """`import mammo`, list/get the breast pipeline, weights, frameworks: no torch/TF loaded."""
    code = """
    import sys
    import mammo
    import mammo.models.frameworks
    import mammo.weights
    assert "breast" in mammo.list_pipelines()
    mammo.get_pipeline("breast")
    mammo.weights.load_manifest()
    heavy = [m for m in ("torch", "torchvision", "timm", "segmentation_models_pytorch",
                         "tensorflow", "keras", "triton") if m in sys.modules]
    assert not heavy, heavy
    print("CLEAN")
    """
    proc = run_python(code, timeout=600)  # a hang guard, not a speed limit
    assert_ok(proc)
    assert "CLEAN" in proc.stdout
