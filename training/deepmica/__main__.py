"""`python -m training.deepmica {pseudo,roi,measure,export-roi} --config training/configs/deepmica_seg.yaml`.

The patch UNet itself trains with the shared engine:
    python -m training.train --config training/configs/deepmica_seg.yaml   (--resume runs/deepmica-seg)
    python -m training.export runs/deepmica-seg --name deepmica-seg --pipeline deepmica

- pseudo: pictures of every pseudo-mask (enhanced crop | pseudo-mask in red, circle in green) into
  runs/deepmica-seg/pseudo/, to check them by eye before training.
- roi: the ROI classifier (`training.deepmica.roi`) -> runs/deepmica-classifier/.
- export-roi: that classifier into weights/ and the manifest as "deepmica-classifier".
- measure: cluster detection on a held-out split (`training.deepmica.measure`), learned vs classical.
- record: add two measure JSONs (--val, --test) to the deepmica-seg manifest entry's metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_CONFIG = "training/configs/deepmica_seg.yaml"


def pseudo_pictures(config, out: Path, splits: tuple[str, ...] = ("train", "val", "test")) -> int:
    """One PNG per annotated circle: 2 x 128 px around it, enhanced film | overlay. Returns the count."""
    import cv2
    import numpy as np

    from training.deepmica.data import load_films, patch_at

    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for split in splits:
        for film in load_films(config, split, normal_limit=0):
            for k, (r, c, rad) in enumerate(film.circles):
                side = int(max(96, 2.6 * rad))
                top, left = int(r) - side // 2, int(c) - side // 2
                grey = (patch_at(film.enhanced, top, left, side) * 255).astype(np.uint8)
                pseudo = patch_at(film.pseudo.astype(np.uint8), top, left, side).astype(bool)
                overlay = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
                overlay[pseudo] = (255, 40, 40)
                cv2.circle(overlay, (side // 2, side // 2), int(rad), (40, 220, 40), 1)
                panel = np.concatenate([cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB), overlay], axis=1)
                panel = cv2.resize(panel, None, fx=512 / side, fy=512 / side, interpolation=cv2.INTER_NEAREST)
                name = f"{split}_{film.image_id}_{k}_{film.pathology[k]}_{int(pseudo.sum())}px.png"
                cv2.imwrite(str(out / name), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
                n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.deepmica", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("pseudo", "roi", "measure", "export-roi", "record"))
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--split", default="val", choices=("val", "test"), help="measure: the held-out split")
    parser.add_argument("--source", default="runs", choices=("runs", "manifest"),
                        help="measure: the run folders' networks or the manifest's weights")
    parser.add_argument("--out", type=Path, help="output folder (pseudo, roi) or JSON file (measure)")
    parser.add_argument("--epochs", type=int, default=30, help="roi: head training epochs")
    parser.add_argument("--val", type=Path, help="record: the validation measure JSON")
    parser.add_argument("--test", type=Path, help="record: the test measure JSON")
    parser.add_argument("--threshold", type=float, help="measure: the segmenter's pixel threshold (default: the pipeline's)")
    args = parser.parse_args(argv)
    from training.config import load_config

    config = load_config(args.config)
    if args.command == "pseudo":
        out = args.out or Path(config.out_dir) / config.name / "pseudo"
        print(f"{pseudo_pictures(config, out)} pictures in {out}")
        return 0
    if args.command == "roi":
        from training.deepmica.roi import run

        report = run(config, args.out or Path(config.out_dir) / "deepmica-classifier", epochs=args.epochs)
        print(json.dumps({k: {kk: v[kk] for kk in ("mean", "ci95", "n", "n_malignant") if kk in v}
                          if isinstance(v, dict) else v for k, v in report.items()}, indent=2))
        return 0
    if args.command == "export-roi":
        from training.deepmica.export import export_classifier

        print(json.dumps(export_classifier(config, Path(config.out_dir) / "deepmica-classifier"), indent=2))
        return 0
    if args.command == "record":
        from training.deepmica.export import record_measured

        if not (args.val and args.test):
            parser.error("record needs --val and --test (measure JSON files)")
        entry = record_measured(json.loads(args.val.read_text()), json.loads(args.test.read_text()))
        print(json.dumps(entry["metrics"], indent=2))
        return 0
    from training.deepmica.export import pipeline_from
    from training.deepmica.measure import measure

    result = measure(pipeline_from(args.source, config), config, args.split, args.threshold)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
