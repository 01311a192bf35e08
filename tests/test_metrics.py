"""Metrics against naive full-matrix references, on small random sets with several
captions per image (the multi-caption protocol)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training import metrics
from training.losses import clip_loss


def _sets(n_images=37, caps_per_image=(1, 5), dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(caps_per_image[0], caps_per_image[1] + 1, (n_images,), generator=g)
    t2i = torch.repeat_interleave(torch.arange(n_images), counts)
    img = F.normalize(torch.randn(n_images, dim, generator=g), dim=-1)
    txt = F.normalize(img[t2i] + 0.9 * torch.randn(len(t2i), dim, generator=g), dim=-1)
    return img, txt, t2i


def _with_duplicate_captions(seed=1):
    """Captions copied word for word: across images (a wrong caption tied with the right one)
    and within an image (an own duplicate, which must not count against it)."""
    img, txt, t2i = _sets(seed=seed)
    txt = txt.clone()
    for src, dst in ((0, 9), (3, 20), (11, 12), (30, 5)):
        txt[dst] = txt[src]
    return img, txt, t2i


def _with_duplicate_images(seed=2):
    img, txt, t2i = _sets(seed=seed)
    img = img.clone()
    img[[4, 17, 30]] = img[[3, 16, 2]]
    return img, txt, t2i


def _quantised(seed=3):
    """Entries in {-1, -1/2, 0, 1/2, 1} on 6 dims: every product is exact in float32 whatever the
    summation order, and many scores tie."""
    img, txt, t2i = _sets(n_images=41, dim=6, seed=seed)
    return (img * 2).round() / 2, (txt * 2).round() / 2, t2i


TIED_SETS = {"duplicate_captions": _with_duplicate_captions, "duplicate_images": _with_duplicate_images,
             "quantised": _quantised}


def _naive(img, txt, t2i):
    """Ranks with ties against the query, one query at a time from the full matrix: 1 + the
    wrong items scored >= the true match. Also whether any wrong item ties with it."""
    sims = (img @ txt.T).numpy()
    t2i = t2i.numpy()
    image_rank, image_tied = [], []
    for i in range(len(img)):
        own = t2i == i
        best = sims[i, own].max()
        image_rank.append(1 + int((sims[i, ~own] >= best).sum()))
        image_tied.append(bool((sims[i, ~own] == best).any()))
    text_rank, text_tied = [], []
    for j in range(len(txt)):
        others = np.arange(len(img)) != t2i[j]
        pos = sims[t2i[j], j]
        text_rank.append(1 + int((sims[others, j] >= pos).sum()))
        text_tied.append(bool((sims[others, j] == pos).any()))
    return np.array(image_rank), np.array(text_rank), np.array(image_tied), np.array(text_tied)


def _assert_matches_naive(r, img, txt, t2i):
    image_rank, text_rank, image_tied, text_tied = _naive(img, txt, t2i)
    assert r.image_rank.tolist() == image_rank.tolist()
    assert r.text_rank.tolist() == text_rank.tolist()
    assert r.image_tied.tolist() == image_tied.tolist()
    assert r.text_tied.tolist() == text_tied.tolist()
    assert r.metrics["i2t_tied_queries"] == image_tied.sum()
    assert r.metrics["t2i_tied_queries"] == text_tied.sum()
    for k in (1, 5, 10):
        assert r.metrics[f"i2t_R@{k}"] == pytest.approx((image_rank <= k).mean())
        assert r.metrics[f"t2i_R@{k}"] == pytest.approx((text_rank <= k).mean())
    assert r.metrics["i2t_median_rank"] == np.median(image_rank)
    assert r.metrics["t2i_median_rank"] == np.median(text_rank)
    assert r.metrics["t2i_mean_rank"] == pytest.approx(text_rank.mean())
    return image_tied, text_tied


@pytest.mark.parametrize("chunk", [1, 7, 1024])
def test_retrieval_matches_naive_reference(chunk):
    img, txt, t2i = _sets()
    r = metrics.retrieval(img, txt, t2i, top_k=5, chunk=chunk)
    _assert_matches_naive(r, img, txt, t2i)
    sims = img @ txt.T
    assert torch.equal(r.image_topk[:, 0], sims.argmax(1))
    assert torch.allclose(r.image_topk_scores[:, 0], sims.max(1).values)


@pytest.mark.parametrize("chunk", [1, 7, 1024])
@pytest.mark.parametrize("name", sorted(TIED_SETS))
def test_ties_count_against_the_query_as_in_the_naive_reference(name, chunk):
    img, txt, t2i = TIED_SETS[name]()
    r = metrics.retrieval(img, txt, t2i, chunk=chunk)
    image_tied, text_tied = _assert_matches_naive(r, img, txt, t2i)
    assert image_tied.any() or text_tied.any()  # the set does exercise the tie rule


@pytest.mark.parametrize("n_images", [1, 6])
def test_a_collapsed_model_scores_no_better_than_chance(n_images):
    # [1/2, 1/2, 1/2, 1/2]: unit norm with exact products, so every score ties bit for bit.
    t2i = torch.repeat_interleave(torch.arange(n_images), torch.tensor([1, 3, 2, 1, 2, 3][:n_images]))
    img = torch.full((n_images, 4), 0.5)
    txt = torch.full((len(t2i), 4), 0.5)
    r = metrics.retrieval(img, txt, t2i, chunk=4)
    _assert_matches_naive(r, img, txt, t2i)
    chance = r.metrics["chance_R@1"]
    # The optimistic rule ranked every query first: R@1 = 1.0 both ways.
    assert r.metrics["i2t_R@1"] <= chance and r.metrics["t2i_R@1"] <= chance
    worst_image = len(t2i) - torch.bincount(t2i) + 1
    assert torch.equal(r.image_rank, worst_image)
    assert torch.equal(r.text_rank, torch.full_like(t2i, n_images))


def test_tied_queries_are_counted_and_own_duplicates_do_not_count():
    img = torch.eye(3)
    t2i = torch.tensor([0, 1, 2, 2])
    # Image 1's caption repeats image 0's word for word; image 2 has two identical captions.
    txt = img[torch.tensor([0, 0, 2, 2])]
    r = metrics.retrieval(img, txt, t2i)
    assert r.image_rank.tolist() == [2, 4, 1]
    assert r.image_tied.tolist() == [True, True, False]
    assert r.text_rank.tolist() == [1, 3, 1, 1]
    assert r.text_tied.tolist() == [False, True, False, False]
    assert (r.metrics["i2t_tied_queries"], r.metrics["t2i_tied_queries"]) == (2.0, 1.0)


def test_nan_embeddings_rank_last():
    img, txt, t2i = _sets(n_images=5)
    r = metrics.retrieval(torch.full_like(img, float("nan")), txt, t2i)
    assert torch.equal(r.image_rank, len(t2i) - torch.bincount(t2i) + 1)
    assert torch.equal(r.text_rank, torch.full_like(t2i, 5))


def test_median_rank_is_the_mean_of_the_two_middles():
    img = torch.eye(4)
    t2i = torch.arange(4)
    txt = F.normalize(torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [2, 0, 1, 0], [2, 2, 0, 1]]), dim=1)
    r = metrics.retrieval(img, txt, t2i)
    assert r.text_rank.tolist() == [1, 1, 2, 3]
    assert r.metrics["t2i_median_rank"] == 1.5  # torch.median would say 1, the lower middle
    assert r.metrics["i2t_median_rank"] == 1.0


def test_perfect_embeddings_rank_first_and_any_caption_counts():
    img = torch.eye(4)
    t2i = torch.tensor([0, 0, 1, 2, 3])
    txt = img[t2i].clone()
    txt[1] = F.normalize(torch.tensor([0.0, 1.0, 1.0, 0.0]), dim=0)  # image 0's second caption is off
    r = metrics.retrieval(img, txt, t2i)
    assert r.image_rank.tolist() == [1, 1, 1, 1]  # image 0 still has a correct caption first
    assert r.text_rank[1] > 1


def test_retrieval_rejects_images_without_captions():
    with pytest.raises(ValueError, match="no caption"):
        metrics.retrieval(torch.eye(3), torch.eye(3)[:2], torch.tensor([0, 1]))


def test_zero_shot_gap_and_cosines():
    img = torch.eye(3)
    assert metrics.zero_shot_accuracy(img, ["a", "b", "c"], torch.eye(3), ["a", "b", "c"]) == 1.0
    assert metrics.zero_shot_accuracy(img, ["b", "a", "c"], torch.eye(3), ["a", "b", "c"]) == pytest.approx(1 / 3)
    assert metrics.modality_gap(img, img) == 0.0
    img2, txt, t2i = _sets(n_images=9)
    c = metrics.pair_cosines(img2, txt, t2i)
    full = img2 @ txt.T
    pos_mask = torch.zeros_like(full, dtype=torch.bool)
    pos_mask[t2i, torch.arange(len(t2i))] = True
    assert c["positive_cosine"] == pytest.approx(full[pos_mask].mean().item(), abs=1e-6)
    assert c["negative_cosine"] == pytest.approx(full[~pos_mask].mean().item(), abs=1e-6)


def test_clip_loss_is_symmetric_cross_entropy():
    img, txt, _ = _sets(n_images=6, caps_per_image=(1, 1))
    scale = torch.tensor(2.0)
    logits = scale.exp() * img @ txt.T
    p_i = torch.log_softmax(logits, 1).diagonal().mean()
    p_t = torch.log_softmax(logits, 0).diagonal().mean()
    assert clip_loss(img, txt, scale).item() == pytest.approx(-(p_i + p_t).item() / 2, rel=1e-6)


def test_umap_is_handed_each_point_s_exact_cosine_neighbours():
    from training.projection import cosine_neighbours

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(60, 8)).astype(np.float32) * rng.uniform(0.5, 3, size=(60, 1)).astype(np.float32)
    idx, dist = cosine_neighbours(vectors, 5)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    full = 1 - unit @ unit.T
    want = np.argsort(full, axis=1)[:, :5]
    assert (idx[:, 0] == np.arange(60)).all() and np.allclose(dist[:, 0], 0, atol=1e-6)  # itself first
    assert (np.sort(idx, axis=1) == np.sort(want, axis=1)).all()
    assert (np.diff(dist, axis=1) >= 0).all()  # nearest first
    assert np.allclose(dist, np.take_along_axis(full, idx, axis=1), atol=1e-6)


def test_zero_shot_ties_count_against_the_image():
    """A collapsed model (every label prompt the same vector) gets no image right, instead of
    every image whose label happens to come first."""
    img = F.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    labels = ["a", "a", "b", "b", "c", "c"]
    same = torch.ones(3, 4) / 2
    assert metrics.zero_shot_accuracy(img, labels, same, ["a", "b", "c"]) == 0.0
    exact = F.normalize(torch.eye(3, 4), dim=-1)
    assert metrics.zero_shot_correct(exact[[0, 0, 1, 1, 2, 2]], labels, exact, ["a", "b", "c"]).all()
