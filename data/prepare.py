"""Turn a data source into data/NAME/manifest.parquet plus the images it refers to.

    python data/prepare.py openmoji                      # the offline default (about 40 s): train/val/test by concept
    python data/prepare.py synthetic --name synthetic --n-images 48
    python data/prepare.py coco --captions annotations/captions_train2017.json annotations/captions_val2017.json \
        --images coco --name coco --resize 256
    python data/prepare.py flickr --captions Flickr8k.token.txt --images Flicker8k_Dataset --name flickr8k \
        --split-file Flickr_8k.trainImages.txt Flickr_8k.devImages.txt Flickr_8k.testImages.txt
    python data/prepare.py csv --file train.csv --images-root photos --name mine     # open_clip layout
    python data/prepare.py jsonl --file photos/metadata.jsonl --name mine            # HF imagefolder layout
    python data/prepare.py cc --images cc3m --name cc3m [--tsv Train_GCC-training.tsv --download]

Every image is opened once here: repairable ones are fixed, unusable ones skipped, and the
skip counts by reason are printed at the end and written to data/NAME/report.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from data.manifest import DATA_DIR, duplicate_lines, write_manifest
from data.sources.skips import summary_lines

# The offline default's prepared datasets, by name, and how each is split: the honest split, and
# the leaky one kept for the lesson. train.py prepares them on first use and refuses a copy
# prepared otherwise; this parser's openmoji defaults are the honest one's.
OPENMOJI_SPLITS = {"openmoji": {"split_by": "concept", "test_fraction": 0.2},
                   "openmoji-leaky": {"split_by": "base", "test_fraction": 0.0}}


def openmoji_argv(name: str) -> list[str]:
    """The prepare command line (after `python data/prepare.py`) of one of OPENMOJI_SPLITS."""
    split = OPENMOJI_SPLITS[name]
    return ["openmoji", "--split-by", split["split_by"], "--test-fraction", f"{split['test_fraction']:g}",
            "--name", name]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="source", required=True, metavar="SOURCE")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", help="dataset name: writes data/NAME/ (default: the source's name)")
    common.add_argument("--data-dir", type=Path, default=DATA_DIR, help="where datasets live")
    common.add_argument("--seed", type=int, default=0, help="split and subset seed")
    common.add_argument("--val-fraction", type=float, default=0.2,
                        help="share of concepts (openmoji) or images held out for validation")
    om = sub.add_parser("openmoji", parents=[common], help="OpenMoji emoji with Unicode names")
    add_test_fraction(om, OPENMOJI_SPLITS["openmoji"]["test_fraction"], "concepts")
    om.add_argument("--size", type=int, default=224, help="render size in pixels (EfficientNet's native 224)")
    om.add_argument("--max-images", type=int, help="keep a seeded random subset of this many emoji")
    om.add_argument("--split-by", choices=["concept", "base"], default=OPENMOJI_SPLITS["openmoji"]["split_by"],
                    help="keep together an emoji's variants, gendered forms and family make-ups (concept), or "
                         "only the variants of one base emoji (base: leaks, 'man running facing right' in "
                         "validation, 'person running' in training; kept for comparison)")
    om.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="render processes")
    sy = sub.add_parser("synthetic", parents=[common], help="generated shapes, for tests")
    add_test_fraction(sy, 0.0, "images")
    sy.add_argument("--n-images", type=int, default=48)
    sy.add_argument("--size", type=int, default=32)
    add_caption_sources(sub, common)
    return p


def add_test_fraction(parser: argparse.ArgumentParser, default: float, of: str) -> None:
    """Per source, not in `common`: the default differs, and parents share their actions."""
    parser.add_argument("--test-fraction", type=float, default=default,
                        help=f"share of {of} held out for test, where the source gives no split of its own "
                             f"(default {default:g}); validation is the same whatever this is")


def add_caption_sources(sub, common: argparse.ArgumentParser) -> None:
    """The sources of real photos with captions, which share subset, resize and checking options."""
    photos = argparse.ArgumentParser(add_help=False, parents=[common])
    add_test_fraction(photos, 0.0, "images")
    photos.add_argument("--max-images", type=int, help="keep this many images (seeded by image, all their captions)")
    photos.add_argument("--fraction", type=float, help="keep this share of the images (seeded by image)")
    photos.add_argument("--resize", type=int, metavar="N",
                        help="store every image with its shortest side at N pixels (fast loading); "
                             "default: use images where they lie, store only repaired ones")
    photos.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="image-checking processes")
    split_file = dict(type=Path, nargs="+", default=[], metavar="FILE",
                      help="official split: a Karpathy dataset_*.json, or Flickr8k's per-split image lists")
    co = sub.add_parser("coco", parents=[photos], help="COCO captions (2014/2017, Karpathy split)")
    co.add_argument("--captions", type=Path, nargs="+", metavar="FILE",
                    help="captions_{train,val}YEAR.json and/or dataset_coco.json")
    co.add_argument("--images", type=Path, required=True, help="folder of the images (or of train2017/, val2017/)")
    co.add_argument("--split-file", **split_file)
    co.add_argument("--download", action="store_true", help="fetch the official archives into --images first")
    co.add_argument("--year", choices=["2014", "2017"], default="2017", help="which archives --download fetches")
    fl = sub.add_parser("flickr", parents=[photos], help="Flickr8k / Flickr30k")
    fl.add_argument("--captions", type=Path, metavar="FILE",
                    help="Flickr8k.token.txt, captions.txt, results.csv or dataset_flickr*.json")
    fl.add_argument("--images", type=Path, required=True, help="image folder (--download: where to put it)")
    fl.add_argument("--split-file", **split_file)
    fl.add_argument("--download", action="store_true", help="fetch Flickr8k's archives into --images first")
    fl.add_argument("--variant", choices=["8k", "30k"], default="8k", help="which set --download fetches")
    for kind in ("csv", "jsonl"):
        tb = sub.add_parser(kind, parents=[photos], help=f"your own {kind.upper()} of image path + caption")
        tb.add_argument("--file", type=Path, required=True, help="the table")
        tb.add_argument("--images-root", type=Path, help="image paths are relative to it (default: the table's folder)")
        for column in ("image", "caption", "split", "label"):
            tb.add_argument(f"--{column}-column", help=f"column of the {column} (default: found by common names)")
        if kind == "csv":
            tb.add_argument("--separator", help="field separator (default: tab if the header has one, else comma)")
    cc = sub.add_parser("cc", parents=[photos], help="Conceptual Captions via img2dataset")
    cc.add_argument("--images", type=Path, required=True, help="img2dataset output folder (written by --download)")
    cc.add_argument("--tsv", type=Path, help="the Conceptual Captions TSV (caption, url) that --download fetches")
    cc.add_argument("--download", action="store_true", help="run img2dataset on --tsv into --images first")


def prepare(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    name = args.name or args.source
    out_dir = Path(args.data_dir) / name
    t0 = time.time()
    if args.source == "openmoji":
        from data.sources import openmoji
        manifest, report = openmoji.prepare(out_dir, args.size, args.val_fraction, args.seed,
                                            args.workers, args.max_images, args.split_by, args.test_fraction)
    elif args.source == "synthetic":
        from data.sources import synthetic
        manifest, report = synthetic.prepare(out_dir, args.n_images, args.size, args.val_fraction, args.seed,
                                             test_fraction=args.test_fraction)
    else:
        manifest, report = prepare_captioned(args, out_dir)
    report["seconds"] = round(time.time() - t0, 2)
    path = write_manifest(manifest, out_dir, report)
    splits = manifest.drop_duplicates("image_id")["split"].value_counts().to_dict()
    print(f"wrote {path}: {len(manifest)} rows, {manifest['image_id'].nunique()} images, "
          f"splits {splits}, {report['seconds']} s")
    lines = summary_lines(report) + duplicate_lines(report["duplicates"])
    if "leaks" in report:
        from data.sources.openmoji import leak_lines
        lines += leak_lines(report["leaks"], report["split_by"])
    print("\n".join(lines))
    return path


def read_source(args, log):
    """(caption rows, every image the source has) from the chosen source's own layout."""
    if args.source == "coco":
        from data.sources import coco
        captions = coco.download(args.images, args.year) if args.download else args.captions
        if not captions:
            raise SystemExit("coco needs --captions FILE ... (or --download)")
        return coco.read(captions, args.images, args.split_file, log)
    if args.source == "flickr":
        from data.sources import flickr
        captions, images, split_files = args.captions, args.images, args.split_file
        if args.download:
            captions, images, downloaded_splits = flickr.download(args.images, args.variant)
            split_files = split_files or downloaded_splits
        if not captions:
            raise SystemExit("flickr needs --captions FILE (or --download)")
        return flickr.read(captions, images, split_files, log)
    if args.source in ("csv", "jsonl"):
        from data.sources import table
        columns = dict(image_column=args.image_column, caption_column=args.caption_column,
                       split_column=args.split_column, label_column=args.label_column)
        if args.source == "csv":
            return table.read_csv(args.file, args.images_root, log, args.separator, **columns)
        return table.read_jsonl(args.file, args.images_root, log, **columns)
    from data.sources import cc
    if args.download:
        if not args.tsv:
            raise SystemExit("cc --download needs --tsv FILE (the Conceptual Captions TSV)")
        cc.download(args.tsv, args.images, args.workers, args.resize or 512)
    return cc.read(args.images, log)


def prepare_captioned(args, out_dir: Path):
    """Read a source of photos with captions, check every image, and build the manifest."""
    from data.sources.assemble import Options, assemble
    from data.sources.skips import SkipLog

    opts = Options(val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
                   max_images=args.max_images,
                   fraction=args.fraction, resize=args.resize, workers=args.workers)
    log = SkipLog()
    rows, all_images = read_source(args, log)
    manifest = assemble(rows, out_dir, opts, log, all_images)
    inputs = {k: [str(x) for x in v] if isinstance(v, list) else str(v) for k, v in vars(args).items()
              if isinstance(v, (Path, list)) and v}
    report = dict(source=args.source, inputs=inputs, images=int(manifest["image_id"].nunique()),
                  rows=len(manifest), splits=manifest.drop_duplicates("image_id")["split"].value_counts().to_dict(),
                  resize=args.resize, max_images=args.max_images, fraction=args.fraction, seed=args.seed,
                  val_fraction=args.val_fraction, test_fraction=args.test_fraction, **log.to_report())
    return manifest, report


def main(argv: list[str] | None = None) -> int:
    from data.sources.download import DownloadUnavailable

    try:
        prepare(argv)
    except (DownloadUnavailable, FileNotFoundError, ValueError) as e:  # bad input: say so, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
