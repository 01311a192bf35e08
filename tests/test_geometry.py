"""analysis/geometry.py against training/metrics.py (torch) and naive references, on small
random spaces: continuous ones, and quantised ones full of exact ties and duplicates."""

import numpy as np
import pandas as pd
import pytest
import torch

from analysis import geometry
from analysis.geometry import Space
from training import metrics

LABELS = np.array(["cat", "dog", "fish", "bird", "frog"], dtype=object)


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _space(seed=0, n=37, dim=16, quantised=False, offset=0.0, prompts=True) -> Space:
    """Images with 1 to 5 captions each, captions near their image, in shuffled order. `offset`
    moves images and captions apart (a modality gap). Quantised: entries in {-1, -1/2, 0, 1/2, 1}
    on 4 dims, so that every product is exact in float32 and scores tie often, with captions
    copied word for word across and within images."""
    rng = np.random.default_rng(seed)
    t2i = np.repeat(np.arange(n), rng.integers(1, 6, size=n))
    rng.shuffle(t2i)
    if quantised:
        dim = 4
        img = np.clip(np.round(rng.standard_normal((n, dim))), -2, 2) / 2
        txt = np.clip(np.round(img[t2i] * 2 + rng.standard_normal((len(t2i), dim))), -2, 2) / 2
        for src, dst in ((0, 9), (3, 20), (11, 12), (30, 5), (7, 8)):
            txt[dst] = txt[src]
        img[[4, 17]] = img[[3, 16]]
        prompt = np.clip(np.round(rng.standard_normal((len(LABELS), dim))), -2, 2) / 2
    else:
        shift = offset * _unit(rng.standard_normal((1, dim)))
        img = _unit(rng.standard_normal((n, dim)) + shift)
        txt = _unit(img[t2i] + 0.9 * rng.standard_normal((len(t2i), dim)) - 2 * shift)
        prompt = _unit(rng.standard_normal((len(LABELS), dim)) - 2 * shift)
    return Space(image_ids=[f"img:{i}" for i in range(n)], image_emb=img, image_labels=rng.choice(LABELS, n),
                 caption_ids=[f"txt:{j}" for j in range(len(t2i))], text_emb=txt, text_to_image=t2i,
                 prompt_labels=LABELS if prompts else [], prompt_emb=prompt if prompts else np.zeros((0, dim)))


SPACES = [dict(seed=0), dict(seed=1, n=60, dim=8), dict(seed=2, quantised=True), dict(seed=3, quantised=True, n=50)]


def _torch(x):
    return torch.from_numpy(np.asarray(x))


def _training_retrieval(space):
    return metrics.retrieval(_torch(space.image_emb), _torch(space.text_emb), _torch(space.text_to_image))


# ---------------------------------------------------------------------------- retrieval


@pytest.mark.parametrize("params", SPACES)
@pytest.mark.parametrize("chunk", [7, 1024])
def test_retrieval_equals_training_metrics(params, chunk):
    space = _space(**params)
    expected = _training_retrieval(space)
    image_rank, text_rank = geometry.ranks(space, chunk=chunk)
    np.testing.assert_array_equal(image_rank, expected.image_rank.numpy())
    np.testing.assert_array_equal(text_rank, expected.text_rank.numpy())
    summary = geometry.retrieval_summary(space, chunk=chunk)
    assert set(summary) == {f"{p}_R@{k}" for p in ("i2t", "t2i") for k in (1, 5, 10)}
    assert summary == {key: expected.metrics[key] for key in summary}


def test_quantised_spaces_do_tie():
    """The tie rule is exercised: the quantised spaces have true matches tied with wrong ones."""
    expected = _training_retrieval(_space(**SPACES[2])).metrics
    assert expected["i2t_tied_queries"] > 3 and expected["t2i_tied_queries"] > 3


def test_nan_counts_against_as_in_training():
    space = _space(seed=4)
    img, txt = space.image_emb.copy(), space.text_emb.copy()
    img[2], txt[5] = np.nan, np.nan
    broken = Space(space.image_ids, img, space.image_labels, space.caption_ids, txt, space.text_to_image,
                   space.prompt_labels, space.prompt_emb)
    expected = _training_retrieval(broken)
    image_rank, text_rank = geometry.ranks(broken, chunk=5)
    np.testing.assert_array_equal(image_rank, expected.image_rank.numpy())
    np.testing.assert_array_equal(text_rank, expected.text_rank.numpy())
    assert image_rank[2] == len(txt) - np.count_nonzero(space.text_to_image == 2) + 1  # last


@pytest.mark.parametrize("params", SPACES)
def test_zero_shot_equals_training_metrics(params):
    space = _space(**params)
    expected = metrics.zero_shot_correct(_torch(space.image_emb), list(space.image_labels), _torch(space.prompt_emb),
                                         list(space.prompt_labels)).numpy()
    np.testing.assert_array_equal(geometry.zero_shot_correct(space, chunk=6), expected)
    assert 0 < expected.sum() < len(expected)


def test_zero_shot_needs_prompts():
    with pytest.raises(ValueError, match="no zero-shot prompts"):
        geometry.zero_shot_correct(_space(prompts=False))


# ---------------------------------------------------------------------------- the modality gap


@pytest.mark.parametrize("params", SPACES + [dict(seed=5, offset=1.5)])
def test_modality_gap_and_cones(params):
    space = _space(**params)
    found = geometry.modality_gap(space)
    assert found["gap"] == pytest.approx(metrics.modality_gap(_torch(space.image_emb), _torch(space.text_emb)),
                                         abs=1e-6)
    for key, x in (("image_cone", space.image_emb), ("text_cone", space.text_emb)):
        pairs = x.astype(np.float64) @ x.astype(np.float64).T
        off_diagonal = pairs[~np.eye(len(x), dtype=bool)]
        assert found[key] == pytest.approx(off_diagonal.mean(), abs=1e-9)


@pytest.mark.parametrize("params", [dict(seed=6, offset=1.5), SPACES[2]])
def test_gap_shift_at_zero_is_the_unshifted_space(params):
    """Exactly, even where renormalising would change something (the quantised vectors are not unit)."""
    space = _space(**params)
    table = geometry.gap_shift(space)
    assert list(table.columns) == ["shift", "gap", "i2t_R@1", "t2i_R@1", "zero_shot_accuracy"]
    at = table.set_index("shift")
    summary = geometry.retrieval_summary(space)
    assert at.loc[0.0, "i2t_R@1"] == summary["i2t_R@1"] and at.loc[0.0, "t2i_R@1"] == summary["t2i_R@1"]
    assert at.loc[0.0, "zero_shot_accuracy"] == geometry.zero_shot_correct(space).mean()
    assert at.loc[0.0, "gap"] == geometry.modality_gap(space)["gap"]
    assert at.loc[1.0, "gap"] < 0.5 * at.loc[0.0, "gap"]
    assert at.loc[-1.0, "gap"] > at.loc[0.0, "gap"] or "quantised" in params


def test_gap_shift_moves_prompts_with_the_captions():
    """The prompts are text: they move with the captions, not with the images (against a
    hand-shifted space); without prompts zero-shot is NaN."""
    space = _space(seed=7, offset=1.5)
    row = geometry.gap_shift(space, shifts=[1.0]).iloc[0]
    delta = space.image_emb.mean(0, dtype=np.float64) - space.text_emb.mean(0, dtype=np.float64)
    moved = Space(space.image_ids, _unit(space.image_emb - delta / 2), space.image_labels, space.caption_ids,
                  _unit(space.text_emb + delta / 2), space.text_to_image, space.prompt_labels,
                  _unit(space.prompt_emb + delta / 2))
    assert row["zero_shot_accuracy"] == geometry.zero_shot_correct(moved).mean()
    assert row["i2t_R@1"] == geometry.retrieval_summary(moved)["i2t_R@1"]
    assert geometry.gap_shift(_space(prompts=False), shifts=[0.0, 1.0])["zero_shot_accuracy"].isna().all()


# ---------------------------------------------------------------------------- neighbours


def _brute_knn(x, k):
    sims = _unit(x.astype(np.float64)) @ _unit(x.astype(np.float64)).T
    np.fill_diagonal(sims, -np.inf)
    return [set(np.argsort(-row, kind="stable")[:k]) for row in sims]


def test_knn_overlap_against_brute_force():
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((90, 12)), rng.standard_normal((90, 5))
    b[:45] = a[:45, :5] + 0.1 * rng.standard_normal((45, 5))  # half of them related, another width
    expected = [len(sa & sb) / 6 for sa, sb in zip(_brute_knn(a, 6), _brute_knn(b, 6))]
    np.testing.assert_allclose(geometry.knn_overlap(a, b, 6, chunk=11), expected)


def test_knn_overlap_is_rotation_invariant_and_low_for_unrelated_data():
    rng = np.random.default_rng(9)
    a = _unit(rng.standard_normal((200, 16))).astype(np.float32)
    rotation, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    np.testing.assert_array_equal(geometry.knn_overlap(a, a @ rotation, 10, chunk=64), 1.0)
    unrelated = geometry.knn_overlap(a, rng.standard_normal((200, 16)), 10)
    assert unrelated.mean() < 0.3


def test_knn_overlap_breaks_ties_by_row_order():
    """Exact duplicates tie at the k-th neighbour: the lower row wins in both states, so a change
    elsewhere in the set does not swap tied neighbours (a selection algorithm's pick would)."""
    x = np.random.default_rng(18).choice([-0.5, 0.5], size=(80, 4)).astype(np.float32)  # unit, exact cosines
    assert len(np.unique(x, axis=0)) == 16
    np.testing.assert_array_equal(geometry.knn_overlap(x, x.copy(), 10, chunk=9), 1.0)
    y = x.copy()
    y[[1, 40, 70]] = -x[[1, 40, 70]]
    expected = [len(sa & sb) / 10 for sa, sb in zip(_brute_knn(x, 10), _brute_knn(y, 10))]
    np.testing.assert_allclose(geometry.knn_overlap(x, y, 10, chunk=9), expected)


def test_knn_overlap_refuses_mismatched_rows_and_k():
    with pytest.raises(ValueError, match="same samples"):
        geometry.knn_overlap(np.ones((5, 3)), np.ones((4, 3)), 2)
    with pytest.raises(ValueError, match="k = 5"):
        geometry.knn_overlap(np.eye(5), np.eye(5), 5)


# ---------------------------------------------------------------------------- drift


def test_drift_of_an_unchanged_state():
    space = _space(seed=10)
    table = geometry.drift(space, space, shared_space=True)
    assert list(table.columns) == geometry.DRIFT_COLUMNS
    assert len(table) == len(space.image_ids) + len(space.caption_ids)
    assert (table["modality"] == "image").sum() == len(space.image_ids)
    np.testing.assert_array_equal(table["rank_start"][: len(space.image_ids)], geometry.ranks(space)[0])
    assert (table["rank_change"] == 0).all() and (table["positive_cosine_change"] == 0).all()
    assert (table["knn_overlap"] == 1).all() and (table["cosine_distance"] == 0).all()
    assert geometry.drift(space, space, shared_space=False)["cosine_distance"].isna().all()


def test_drift_of_one_moved_caption():
    """Caption j alone gets a new vector: images keep their neighbours (they are images'), other
    captions keep their rank and pair cosine, an image's rank changes by j crossing its best
    caption's score, and a caption's neighbours change only where j enters or leaves them."""
    start = _space(seed=11, n=40)
    j = 17
    txt = start.text_emb.copy()
    txt[j] = _unit(np.random.default_rng(12).standard_normal((1, start.dim)))[0]
    end = Space(start.image_ids, start.image_emb, start.image_labels, start.caption_ids, txt,
                start.text_to_image, start.prompt_labels, start.prompt_emb)
    k = 10
    table = geometry.drift(start, end, shared_space=True, k=k)
    images, captions = table[table["modality"] == "image"], table[table["modality"] == "text"].reset_index(drop=True)
    assert (images["knn_overlap"] == 1).all() and (images["cosine_distance"] == 0).all()
    others = captions.index != j
    assert (captions.loc[others, "rank_change"] == 0).all()
    assert (captions.loc[others, "positive_cosine_change"] == 0).all()
    assert (captions.loc[others, "cosine_distance"] == 0).all() and captions.loc[j, "cosine_distance"] > 0.1

    # An image not owning j: its best caption is unchanged, and j counts against it when it scores >= that best.
    owner = start.text_to_image[j]
    img = start.image_emb.astype(np.float64)
    best = images["positive_cosine_start"].to_numpy()
    before, after = img @ start.text_emb[j].astype(np.float64), img @ txt[j].astype(np.float64)
    clear = (np.arange(len(img)) != owner) & (np.abs(before - best) > 1e-5) & (np.abs(after - best) > 1e-5)
    assert clear.sum() >= len(img) - 3
    expected = (after >= best).astype(int) - (before >= best).astype(int)
    np.testing.assert_array_equal(images["rank_change"].to_numpy()[clear], expected[clear])
    assert expected[clear].any()  # j did cross some image's best caption
    assert (images["positive_cosine_change"].to_numpy()[np.arange(len(img)) != owner] == 0).all()

    knn_start, knn_end = _brute_knn(start.text_emb, k), _brute_knn(txt, k)
    untouched = np.array([i != j and j not in knn_start[i] and j not in knn_end[i] for i in range(len(txt))])
    assert untouched.sum() > len(txt) / 2
    # j entering or leaving a caption's neighbours pushes one out or lets one in; staying in changes nothing.
    swapped = np.array([i != j and (j in knn_start[i]) != (j in knn_end[i]) for i in range(len(txt))])
    assert swapped.any()
    assert (captions.loc[untouched, "knn_overlap"] == 1).all()
    assert (captions.loc[swapped, "knn_overlap"] == (k - 1) / k).all()
    assert captions.loc[j, "knn_overlap"] < 1


def test_drift_ranks_the_shared_rows():
    """The end state lacks an image and its captions: both states are ranked on what they share."""
    start = _space(seed=13)
    gone = start.text_to_image == 0
    keep = np.flatnonzero(~gone)
    end = Space(start.image_ids[1:], start.image_emb[1:], start.image_labels[1:], start.caption_ids[keep],
                start.text_emb[keep], start.text_to_image[keep] - 1, start.prompt_labels, start.prompt_emb)
    table = geometry.drift(start, end, shared_space=True)
    assert len(table) == len(end.image_ids) + len(end.caption_ids)
    assert "img:0" not in set(table["sample_id"])
    assert (table["rank_change"] == 0).all()
    np.testing.assert_array_equal(table.loc[table["modality"] == "text", "rank_end"], geometry.ranks(end)[1])


def test_drift_refuses_states_without_shared_samples_and_widths():
    start = _space(seed=14)
    other = _space(seed=14)
    renamed = Space([f"x{i}" for i in other.image_ids], other.image_emb, other.image_labels,
                    [f"x{i}" for i in other.caption_ids], other.text_emb, other.text_to_image, [], np.zeros((0, 16)))
    with pytest.raises(ValueError, match=r"share no captioned image: start has 37 images"):
        geometry.drift(start, renamed, shared_space=False)
    narrow = Space(start.image_ids, start.image_emb[:, :8], start.image_labels, start.caption_ids,
                   start.text_emb[:, :8], start.text_to_image, [], np.zeros((0, 8)))
    assert geometry.drift(start, narrow, shared_space=False)["knn_overlap"].notna().all()
    with pytest.raises(ValueError, match="different widths"):
        geometry.drift(start, narrow, shared_space=True)


def test_map_movement():
    xy = pd.DataFrame({"sample_id": ["img:a", "txt:0", "txt:1"], "modality": ["image", "text", "text"],
                       "x": [0.0, 1.0, 2.0], "y": [1.0, -1.0, 0.5]})
    assert (geometry.map_movement(xy, xy.copy())["moved"] == 0).all()
    moved = xy.assign(x=xy["x"] + 3.0, y=xy["y"] - 4.0).iloc[::-1]
    found = geometry.map_movement(xy, moved)
    assert list(found.columns) == ["sample_id", "modality", "moved"]
    assert list(found["sample_id"]) == list(xy["sample_id"])
    np.testing.assert_allclose(found["moved"], 5.0)
    assert list(geometry.map_movement(xy, moved.iloc[:2])["sample_id"]) == ["txt:0", "txt:1"]


# ---------------------------------------------------------------------------- from a frame


def _frame(space: Space, step: int) -> pd.DataFrame:
    images = pd.DataFrame(dict(sample_id=space.image_ids, modality="image",
                               image_id=[i.removeprefix("img:") for i in space.image_ids], caption="",
                               label=space.image_labels, embedding=list(space.image_emb)))
    texts = pd.DataFrame(dict(sample_id=space.caption_ids, modality="text",
                              image_id=images["image_id"].to_numpy()[space.text_to_image],
                              caption=[f"caption {c}" for c in space.caption_ids],
                              label=space.image_labels[space.text_to_image], embedding=list(space.text_emb)))
    prompts = pd.DataFrame(dict(sample_id=[f"prompt:{x}" for x in space.prompt_labels], modality="prompt",
                                image_id="", caption=[f"a photo of a {x}" for x in space.prompt_labels],
                                label=space.prompt_labels, embedding=list(space.prompt_emb)))
    return pd.concat([images, texts, prompts], ignore_index=True).assign(split="val", step=step)


def test_space_from_frame():
    first, last = _space(seed=15, n=6), _space(seed=16, n=6)
    frame = pd.concat([_frame(first, 0), _frame(last, 40)], ignore_index=True).sample(frac=1.0, random_state=0)
    frame = frame.sort_values("step", kind="stable")  # the steps in blocks, rows within a step shuffled
    built = geometry.space_from_frame(frame)
    rows = frame[(frame["step"] == 40) & (frame["modality"] == "text")]
    assert list(built.caption_ids) == list(rows["sample_id"])  # the stored order
    order = pd.Index(last.caption_ids).get_indexer(built.caption_ids)
    np.testing.assert_array_equal(built.text_emb, last.text_emb[order])
    np.testing.assert_array_equal(built.image_ids[built.text_to_image], last.image_ids[last.text_to_image[order]])
    assert sorted(built.prompt_labels) == sorted(LABELS) and built.prompt_emb.shape == (5, 16)
    assert built.image_emb.dtype == np.float32
    at_zero = geometry.space_from_frame(frame, step=0)
    order = pd.Index(first.image_ids).get_indexer(at_zero.image_ids)
    np.testing.assert_array_equal(at_zero.image_emb, first.image_emb[order].astype(np.float32))
    assert geometry.retrieval_summary(at_zero) == geometry.retrieval_summary(first)
    no_prompts = geometry.space_from_frame(frame[frame["modality"] != "prompt"])
    assert no_prompts.prompt_emb.shape == (0, 16)


def test_space_from_frame_refuses():
    frame = _frame(_space(seed=17, n=5), 3)
    orphan = frame.copy()
    orphan.loc[orphan["modality"] == "text", "image_id"] = orphan.loc[orphan["modality"] == "text", "image_id"].where(
        orphan.loc[orphan["modality"] == "text", "sample_id"] != "txt:2", "missing")
    with pytest.raises(ValueError, match=r"1 caption\(s\) at step 3 have no image row, e.g. 'txt:2'"):
        geometry.space_from_frame(orphan)
    with pytest.raises(ValueError, match="empty"):
        geometry.space_from_frame(frame.iloc[:0])
    with pytest.raises(ValueError, match=r"no embeddings at step 7; the frame has steps \[3\]"):
        geometry.space_from_frame(frame, step=7)
