"""The Samples view: every validation image under runs A and B, what B fixed or broke, and one
image's nearest neighbours in the other modality."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.runs import label_list
from core import run_store
from views.common import by_key, finished, md
from views.readers import cached, load_images, load_ranks, load_samples, stamp, thumbnail_uris

SAMPLE_FILTERS = {
    "all": "all images",
    "fixed": "fixed by B: wrong under A, right under B",
    "broken": "broken by B: right under A, wrong under B",
    "hardest": "hardest under B: smallest margin first",
}


def view(runs: list[run_store.Run]) -> None:
    done = finished(runs)
    if not done:
        st.info("None of the selected runs has per-sample results yet (they are written when a run finishes).")
        return
    a, b, which, label, limit = sample_controls(done, image_labels(done[0]))
    if a == b and which in ("fixed", "broken"):
        st.info("Pick two different runs as A and B to see what B fixed or broke.")
    table = filter_samples(sample_table(done, b), a, b, which, label)
    st.caption(f"{len(table)} image(s); showing {min(limit, len(table))}. Rank: position of the image's first "
               f"right caption among all validation captions (1 = right at R@1). Top captions and margin "
               f"(true-pair cosine minus the best wrong caption's) are run B's ({b}).")
    others = [c for c in table.columns if c.startswith("rank · ") and c not in (f"rank · {a}", f"rank · {b}")]
    order = ["thumbnail", "image_id", "caption", "label", *dict.fromkeys([f"rank · {a}", f"rank · {b}"]),
             "margin", "top_captions", "positive_cosine", *others]
    st.dataframe(table.head(limit), hide_index=True, column_config=sample_columns(table), column_order=order,
                 width="stretch")
    st.download_button("Download this table (CSV)", lambda: table.drop(columns="thumbnail").to_csv(index=False),
                       file_name="samples.csv", mime="text/csv", icon=":material/download:")
    if not table.empty:
        sample_detail(by_key(done), table, a, b)


def image_labels(run: run_store.Run) -> list[str]:
    """The labels of a run's validation images (the same for every run of one dataset)."""
    return label_list(load_images(str(run.path), stamp(run))["label"])


def sample_controls(runs: list[run_store.Run], labels: list[str]) -> tuple[str, str, str, str | None, int]:
    """Runs A and B, the filter, a label and how many rows to show. A, B and the filter are
    bound to the URL; A and B are the Compare view's too, and its buttons set the filter."""
    keys = [r.key for r in runs]
    c1, c2, c3, c4, c5 = st.columns([2, 2, 3, 2, 1])
    a = c1.selectbox("Run A", keys, index=0, key="run_a", bind="query-params")
    b = c2.selectbox("Run B", keys, index=min(1, len(keys) - 1), key="run_b", bind="query-params")
    which = c3.selectbox("Show", list(SAMPLE_FILTERS), format_func=SAMPLE_FILTERS.get, key="sample_filter",
                         bind="query-params")
    label = c4.selectbox("Label", ["(all labels)", *labels])
    limit = c5.number_input("Rows", 10, 100_000, 200, step=50)
    return a, b, which, None if label == "(all labels)" else label, int(limit)


def sample_table(runs: list[run_store.Run], b: str) -> pd.DataFrame:
    """Run B's per-image table with a rank column for every run."""
    index = by_key(runs)
    table = load_images(str(index[b].path), stamp(index[b]))
    for r in runs:
        table[f"rank · {r.key}"] = table["image_id"].map(load_ranks(str(r.path), stamp(r)))
    return table


def filter_samples(table: pd.DataFrame, a: str, b: str, which: str, label: str | None) -> pd.DataFrame:
    rank_a, rank_b = table[f"rank · {a}"], table[f"rank · {b}"]
    keep = {"all": table.index == table.index, "fixed": (rank_a > 1) & (rank_b == 1),
            "broken": (rank_a == 1) & (rank_b > 1), "hardest": table.index == table.index}[which]
    out = table[keep]
    if label:
        out = out[out["label"] == label]
    return out.sort_values("margin", na_position="last") if which == "hardest" else out


def sample_columns(table: pd.DataFrame) -> dict:
    config = {"thumbnail": st.column_config.ImageColumn("image", width="small", pinned=True),
              "image_id": "image id", "caption": st.column_config.TextColumn("caption", pinned=True),
              "positive_cosine": st.column_config.NumberColumn("true-pair cosine", format="%.3f"),
              "top_captions": st.column_config.TextColumn("top 3 captions under B (cosine)", width="large"),
              "margin": st.column_config.NumberColumn("margin under B", format="%.3f")}
    for column in table.columns:
        if column.startswith("rank · "):
            config[column] = st.column_config.NumberColumn(column, format="%d")
    return config


def sample_detail(index: dict, table: pd.DataFrame, a: str, b: str) -> None:
    """One image: its nearest captions, and for each of its captions the nearest images."""
    st.subheader("Sample detail")
    st.caption("Nearest neighbours in the other modality: the captions closest to the image, and the "
               "images closest to each of its captions, under runs A and B.")
    captions = dict(zip(table["image_id"], table["caption"], strict=True))
    image_id = st.selectbox("Image", list(captions), format_func=lambda i: f"{i}: {captions[i]}")
    row = table[table["image_id"] == image_id].iloc[0]
    picture, facts = st.columns([1, 8], vertical_alignment="center")
    if row["thumbnail"]:
        picture.image(row["thumbnail"], width=72)
    facts.text(f"{image_id} · label: {row['label'] or '(none)'}\nfirst caption: {row['caption']}")
    for column, key in zip(st.columns(2 if a != b else 1), dict.fromkeys([a, b]), strict=True):
        with column:
            neighbours(index[key], image_id)


def neighbours(run: run_store.Run, image_id: str) -> None:
    st.markdown(f"**{md(run.key)}**")
    nearest = nearest_of(str(run.path), stamp(run), image_id)
    if nearest is None:
        st.info("This run did not evaluate this image.")
        return
    captions, per_caption = nearest
    st.dataframe(captions, hide_index=True, column_config={"cosine": st.column_config.NumberColumn(format="%.3f")})
    for caption, rank, images in per_caption:
        st.caption(f"Images nearest to the caption “{md(caption)}” (its image at rank {rank}):")
        st.dataframe(images, hide_index=True, column_config={"image": st.column_config.ImageColumn(width="small"),
                                                             "cosine": st.column_config.NumberColumn(format="%.3f")})


@cached(max_entries=256)
def nearest_of(path: str, stamp: str, image_id: str) -> tuple[pd.DataFrame, list] | None:
    """One image under one run: its nearest captions, and for each of its own captions (text,
    rank of the image) the nearest images; None if the run did not evaluate the image."""
    samples = load_samples(path, stamp)
    texts = samples[samples["modality"] == "text"].set_index("sample_id")
    image = samples[(samples["modality"] == "image") & (samples["image_id"] == image_id)]
    if image.empty:
        return None
    ids = image.iloc[0]["topk_ids"]
    captions = pd.DataFrame({"nearest captions": [texts["caption"].get(i, i) for i in ids],
                             "cosine": image.iloc[0]["topk_scores"],
                             "right": [texts["image_id"].get(i) == image_id for i in ids]})
    thumbs = thumbnail_uris(path, stamp)
    per_caption = []
    for _, cap in texts[texts["image_id"] == image_id].iterrows():
        near = cap["topk_ids"]
        per_caption.append((cap["caption"], cap["rank"], pd.DataFrame({
            "image": [thumbs.get(i) for i in near], "image id": near, "cosine": cap["topk_scores"],
            "right": [i == image_id for i in near]})))
    return captions, per_caption
