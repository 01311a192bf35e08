"""Data preparation: the manifest contract, the openmoji split by concept, clear errors."""

import pandas as pd
import pytest

from data.manifest import COLUMNS, DatasetNotFound, load_manifest
from data.prepare import prepare
from data.sources import openmoji

SKIN_TONES = {"1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"}
HAIR = {"1F9B0", "1F9B1", "1F9B2", "1F9B3"}


def test_synthetic_manifest(synthetic_data):
    m = load_manifest(synthetic_data)
    assert list(m.columns[: len(COLUMNS)]) == COLUMNS
    assert m.image_id.nunique() == 48 and len(m) == 96  # two captions per image
    assert m.groupby("image_id").split.nunique().max() == 1
    assert set(m.split) == {"train", "val"}
    assert all(p.endswith(".png") for p in m.image_path)


def test_missing_dataset_names_the_fix(tmp_path):
    with pytest.raises(DatasetNotFound, match="python data/prepare.py"):
        load_manifest("no-such-dataset", data_dir=tmp_path)


def test_base_concept_groups_variants():
    b = openmoji.base_concept
    assert b("woman technologist: medium skin tone") == b("man technologist") == b("technologist")
    assert b("family: man, woman, boy") == b("family: woman, girl") == "family"
    assert b("flag: France") != b("flag: Japan")
    assert b("old man") == b("older person")


def test_base_emoji_strips_modifiers():
    assert openmoji.base_emoji("1F469-1F3FD-200D-1F4BB") == "1F469-200D-1F4BB"  # technologist, skin tone
    assert openmoji.base_emoji("1F468-200D-1F9B0") == "1F468"  # man: red hair
    assert openmoji.base_emoji("2764-FE0F") == "2764"


def _toneless(codepoints):
    return "-".join(x for x in codepoints.split("-") if x not in SKIN_TONES | HAIR | {"FE0F", "200D"})


@pytest.mark.parametrize("split_by", ["base", "concept"])
def test_openmoji_split_keeps_every_variant_together(split_by):
    cat = openmoji.catalogue()
    assert len(cat) > 3500  # about 4,000 emoji with Unicode names
    cat["split"] = openmoji.assign_splits(cat, 0.2, 0, split_by)
    val = cat[cat.split == "val"]
    assert 0.1 < len(val) / len(cat) < 0.35
    # Independent of the key functions: stripping skin tones, hair and presentation
    # selectors, no emoji sequence has forms in both splits.
    assert cat.groupby(cat.codepoints.map(_toneless)).split.nunique().max() == 1
    if split_by == "concept":  # gendered forms too: no validation name (before ':') in training
        heads = lambda s: {h for h in s.str.split(": ").str[0] if h not in ("flag", "keycap")}  # noqa: E731
        assert not heads(val.caption) & heads(cat[cat.split == "train"].caption)


def test_openmoji_prepare_subset(tmp_path):
    prepare(["openmoji", "--max-images", "40", "--size", "64", "--data-dir", str(tmp_path), "--workers", "1"])
    m = load_manifest(tmp_path / "openmoji")
    assert len(m) == 40 and m.image_id.is_unique
    assert set(m.label) <= {"Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink",
                            "Travel & Places", "Activities", "Objects", "Symbols", "Flags"}
    report = pd.read_json(tmp_path / "openmoji" / "report.json", typ="series")
    assert report["images"] == 40 and "OpenMoji" in report["attribution"]
    from PIL import Image
    with Image.open(m.image_path.iloc[0]) as img:
        assert img.size == (64, 64)


def test_preparation_reports_shared_captions_and_identical_images(tmp_path):
    """A caption shared word for word by two images, and two byte-identical image files,
    are counted per split with examples in report.json."""
    from PIL import Image

    from data.manifest import duplicates

    for name, colour in (("a", "red"), ("b", "red"), ("c", "blue"), ("d", "green")):
        Image.new("RGB", (8, 8), colour).save(tmp_path / f"{name}.png")
    frame = pd.DataFrame(dict(image_id=list("abcd"), image_path=[f"{n}.png" for n in "abcd"],
                              caption=["a red square", "a red box", "a shape", "a shape"],
                              split=["train", "val", "val", "val"], label=""))
    found = duplicates(frame, tmp_path)
    assert found["shared_captions"] == 1 and found["shared_caption_examples"] == [{"caption": "a shape", "images": 2}]
    assert found["images_with_a_shared_caption"] == {"val": 2}
    assert found["identical_image_sets"] == 1 and found["identical_image_examples"] == [["a", "b"]]
    assert found["images_in_identical_sets"] == {"train": 1, "val": 1}
    clean = duplicates(frame.assign(caption=list("wxyz")).iloc[1:], tmp_path)
    assert clean["shared_captions"] == 0 and clean["identical_image_sets"] == 0


def test_prepared_dataset_has_a_duplicates_report(synthetic_data):
    import json

    report = json.loads((synthetic_data / "report.json").read_text())
    assert {"shared_captions", "identical_image_sets"} <= set(report["duplicates"])
