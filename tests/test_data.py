"""Data preparation: the manifest contract, the openmoji split by concept, clear errors."""

import hashlib

import pandas as pd
import pytest

from data.manifest import COLUMNS, DatasetNotFound, load_manifest, split_of
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
    assert b("family: man, woman, boy") == b("family: woman, girl") == b("family: adult, child") == "family"
    assert b("flag: France") != b("flag: Japan")
    assert b("old man") == b("older person")
    assert b("people holding hands") == b("women holding hands") == b("woman and man holding hands")
    assert b("kiss: woman, man") == b("kiss") and b("couple with heart: man, man") == b("couple with heart")
    assert b("person in tuxedo") == b("man in tuxedo") and b("mermaid") == b("merman") == b("merperson")
    for role in ("fairy", "vampire", "zombie", "genie", "elf"):
        assert b(f"man {role}") == b(f"woman {role}: dark skin tone") == b(role)
    # Missed before: the facing-right form (the same emoji mirrored), the Claus family, gendered restrooms.
    assert b("man running facing right: medium skin tone") == b("person running") == "running"
    assert b("woman in manual wheelchair facing right") == b("person in manual wheelchair")
    assert b("Mx Claus: light skin tone") == b("Mrs. Claus") == b("Santa Claus")
    assert b("men’s room") == b("women’s room") == b("restroom")
    assert b("running shoe") != b("running")  # an object that shares a word stays its own concept


def test_split_of_without_a_test_share_is_the_old_split():
    """test_fraction=0 gives exactly the two-way split of earlier versions (written out here as
    it was), so datasets prepared before keep their splits; a test share only takes groups
    from training, never from validation; a group's split depends on its key alone."""
    def old_split_of(key, val_fraction, seed):
        u = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big") / 2**64
        return "val" if u < val_fraction else "train"

    keys = [f"img{i:05d}" for i in range(3000)] + ["1F3C3-200D-2642", "technologist", "flag: France", "é ü"]
    for val_fraction, seed in ((0.2, 0), (0.1, 3), (0.5, 1)):
        old = [old_split_of(k, val_fraction, seed) for k in keys]
        assert [split_of(k, val_fraction, seed) for k in keys] == old
        assert [split_of(k, val_fraction, seed, test_fraction=0.0) for k in keys] == old
        three = [split_of(k, val_fraction, seed, test_fraction=0.2) for k in keys]
        assert [k for k, s in zip(keys, three) if s == "val"] == [k for k, s in zip(keys, old) if s == "val"]
        assert {o for o, s in zip(old, three) if s == "test"} == {"train"}
        assert three.count("test") / len(keys) == pytest.approx(0.2, abs=0.03)
    assert split_of("a", 0.2, 0, 0.2) == split_of("a", 0.2, 0, 0.2)  # deterministic
    with pytest.raises(ValueError, match="add up to less than 1"):
        split_of("a", 0.6, 0, 0.5)


def test_a_test_share_for_sources_without_a_split(tmp_path):
    """--test-fraction holds out test images for the sources without a split of their own; by
    default only openmoji does, and validation stays the same images either way."""
    prepare(["synthetic", "--n-images", "60", "--data-dir", str(tmp_path), "--name", "two"])
    prepare(["synthetic", "--n-images", "60", "--data-dir", str(tmp_path), "--name", "three",
             "--test-fraction", "0.3"])
    two, three = (load_manifest(tmp_path / n).drop_duplicates("image_id").set_index("image_id").split
                  for n in ("two", "three"))
    assert set(two) == {"train", "val"} and set(three) == {"train", "val", "test"}
    assert set(two[two == "val"].index) == set(three[three == "val"].index)
    with pytest.raises(ValueError, match="add up to less than 1"):
        prepare(["synthetic", "--data-dir", str(tmp_path), "--val-fraction", "0.5", "--test-fraction", "0.5"])
    from data.prepare import build_parser

    for source in (["openmoji"], ["csv", "--file", "x.csv"], ["coco", "--images", "x"], ["synthetic"]):
        args = build_parser().parse_args(source)
        assert args.test_fraction == (0.2 if source == ["openmoji"] else 0.0), source


def test_base_emoji_strips_modifiers():
    assert openmoji.base_emoji("1F469-1F3FD-200D-1F4BB") == "1F469-200D-1F4BB"  # technologist, skin tone
    assert openmoji.base_emoji("1F468-200D-1F9B0") == "1F468"  # man: red hair
    assert openmoji.base_emoji("2764-FE0F") == "2764"


def _toneless(codepoints):
    return "-".join(x for x in codepoints.split("-") if x not in SKIN_TONES | HAIR | {"FE0F", "200D"})


@pytest.fixture(scope="module")
def catalogue():
    """The real OpenMoji catalogue (names and code points, nothing rendered): about 1.5 s."""
    cat = openmoji.catalogue()
    assert len(cat) > 3500  # about 4,000 emoji with Unicode names
    return cat


@pytest.mark.parametrize("split_by", ["base", "concept"])
def test_openmoji_split_keeps_every_variant_together(split_by, catalogue):
    cat = catalogue.copy()
    cat["split"] = openmoji.assign_splits(cat, 0.2, 0, split_by)
    val = cat[cat.split == "val"]
    assert 0.1 < len(val) / len(cat) < 0.35
    # Independent of the key functions: stripping skin tones, hair and presentation
    # selectors, no emoji sequence has forms in both splits.
    assert cat.groupby(cat.codepoints.map(_toneless)).split.nunique().max() == 1
    if split_by == "concept":  # gendered forms too: no validation name (before ':') in training
        heads = lambda s: {h for h in s.str.split(": ").str[0] if h not in ("flag", "keycap")}  # noqa: E731
        assert not heads(val.caption) & heads(cat[cat.split == "train"].caption)


def test_concept_families_join_what_the_names_and_code_points_say(catalogue):
    """The check of the splits groups the catalogue without base_concept: by code points (less
    skin tones, hair, gender signs and direction; people by age; people-only sequences as a
    family) or by names (less person words). It joins what base_concept must join."""
    family = dict(zip(catalogue.caption, openmoji.concept_families(catalogue)))
    for same in (["person running", "man running facing right", "woman running: dark skin tone"],
                 ["family", "family: man, girl", "family: adult, adult, child", "family: woman, woman, boy, boy"],
                 ["kiss", "kiss: woman, man", "kiss: person, person, light skin tone, dark skin tone"],
                 ["couple with heart", "couple with heart: woman, woman"],
                 ["people holding hands", "women holding hands", "men holding hands"],
                 ["person in tuxedo", "man in tuxedo"], ["merperson", "mermaid", "merman"],
                 ["fairy", "man fairy"], ["vampire", "woman vampire"], ["zombie", "man zombie"],
                 ["genie", "woman genie"], ["elf", "man elf"], ["Santa Claus", "Mrs. Claus", "Mx Claus"],
                 ["old man", "older person"], ["person", "man: beard", "woman: red hair"]):
        assert len({family[name] for name in same}) == 1, same
    for different in (["person", "child", "old man"], ["female sign", "male sign", "right arrow"],
                      ["flag: France", "flag: Japan"], ["person running", "person walking"]):
        assert len({family[name] for name in different}) == len(different), different


def _held_out_with_a_trained_family(cat, split):
    return {name: n["with_a_training_image_of_the_same_concept"] for name, n in openmoji.leaks(cat, split).items()}


def test_default_openmoji_split_holds_out_whole_concepts(catalogue):
    """The default split (by concept: 0.6 / 0.2 / 0.2 of concepts) puts no concept, by the
    independent check, in two splits; by base emoji, about half of validation has a training
    image of its concept. The sizes are near the fractions."""
    cat = catalogue.copy()
    cat["split"] = openmoji.assign_splits(cat)
    families = openmoji.concept_families(cat)
    assert cat.groupby(families).split.nunique().max() == 1
    assert _held_out_with_a_trained_family(cat, cat.split) == {"val": 0, "test": 0}
    concepts = cat.drop_duplicates("concept").split.value_counts(normalize=True)
    assert concepts.to_dict() == pytest.approx({"train": 0.6, "val": 0.2, "test": 0.2}, abs=0.03)
    images = cat.split.value_counts(normalize=True)  # large concepts (126 images of "person") make it lumpy
    assert images.to_dict() == pytest.approx({"train": 0.6, "val": 0.2, "test": 0.2}, abs=0.05)

    leaky = _held_out_with_a_trained_family(cat, openmoji.assign_splits(cat, split_by="base"))
    assert leaky["val"] > 300 and leaky["test"] > 200  # 419 of 818 and 288 of 693 with seed 0


def test_the_split_check_catches_a_family_that_base_concept_misses(catalogue, monkeypatch):
    """Undo one of base_concept's joins (the facing-right form, the Claus family) and the
    check finds the leak: it does not agree with base_concept by construction."""
    monkeypatch.setattr(openmoji, "DIRECTION", " no such suffix")
    monkeypatch.setattr(openmoji, "SAME_CONCEPT", {k: v for k, v in openmoji.SAME_CONCEPT.items() if v != "Claus"})
    cat = catalogue.copy()
    cat["concept"] = cat.caption.map(openmoji.base_concept)
    split = openmoji.assign_splits(cat)
    assert sum(_held_out_with_a_trained_family(cat, split).values()) > 0
    assert cat.groupby(openmoji.concept_families(cat)).concept.nunique().max() > 1


def test_openmoji_prepare_subset(tmp_path):
    prepare(["openmoji", "--max-images", "40", "--size", "64", "--data-dir", str(tmp_path), "--workers", "1"])
    m = load_manifest(tmp_path / "openmoji")
    assert len(m) == 40 and m.image_id.is_unique
    assert set(m.label) <= {"Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink",
                            "Travel & Places", "Activities", "Objects", "Symbols", "Flags"}
    report = pd.read_json(tmp_path / "openmoji" / "report.json", typ="series")
    assert report["images"] == 40 and "OpenMoji" in report["attribution"]
    assert report["split_by"] == "concept" and report["test_fraction"] == 0.2
    assert set(m.split) <= {"train", "val", "test"} and sum(report["splits"].values()) == 40
    assert all(n["with_a_training_image_of_the_same_concept"] == 0 for n in report["leaks"].values())
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
