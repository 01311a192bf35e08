"""Each source from its published layout (small fixtures written here, a few generated images
each) to a manifest with the right images, captions, splits and counts; subsets and resizing;
--download failing fast offline and working against a local server; and a COCO-layout folder
trained through `accelerate launch` with the offline default, shown by the dashboard."""

from __future__ import annotations

import csv
import functools
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data.manifest import load_manifest
from data.prepare import prepare
from data.sources import cc, coco, flickr
from data.sources.download import DownloadUnavailable

ROOT = Path(__file__).resolve().parents[1]


def photo(path: Path, seed: int = 0, size=(48, 36)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def run(tmp_path, *argv, name="ds") -> tuple:
    prepare([*map(str, argv), "--data-dir", str(tmp_path / "data"), "--name", name, "--workers", "1"])
    folder = tmp_path / "data" / name
    return load_manifest(folder), json.loads((folder / "report.json").read_text())


def per_image(m, column="split") -> dict:
    return m.drop_duplicates("image_id").set_index("image_id")[column].to_dict()


# ------------------------------------------------------------------------- COCO


def write_coco_2017(root: Path, n_train=4, n_val=2, size=(48, 36)) -> list[Path]:
    """annotations/captions_{train,val}2017.json + train2017/, val2017/; five captions per image."""
    files, ann_id = [], 0
    for split, n, first in (("train", n_train, 1), ("val", n_val, 100)):
        images, annotations = [], []
        for k in range(n):
            image_id = first + k
            name = f"{image_id:012d}.jpg"
            photo(root / f"{split}2017" / name, seed=image_id, size=size)
            images.append({"id": image_id, "file_name": name, "width": size[0], "height": size[1]})
            for j in range(5):
                ann_id += 1
                annotations.append({"id": ann_id, "image_id": image_id, "caption": f"{split} image {image_id} no {j}"})
        if split == "train":  # an annotation of an image the file does not list
            annotations.append({"id": 999, "image_id": 424242, "caption": "a caption of nothing"})
        path = root / "annotations" / f"captions_{split}2017.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"info": {}, "images": images, "annotations": annotations}))
        files.append(path)
    return files


def test_coco_2017_official_annotations(tmp_path):
    files = write_coco_2017(tmp_path / "coco")
    m, report = run(tmp_path, "coco", "--captions", *files, "--images", tmp_path / "coco")
    assert m.image_id.nunique() == 6 and len(m) == 30  # five captions per image, five rows
    assert m.groupby("image_id").size().eq(5).all()
    assert per_image(m) == {**{f"{i:012d}": "train" for i in (1, 2, 3, 4)}, **{f"{i:012d}": "val" for i in (100, 101)}}
    first = m[m.image_id == "000000000001"]
    assert sorted(first.caption) == [f"train image 1 no {j}" for j in range(5)]
    assert first.image_path.iloc[0] == str(tmp_path / "coco" / "train2017" / "000000000001.jpg")  # used in place
    assert report["skipped"] == {"caption_without_image": 1}
    assert report["images"] == 6 and report["rows"] == 30 and report["splits"] == {"train": 4, "val": 2}


def write_karpathy(path: Path, images: list[dict]) -> Path:
    path.write_text(json.dumps({"dataset": "coco", "images": [
        {"filepath": i.get("filepath", ""), "filename": i["filename"], "split": i["split"], "cocoid": i.get("cocoid"),
         "sentences": [{"raw": s, "tokens": s.split()} for s in i["sentences"]]} for i in images]}))
    return path


def test_coco_2014_with_the_karpathy_split(tmp_path):
    root = tmp_path / "coco"
    entries, files = [], []
    for split, ids in (("train", (1, 2, 3)), ("val", (10, 11, 12, 13))):
        images, annotations = [], []
        for i in ids:
            name = f"COCO_{split}2014_{i:012d}.jpg"
            photo(root / f"{split}2014" / name, seed=i)
            images.append({"id": i, "file_name": name})
            annotations += [{"id": i * 10 + j, "image_id": i, "caption": f"photo {i} caption {j}"} for j in range(5)]
        files.append(root / f"captions_{split}2014.json")
        files[-1].write_text(json.dumps({"images": images, "annotations": annotations}))
    karpathy_split = {1: "train", 2: "train", 3: "train", 10: "restval", 11: "val", 12: "test", 13: "test"}
    for i, split in karpathy_split.items():
        folder = "train2014" if i < 10 else "val2014"
        entries.append({"filepath": folder, "filename": f"COCO_{folder}_{i:012d}.jpg", "split": split, "cocoid": i,
                        "sentences": [f"photo {i} caption {j}" for j in range(5)]})
    split_file = write_karpathy(tmp_path / "dataset_coco.json", entries)
    expected = {f"COCO_{'train' if i < 10 else 'val'}2014_{i:012d}": {"restval": "train"}.get(s, s)
                for i, s in karpathy_split.items()}

    m, report = run(tmp_path, "coco", "--captions", *files, "--images", root, "--split-file", split_file)
    assert per_image(m) == expected and len(m) == 35
    assert report["skipped"] == {}
    # The Karpathy file alone is a captions file too: same images, captions and splits.
    k, _ = run(tmp_path, "coco", "--captions", split_file, "--images", root, name="karpathy")
    assert per_image(k) == expected
    assert sorted(zip(k.image_id, k.caption)) == sorted(zip(m.image_id, m.caption))


# ------------------------------------------------------------------------- Flickr


def flickr_images(folder: Path, n: int) -> list[str]:
    return [photo(folder / f"{1000 + i}_abc{i}.jpg", seed=i).name for i in range(n)]


def test_flickr8k_token_file_with_official_split_lists(tmp_path):
    names = flickr_images(tmp_path / "Flicker8k_Dataset", 6)
    token = tmp_path / "Flickr8k.token.txt"
    token.write_text("".join(f"{n}#{j}\tA dog runs number {j} in {n} .\n" for n in names for j in range(5)))
    lists = []
    for split, chosen in (("train", names[:3]), ("dev", names[3:4]), ("test", names[4:5])):
        lists.append(tmp_path / f"Flickr_8k.{split}Images.txt")
        lists[-1].write_text("\n".join(chosen) + "\n")
    m, report = run(tmp_path, "flickr", "--captions", token, "--images", tmp_path / "Flicker8k_Dataset",
                    "--split-file", *lists)
    stem = [Path(n).stem for n in names]
    assert per_image(m) == {stem[0]: "train", stem[1]: "train", stem[2]: "train", stem[3]: "val", stem[4]: "test"}
    assert len(m) == 25 and set(m[m.image_id == stem[0]].caption) == {f"A dog runs number {j} in {names[0]} ."
                                                                        for j in range(5)}
    assert report["skipped"] == {"not_in_split_file": 1}  # the sixth image is in no list


def test_flickr8k_captions_csv(tmp_path):
    names = flickr_images(tmp_path / "Images", 5)
    with open(tmp_path / "captions.txt", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        for n in names:
            w.writerows([[n, f"A child, in pink, climbs stairs {j} ."] for j in range(5)])
    m, report = run(tmp_path, "flickr", "--captions", tmp_path / "captions.txt", "--images", tmp_path / "Images")
    assert m.image_id.nunique() == 5 and len(m) == 25
    assert "A child, in pink, climbs stairs 0 ." in set(m.caption)
    assert set(m.split) <= {"train", "val"} and report["skipped"] == {}
    again, _ = run(tmp_path, "flickr", "--captions", tmp_path / "captions.txt", "--images", tmp_path / "Images",
                   name="again")
    assert per_image(again) == per_image(m)  # the hash split is deterministic


def test_flickr30k_results_csv_with_its_broken_line_and_karpathy_split(tmp_path):
    names = flickr_images(tmp_path / "flickr30k_images", 4)
    lines = ["image_name| comment_number| comment"]
    lines += [f"{n}| {j}| Two young guys {j} near {n} ." for n in names for j in range(5)]
    lines[7] = lines[7].replace("| 1|", "| 1")  # results.csv really has one line with a separator missing
    (tmp_path / "results.csv").write_text("\n".join(lines) + "\n")
    split = write_karpathy(tmp_path / "dataset_flickr30k.json", [
        {"filename": n, "split": s, "sentences": ["unused"]} for n, s in zip(names, ("train", "train", "val", "test"))])
    m, report = run(tmp_path, "flickr", "--captions", tmp_path / "results.csv",
                    "--images", tmp_path / "flickr30k_images", "--split-file", split)
    assert len(m) == 19 and report["skipped"] == {"malformed_row": 1}
    assert list(per_image(m).values()) == ["train", "train", "val", "test"]
    assert m.caption.str.startswith("Two young guys").all()  # caption only, not the number


# ------------------------------------------------------------------------- your own table


def test_open_clip_csv_needs_no_options(tmp_path):
    root = tmp_path / "photos"
    rows = [("a/one.jpg", "the first one"), ("a/two.jpg", "the second one"), ("b/three.jpg", "the third one")]
    for i, (path, _) in enumerate(rows):
        photo(root / path, seed=i)
    (tmp_path / "train.csv").write_text("filepath\ttitle\n" + "".join(f"{p}\t{t}\n" for p, t in rows))
    m, report = run(tmp_path, "csv", "--file", tmp_path / "train.csv", "--images-root", root)
    assert list(zip(m.image_id, m.caption)) == rows
    assert m.image_path.tolist() == [str(root / p) for p, _ in rows] and report["skipped"] == {}


def test_csv_with_named_split_and_label_columns(tmp_path):
    rows = [(f"img{i}.png", f"shape {i}", ["training", "validation", "test"][i % 3], ["cat", "dog"][i % 2])
            for i in range(6)]
    for i, row in enumerate(rows):
        photo(tmp_path / row[0], seed=i)
    with open(tmp_path / "mine.csv", "w", newline="") as f:
        csv.writer(f).writerows([("picture", "words", "part", "kind"), *rows])
    m, _ = run(tmp_path, "csv", "--file", tmp_path / "mine.csv", "--image-column", "picture", "--caption-column",
               "words", "--split-column", "part", "--label-column", "kind")
    assert list(m.split) == ["train", "val", "test"] * 2 and list(m.label) == ["cat", "dog"] * 3
    with pytest.raises(ValueError, match="no column 'nope'"):
        run(tmp_path, "csv", "--file", tmp_path / "mine.csv", "--image-column", "nope")


def test_hugging_face_imagefolder_metadata_jsonl(tmp_path):
    folder = tmp_path / "imagefolder"
    records = [{"file_name": f"pics/{i}.jpg", "text": f"caption {i}"} for i in range(4)]
    records.append({"file_name": "pics/4.jpg", "text": ["two captions", "of one image"]})
    for i in range(5):
        photo(folder / "pics" / f"{i}.jpg", seed=i)
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + "{not json\n")
    m, report = run(tmp_path, "jsonl", "--file", folder / "metadata.jsonl")
    assert m.image_id.nunique() == 5 and len(m) == 6
    assert set(m[m.image_id == "pics/4.jpg"].caption) == {"two captions", "of one image"}
    assert report["skipped"] == {"malformed_row": 1}


# ------------------------------------------------------------------------- Conceptual Captions


def write_img2dataset_folder(out: Path, n: int = 6) -> None:
    """img2dataset's output_format 'files': shard folders of KEY.jpg, KEY.txt, KEY.json."""
    for i in range(n + 1):
        shard, key = out / f"{i // 4:05d}", f"{i:09d}"
        shard.mkdir(parents=True, exist_ok=True)
        meta = {"url": f"https://example.com/{i}.jpg", "key": key, "status": "success", "caption": f"cc caption {i}"}
        if i == n:  # a failed download: only its status json
            meta.update(status="failed_to_download", caption=None)
        else:
            photo(shard / f"{key}.jpg", seed=i)
            (shard / f"{key}.txt").write_text(f"cc caption {i}")
        (shard / f"{key}.json").write_text(json.dumps(meta))
    (out / "00000.parquet").write_bytes(b"")  # img2dataset's per-shard table: not an image


def test_conceptual_captions_reads_an_img2dataset_folder(tmp_path):
    write_img2dataset_folder(tmp_path / "cc3m")
    m, report = run(tmp_path, "cc", "--images", tmp_path / "cc3m")
    assert sorted(m.image_id) == [f"{i:09d}" for i in range(6)]
    assert dict(zip(m.image_id, m.caption))["000000004"] == "cc caption 4"
    assert report["skipped"] == {}


# ------------------------------------------------------------------------- subsets and resizing


def test_subsets_are_seeded_by_image_and_nested(tmp_path):
    files = write_coco_2017(tmp_path / "coco", n_train=8, n_val=4)
    args = ("coco", "--captions", *files, "--images", tmp_path / "coco")
    three, _ = run(tmp_path, *args, "--max-images", 3, name="three")
    five, _ = run(tmp_path, *args, "--max-images", 5, name="five")
    half, _ = run(tmp_path, *args, "--fraction", 0.5, name="half")
    assert three.image_id.nunique() == 3 and len(three) == 15  # every caption of a chosen image comes along
    assert set(three.image_id) < set(five.image_id)
    assert half.image_id.nunique() == 6
    again, _ = run(tmp_path, *args, "--max-images", 3, name="again")
    assert set(again.image_id) == set(three.image_id)
    other, _ = run(tmp_path, *args, "--max-images", 6, "--seed", 1, name="other")
    assert set(other.image_id) != set(half.image_id)


def test_a_bad_image_in_a_subset_is_replaced_by_the_next(tmp_path):
    files = write_coco_2017(tmp_path / "coco", n_train=6, n_val=0)
    args = ("coco", "--captions", files[0], "--images", tmp_path / "coco")
    first, _ = run(tmp_path, *args, "--max-images", 2, name="first")
    (tmp_path / "coco" / "train2017" / f"{first.image_id.iloc[0]}.jpg").write_bytes(b"")
    m, report = run(tmp_path, *args, "--max-images", 2, name="second")
    assert m.image_id.nunique() == 2 and report["skipped"]["empty_file"] == 1


def test_resize_stores_small_copies_with_the_dataset(tmp_path):
    files = write_coco_2017(tmp_path / "coco", n_train=3, n_val=1, size=(120, 80))
    m, report = run(tmp_path, "coco", "--captions", *files, "--images", tmp_path / "coco", "--resize", 32)
    folder = tmp_path / "data" / "ds"
    stored = m.drop_duplicates("image_id").image_path
    assert all(Path(p).parent == folder / "images" for p in stored)
    assert {Image.open(p).size for p in stored} == {(48, 32)}  # shortest side 32, aspect kept
    assert report["resize"] == 32 and report["fixed"] == {}
    assert pd.read_parquet(folder / "manifest.parquet").image_path.str.startswith("images/").all()  # movable


# ------------------------------------------------------------------------- downloads


def test_download_fails_fast_and_clearly_offline(tmp_path, monkeypatch):
    nowhere = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once
    monkeypatch.setitem(coco.ARCHIVES, "2017", [f"{nowhere}/annotations.zip"])
    monkeypatch.setattr(flickr, "FLICKR8K", [f"{nowhere}/Flickr8k_Dataset.zip"])
    t0 = time.time()
    with pytest.raises(DownloadUnavailable, match="needs the network.*Offline, download"):
        run(tmp_path, "coco", "--download", "--images", tmp_path / "coco")
    with pytest.raises(DownloadUnavailable, match="needs the network.*Flickr_8k.trainImages.txt"):
        run(tmp_path, "flickr", "--download", "--images", tmp_path / "flickr")
    with pytest.raises(DownloadUnavailable, match="request form"):
        run(tmp_path, "flickr", "--download", "--variant", "30k", "--images", tmp_path / "flickr")
    (tmp_path / "cc.tsv").write_text(f"a caption\t{nowhere}/1.jpg\n")
    monkeypatch.setattr(cc.shutil, "which", lambda name: None)
    with pytest.raises(DownloadUnavailable, match="pip install img2dataset"):
        run(tmp_path, "cc", "--download", "--tsv", tmp_path / "cc.tsv", "--images", tmp_path / "cc")
    monkeypatch.setattr(cc.shutil, "which", lambda name: "/usr/bin/true")
    with pytest.raises(DownloadUnavailable, match="needs the network"):
        run(tmp_path, "cc", "--download", "--tsv", tmp_path / "cc.tsv", "--images", tmp_path / "cc")
    assert time.time() - t0 < 10
    assert not (tmp_path / "data").exists()  # nothing half-prepared


def test_download_fetches_and_unpacks_the_archives(tmp_path, monkeypatch):
    served = tmp_path / "server"
    layout = tmp_path / "layout"
    write_coco_2017(layout, n_train=2, n_val=1)
    served.mkdir()
    for archive, parts in (("annotations_trainval2017.zip", ["annotations"]), ("train2017.zip", ["train2017"]),
                           ("val2017.zip", ["val2017"])):
        with zipfile.ZipFile(served / archive, "w") as z:
            for part in parts:
                for f in (layout / part).iterdir():
                    z.write(f, f"{part}/{f.name}")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setitem(coco.ARCHIVES, "2017", [f"{base}/{a}" for a in sorted(os.listdir(served))])
    try:
        m, _ = run(tmp_path, "coco", "--download", "--images", tmp_path / "coco")
    finally:
        server.shutdown()
    assert m.image_id.nunique() == 3 and len(m) == 15
    assert (tmp_path / "coco" / "archives" / "train2017.zip").exists()


# ------------------------------------------------------------------------- end to end


def test_a_coco_folder_trains_through_accelerate_and_shows_in_the_dashboard(tmp_path, monkeypatch):
    files = write_coco_2017(tmp_path / "coco", n_train=6, n_val=3, size=(96, 64))
    prepare(["coco", "--captions", *map(str, files), "--images", str(tmp_path / "coco"), "--resize", "64",
             "--data-dir", str(tmp_path / "data"), "--name", "coco", "--workers", "1"])
    runs = tmp_path / "runs"
    accelerate = Path(sys.executable).with_name("accelerate")
    done = subprocess.run(
        [str(accelerate), "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "training/train.py", "--data", str(tmp_path / "data" / "coco"),
         "--model", "offline-default", "--only", "heads-only", "--seeds", "1", "--set", "epochs=1", "batch_size=4",
         "--runs-dir", str(runs), "--cache-dir", str(tmp_path / "cache")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    from core import run_store

    run_ = run_store.load_run(run_store.run_dir(runs, "default", "heads-only.s0"))
    assert run_.state == "FINISHED" and run_.config["model"] == "offline-default"

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CLIP_RUNS_DIR", str(runs))
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    at.query_params["view"] = "Runs"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert list(at.dataframe[0].value.index) == ["default/heads-only.s0"]
    assert "FINISHED" in "\n".join(str(e.value) for e in (*at.markdown, *at.caption))
