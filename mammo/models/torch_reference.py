"""The reference forward pass that every speed figure is divided by.

Machines here are shared and noisy, so a speed is reported as a ratio to this pass, timed in the
same process just before or after: the ratio holds across machines, the seconds do not.
"""

from __future__ import annotations

import time

import numpy as np

from mammo.models.frameworks import import_smp, import_torch


def reference_forward_seconds(repeats: int = 7) -> float:
    """Median time of one fixed reference forward pass (timm `resnet18`, random weights, 1x3x512x512)
    timed in the same process, so a noisy or shared machine can be read as a ratio."""
    torch = import_torch()
    import_smp()  # timm, in the safe import order
    import timm

    model = timm.create_model("resnet18", pretrained=False).eval()
    x = torch.zeros(1, 3, 512, 512)
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    return float(np.median(times))
