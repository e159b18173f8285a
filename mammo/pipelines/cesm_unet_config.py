"""The original tool's INI file (`train_eval_infer.config`), read strictly.

Every value is a Python literal read with `ast.literal_eval` (never `eval`): strings are quoted,
tuples look like `(9,9)`, lists like `["dice_coef"]`, booleans `True`/`False`. An unknown section
or key, a missing required key, or a value of the wrong form raises `ConfigError` naming the file,
the section, the key and the accepted form.

Keys beyond the original's (added for mammo's data sets and split): in `[train]`, `[eval]` and
`[test]`: `dataset`, `data_root`, `split_csv`, `split`, `image_types` (use `mammo.datasets` and a
committed patient-level split instead of an images/masks folder pair); in `[train]`: `threads`
(CPU threads for tensorflow), `seed`, `crop_margin` (the breast window margin of the framing),
`time_budget_min` (stop after the epoch that ends past it; 0 = none).
"""

from __future__ import annotations

import ast
import configparser
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REQUIRED = object()


@dataclass(frozen=True)
class Key:
    """One accepted key: a check on the parsed value, its form in words, and its default."""

    check: Callable[[Any], bool]
    form: str
    default: Any = REQUIRED


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pos_int(v: Any) -> bool:
    return _is_int(v) and v > 0


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fraction(v: Any) -> bool:
    return _number(v) and 0 <= v < 1


def _pair(v: Any) -> bool:
    return isinstance(v, tuple) and len(v) == 2 and all(_pos_int(x) for x in v)


def _str(v: Any) -> bool:
    return isinstance(v, str) and bool(v)


def _opt_str(v: Any) -> bool:
    return v is None or _str(v)


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(_str(x) for x in v)


def _types(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(x in ("DM", "CM") for x in v)


POS_INT = ("a positive integer, e.g. 16", _pos_int)
DATA_KEYS: dict[str, Key] = {
    "images_dir": Key(_opt_str, 'a quoted folder path, e.g. "./data/train/images"', None),
    "masks_dir": Key(_opt_str, 'a quoted folder path of same-named masks, e.g. "./data/train/masks"', None),
    "dataset": Key(_opt_str, 'a quoted mammo data set kind, e.g. "cdd-cesm"', None),
    "data_root": Key(_opt_str, 'a quoted folder path, e.g. "../shared/data/cdd_cesm"', None),
    "split_csv": Key(_opt_str, 'a quoted split CSV path, e.g. "splits/cdd_cesm.csv"', None),
    "split": Key(lambda v: v in ("train", "val", "test"), '"train", "val" or "test"', "train"),
    "image_types": Key(_types, 'a list of "DM"/"CM", e.g. ["DM", "CM"]', ["DM", "CM"]),
}
SECTIONS: dict[str, dict[str, Key]] = {
    "model": {
        "model": Key(_str, 'a quoted class name, e.g. "TensorflowUNet"', "TensorflowUNet"),
        "image_width": Key(_pos_int, POS_INT[0]),
        "image_height": Key(_pos_int, POS_INT[0]),
        "image_channels": Key(lambda v: v in (1, 2, 3),
                              "1 (image), 2 (image + CM flag plane) or 3 (RGB copies)"),
        "num_classes": Key(lambda v: v == 1, "1 (one lesion mask)", 1),
        "base_filters": Key(_pos_int, POS_INT[0]),
        "base_kernels": Key(_pair, "a tuple of two positive integers, e.g. (9,9)"),
        "num_layers": Key(lambda v: _is_int(v) and v >= 2, "an integer >= 2 (levels counting the bridge)"),
        "dilation": Key(_pair, "a tuple of two positive integers, e.g. (1,1)", (1, 1)),
        "dropout_rate": Key(_fraction, "a number in [0, 1), e.g. 0.05", 0.05),
        "learning_rate": Key(lambda v: _number(v) and v > 0, "a positive number, e.g. 0.0001"),
        "loss": Key(_str, 'a quoted loss name, e.g. "bce_dice_loss"', "bce_dice_loss"),
        "metrics": Key(_str_list, 'a list of quoted metric names, e.g. ["dice_coef"]', ["dice_coef"]),
        "generator": Key(_bool, "True (augmenting generator) or False", False),
        "show_summary": Key(_bool, "True or False", False),
    },
    "train": {
        **DATA_KEYS,
        "epochs": Key(_pos_int, POS_INT[0]),
        "batch_size": Key(_pos_int, POS_INT[0]),
        "patience": Key(_pos_int, "a positive integer (early-stopping epochs)", 10),
        "learning_rate_reducer": Key(_bool, "True or False", True),
        "reducer_factor": Key(lambda v: _number(v) and 0 < v < 1, "a number in (0, 1), e.g. 0.4", 0.4),
        "reducer_patience": Key(_pos_int, POS_INT[0], 4),
        "epoch_change_infer": Key(_bool, "True or False", False),
        "epoch_change_infer_dir": Key(_str, 'a quoted folder path, e.g. "./epoch_change_infer"',
                                      "./epoch_change_infer"),
        "num_infer_images": Key(_pos_int, POS_INT[0], 1),
        "model_dir": Key(_str, 'a quoted folder path, e.g. "./models"'),
        "eval_dir": Key(_str, 'a quoted folder path, e.g. "./eval"'),
        "save_weights_only": Key(_bool, "True (best.weights.h5) or False (best.keras)", True),
        "threads": Key(lambda v: _is_int(v) and v >= 0,
                       "a non-negative integer (0 = tensorflow's default)", 0),
        "seed": Key(_is_int, "an integer, e.g. 137", 137),
        "crop_margin": Key(_fraction, "a number in [0, 1), e.g. 0.05", 0.05),
        "time_budget_min": Key(lambda v: _number(v) and v >= 0,
                               "a non-negative number of minutes (0 = no budget)", 0),
    },
    "eval": dict(DATA_KEYS),
    "test": dict(DATA_KEYS),
    "infer": {
        "images_dir": Key(_opt_str, 'a quoted folder path, e.g. "./mini_test/images"', None),
        "output_dir": Key(_str, 'a quoted folder path, e.g. "./mini_test_output"', "./mini_test_output"),
    },
    "mask": {
        "blur": Key(_bool, "True or False", False),
        "blur_size": Key(_pair, "a tuple of two odd positive integers, e.g. (3,3)", (3, 3)),
        "binarize": Key(_bool, "True or False", True),
        "threshold": Key(lambda v: _is_int(v) and 0 <= v <= 255, "an integer in 0..255, e.g. 127", 127),
    },
}
SECTIONS["segmentation"] = dict(SECTIONS["mask"])
OPTIONAL_SECTIONS = ("eval", "test", "infer", "mask", "segmentation")


class ConfigError(ValueError):
    """The config file is malformed; the message names file, section, key and the accepted form."""


def _fail(path: Path, section: str, key: str | None, problem: str) -> ConfigError:
    where = f"[{section}]" + (f" {key}" if key else "")
    return ConfigError(f"{path}: {where}: {problem}")


def _parse_value(path: Path, section: str, key: str, raw: str, spec: Key) -> Any:
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError) as error:
        problem = f"cannot read {raw.strip()!r} as a literal ({error.__class__.__name__})"
        raise _fail(path, section, key, f"{problem}; expected {spec.form}") from None
    if not spec.check(value):
        raise _fail(path, section, key, f"got {value!r}; expected {spec.form}")
    return value


def _parse_section(path: Path, name: str, items: dict[str, str]) -> dict[str, Any]:
    spec = SECTIONS[name]
    for key in items:
        if key not in spec:
            raise _fail(path, name, key, f"unknown key (accepted: {', '.join(spec)})")
    values = {}
    for key, key_spec in spec.items():
        if key in items:
            values[key] = _parse_value(path, name, key, items[key], key_spec)
        elif key_spec.default is REQUIRED:
            raise _fail(path, name, key, f"missing required key; expected {key_spec.form}")
        else:
            values[key] = key_spec.default
    return values


def read_ini(path: Path) -> configparser.ConfigParser:
    """The raw INI (keys case-sensitive, `#` and `;` comments, no interpolation)."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    parser.optionxform = str  # keep the key names as written
    try:
        with path.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except configparser.Error as error:
        raise ConfigError(f"{path}: not a valid INI file: {error}") from None
    return parser


def load_config(path: str | Path) -> dict[str, dict[str, Any]]:
    """Parse `path` into section -> key -> value, defaults filled in; optional sections that are
    absent get their defaults (the data keys of `[eval]`/`[test]` are then None).

    Raises:
        ConfigError: see the module docstring. FileNotFoundError: no such file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    parser = read_ini(path)
    for section in parser.sections():
        if section not in SECTIONS:
            raise _fail(path, section, None, f"unknown section (accepted: {', '.join(SECTIONS)})")
    config = {}
    for name in SECTIONS:
        if name not in parser and name not in OPTIONAL_SECTIONS:
            raise _fail(path, name, None, "missing required section")
        items = dict(parser[name]) if name in parser else {}
        config[name] = _parse_section(path, name, items)
    _check_data(path, config)
    return config


def _check_data(path: Path, config: dict[str, dict[str, Any]]) -> None:
    """[train] needs a data source: images_dir + masks_dir, or dataset + data_root + split_csv."""
    for name in ("train", "eval", "test"):
        section = config[name]
        folders = section["images_dir"] is not None
        if folders and section["masks_dir"] is None:
            raise _fail(path, name, "masks_dir", "images_dir is set, so masks_dir is required")
        if section["dataset"] is not None and (section["data_root"] is None or section["split_csv"] is None):
            raise _fail(path, name, "data_root", 'dataset is set, so data_root and split_csv are required')
        if name == "train" and not folders and section["dataset"] is None:
            raise _fail(path, name, "images_dir", 'give images_dir + masks_dir, or dataset = "cdd-cesm" + '
                                                  "data_root + split_csv")


def has_data(section: dict[str, Any]) -> bool:
    """Whether a [train]/[eval]/[test] section names a data source."""
    return section["images_dir"] is not None or section["dataset"] is not None


def architecture(config: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`mammo.models.keras_unet.build_unet` keywords from the [model] section."""
    m = config["model"]
    return {"height": m["image_height"], "width": m["image_width"], "channels": m["image_channels"],
            "num_classes": m["num_classes"], "base_filters": m["base_filters"],
            "base_kernels": tuple(m["base_kernels"]), "num_layers": m["num_layers"],
            "dilation": tuple(m["dilation"]), "dropout_rate": m["dropout_rate"]}
