"""The only sanctioned way for mammo code to import torch, tensorflow and keras.

Why: importing tensorflow before the torch-side native libraries crashes the process with a
segfault (exit 139), no Python traceback. Measured on the 2-core CPU-only dev machine (no GPU,
no CUDA driver) with torch 2.14.1+cu130, torchvision 0.29.1, triton 3.8.0, timm 1.0.31,
segmentation-models-pytorch 0.6.0, tensorflow 2.21.0, Python 3.11, each in a fresh process:

    import tensorflow; import torchvision                    -> exit 139 (segfault)
    import tensorflow; import timm                           -> exit 139
    import tensorflow; import segmentation_models_pytorch    -> exit 139
    import torch; import tensorflow; import torchvision      -> exit 139
    import tensorflow; import torch; import torch._dynamo    -> exit 139
    import tensorflow; import triton                         -> exit 139
    import tensorflow; import torch                          -> ok (but torchvision then crashes)
    import torchvision; import tensorflow                    -> ok
    import triton; import tensorflow; import torchvision     -> ok

So the crash is not GPU-specific. `python -X faulthandler` puts it in ``triton/knobs.py``
loading ``triton._C.libtriton`` (reached via torchvision.ops -> torch._dynamo -> triton):
triton's native library must be loaded before tensorflow's. Rule enforced here: torch,
triton, torchvision (and timm / segmentation_models_pytorch when installed) first, then
tensorflow. Code that imported tensorflow itself first gets a clear RuntimeError from
`assert_safe_order` instead of a segfault.

Importing this module imports neither framework.
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import os
import sys
from types import ModuleType

# Modules whose native code must be loaded before tensorflow's, in import order.
# triton is what actually crashes; torchvision/timm/smp pull it in through torch._dynamo.
TORCH_SIDE: tuple[str, ...] = ("torch", "triton", "torchvision")
TORCH_MODELS: tuple[str, ...] = ("timm", "segmentation_models_pytorch")
TF_SIDE: tuple[str, ...] = ("tensorflow", "keras")

UNSAFE_ORDER_MESSAGE = (
    "tensorflow was imported before torchvision; call mammo.models.frameworks.import_torch() first "
    "or run the TF pipeline in its own process (importing torchvision/timm/smp/triton after "
    "tensorflow segfaults the process). Not loaded yet: {missing}"
)


def is_installed(name: str) -> bool:
    """Whether top-level module `name` can be imported (cheap: no import happens)."""
    return importlib.util.find_spec(name) is not None


def _torch_side_missing(names: tuple[str, ...]) -> list[str]:
    """Installed torch-side modules among `names` that are not imported yet."""
    return [name for name in names if name not in sys.modules and is_installed(name)]


def assert_safe_order(names: tuple[str, ...] = TORCH_SIDE) -> None:
    """Raise instead of segfaulting if tensorflow is loaded but a torch-side module is not.

    Raises:
        RuntimeError: ``tensorflow`` is in `sys.modules` while an installed module of `names`
            (default: torch, triton, torchvision) is not; importing it now would crash.
    """
    if "tensorflow" not in sys.modules:
        return
    missing = _torch_side_missing(names)
    if missing:
        raise RuntimeError(UNSAFE_ORDER_MESSAGE.format(missing=", ".join(missing)))


def _import_all(names: tuple[str, ...]) -> None:
    """Import each installed module of `names`, in order."""
    for name in names:
        if name not in sys.modules and is_installed(name):
            importlib.import_module(name)


def import_torch() -> ModuleType:
    """Return `torch`, with torchvision (and triton) loaded, after checking the import order.

    Raises:
        RuntimeError: tensorflow is already loaded but torchvision is not (see
            `assert_safe_order`).
    """
    assert_safe_order(TORCH_SIDE)
    _import_all(TORCH_SIDE)
    return sys.modules["torch"]


def import_smp() -> ModuleType:
    """Return `segmentation_models_pytorch` (imports timm too), after `import_torch`."""
    assert_safe_order(TORCH_SIDE + TORCH_MODELS)
    import_torch()
    _import_all(TORCH_MODELS)
    return importlib.import_module("segmentation_models_pytorch")


def gpu_visible() -> bool:
    """Whether this process may see an NVIDIA GPU: a device node exists (/dev/nvidia0, ..., or
    WSL's /dev/dxg) and CUDA_VISIBLE_DEVICES does not hide them all. Imports nothing."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/dev/dxg")


def _set_tf_env() -> None:
    """Quieter TF logs and the keras backend, unless the user already chose.

    Level 2 hides TF's INFO and WARNING lines. Without a GPU, level 3 also hides its ERROR
    lines, because the CPU-only machine's one ERROR is the CUDA probe failing ("failed call to
    cuInit: ... UNKNOWN ERROR (303)"), which reads like a fault and is none; CUDA_VISIBLE_DEVICES
    does not stop that probe. With a GPU, errors stay visible (and no GPU is hidden).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if gpu_visible() else "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def import_tensorflow() -> ModuleType:
    """Return `tensorflow`, importing every installed torch-side module first.

    Torch, triton, torchvision, timm and segmentation_models_pytorch (those installed) are
    imported before tensorflow, so a later torch import in the same process is safe. Sets
    ``TF_CPP_MIN_LOG_LEVEL`` (2, or 3 without a GPU: see `_set_tf_env`) and
    ``KERAS_BACKEND=tensorflow`` unless already set.

    Raises:
        RuntimeError: tensorflow was imported elsewhere before the torch side.
    """
    if "tensorflow" not in sys.modules:
        _set_tf_env()
    assert_safe_order(TORCH_SIDE + TORCH_MODELS)
    _import_all(TORCH_SIDE + TORCH_MODELS)
    return importlib.import_module("tensorflow")


def import_keras() -> ModuleType:
    """Return `keras` (tensorflow backend unless ``KERAS_BACKEND`` says otherwise)."""
    import_tensorflow()
    return importlib.import_module("keras")


def loaded_frameworks() -> list[str]:
    """Which of torch, torchvision, triton, timm, smp, tensorflow, keras are imported now."""
    names = TORCH_SIDE + TORCH_MODELS + TF_SIDE
    return [name for name in names if name in sys.modules]
