"""Turn a data source into data/NAME/manifest.parquet plus the images it refers to.

    python data/prepare.py openmoji                      # the offline default (about 40 s)
    python data/prepare.py synthetic --name synthetic --n-images 48
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.manifest import DATA_DIR, write_manifest  # noqa: E402

SOURCES = ("openmoji", "synthetic")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="source", required=True, metavar="SOURCE")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", help="dataset name: writes data/NAME/ (default: the source's name)")
    common.add_argument("--data-dir", type=Path, default=DATA_DIR, help="where datasets live")
    common.add_argument("--seed", type=int, default=0, help="split and subset seed")
    common.add_argument("--val-fraction", type=float, default=0.2,
                        help="share of base emoji (openmoji) or images held out for validation")
    om = sub.add_parser("openmoji", parents=[common], help="OpenMoji emoji with Unicode names")
    om.add_argument("--size", type=int, default=224, help="render size in pixels (EfficientNet's native 224)")
    om.add_argument("--max-images", type=int, help="keep a seeded random subset of this many emoji")
    om.add_argument("--split-by", choices=["base", "concept"], default="base",
                    help="keep together the variants of one base emoji (skin tone, hair), or also "
                         "its gendered forms and family make-ups (concept)")
    om.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="render processes")
    sy = sub.add_parser("synthetic", parents=[common], help="generated shapes, for tests")
    sy.add_argument("--n-images", type=int, default=48)
    sy.add_argument("--size", type=int, default=32)
    return p


def prepare(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    name = args.name or args.source
    out_dir = Path(args.data_dir) / name
    t0 = time.time()
    if args.source == "openmoji":
        from data.sources import openmoji
        manifest, report = openmoji.prepare(out_dir, args.size, args.val_fraction, args.seed,
                                            args.workers, args.max_images, args.split_by)
    else:
        from data.sources import synthetic
        manifest, report = synthetic.prepare(out_dir, args.n_images, args.size, args.val_fraction, args.seed)
    report["seconds"] = round(time.time() - t0, 2)
    path = write_manifest(manifest, out_dir, report)
    splits = manifest.drop_duplicates("image_id")["split"].value_counts().to_dict()
    print(f"wrote {path}: {len(manifest)} rows, {manifest['image_id'].nunique()} images, "
          f"splits {splits}, skipped {json.dumps(report.get('skipped', {}))}, {report['seconds']} s")
    return path


def main(argv: list[str] | None = None) -> int:
    prepare(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
