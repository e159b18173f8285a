"""One truth about the pipelines: the README, the app and `mammo pipelines` come from the registry,
and every output carries the full name, variant included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mammo.io.meta import ImageMeta
from mammo.pipelines import catalog, registry
from mammo.pipelines.base import Result

ROOT = Path(__file__).resolve().parents[1]


def test_readme_table_is_the_generated_one():
    text = (ROOT / "README.md").read_text()
    start, end = text.index(catalog.README_START), text.index(catalog.README_END) + len(catalog.README_END)
    assert text[start:end] == catalog.readme_table(), \
        "README's pipeline table is stale: regenerate it with `python -m mammo pipelines --markdown`"


def test_every_variant_has_a_note_and_the_default_comes_first():
    for base, spec in registry.PIPELINES.items():
        assert [v for v, _ in spec.variant_notes] == list(spec.variants), base
        assert all(note for _, note in spec.variant_notes), base


def test_names_and_descriptions_cover_every_variant():
    names = catalog.names()
    assert names == ["breast", "cascade", "cascade:fgt", "glam", "glam:sep", "cesm-unet", "tiryaki-mass", "deepmica", "deepmica:explain",
                     "box-lesion", "box-lesion:plain"]
    assert "fibroglandular region's bounding box" in catalog.describe("cascade:fgt")
    assert "breast's bounding box" in catalog.describe("cascade")
    assert not set(registry.PLANNED) & set(registry.PIPELINES)


def test_cli_lists_what_the_catalog_lists():
    out = subprocess.run([sys.executable, "-m", "mammo", "pipelines"], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    assert out.splitlines() == catalog.text_lines()
    markdown = subprocess.run([sys.executable, "-m", "mammo", "pipelines", "--markdown"], capture_output=True,
                              text=True, check=True, cwd=ROOT).stdout
    assert markdown.strip() == catalog.readme_table()


@pytest.mark.parametrize(("asked", "full"), [("cascade", "cascade"), ("cascade:breast", "cascade"),
                                             ("cascade:fgt", "cascade:fgt"), ("glam:joint", "glam"),
                                             ("glam:sep", "glam:sep"), ("breast", "breast")])
def test_full_name(asked, full):
    assert registry.full_name(asked) == full


class _Fake:
    """A pipeline whose builder ignores the variant; the registry must still name it fully."""

    name = "cascade"
    description = ""
    weights_sha256 = ""

    def __init__(self, region: str = "breast"):
        self.region = region

    def run(self, image: np.ndarray, meta: ImageMeta) -> Result:
        return Result(pipeline=self.name)


def test_a_variant_result_carries_the_variant(monkeypatch):
    fake_module = type(sys)("fake_builders")
    fake_module.build = _Fake
    monkeypatch.setitem(sys.modules, "fake_builders", fake_module)
    spec = registry.PIPELINES["cascade"]
    monkeypatch.setitem(registry.PIPELINES, "cascade",
                        registry.PipelineSpec("fake_builders:build", spec.description, "torch", spec.variants,
                                              spec.variant_notes))
    monkeypatch.setattr(registry, "_LOADED", {})
    fgt, default = registry.get_pipeline("cascade:fgt"), registry.get_pipeline("cascade")
    assert fgt.region == "fgt" and default.region == "breast"
    image = np.zeros((4, 4), np.float32)
    assert fgt.run(image, ImageMeta()).pipeline == "cascade:fgt"
    assert default.run(image, ImageMeta()).pipeline == "cascade"
    assert registry.get_pipeline("cascade:breast") is default  # one build for two spellings
