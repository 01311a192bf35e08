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


def _naive(img, txt, t2i):
    sims = (img @ txt.T).numpy()
    image_rank = []
    for i in range(len(img)):
        order = np.argsort(-sims[i], kind="stable")
        image_rank.append(1 + min(np.flatnonzero(t2i.numpy()[order] == i)))
    text_rank = []
    for j in range(len(txt)):
        order = np.argsort(-sims[:, j], kind="stable")
        text_rank.append(1 + int(np.flatnonzero(order == int(t2i[j]))[0]))
    return np.array(image_rank), np.array(text_rank)


@pytest.mark.parametrize("chunk", [1, 7, 1024])
def test_retrieval_matches_naive_reference(chunk):
    img, txt, t2i = _sets()
    r = metrics.retrieval(img, txt, t2i, top_k=5, chunk=chunk)
    image_rank, text_rank = _naive(img, txt, t2i)
    assert r.image_rank.tolist() == image_rank.tolist()
    assert r.text_rank.tolist() == text_rank.tolist()
    for k in (1, 5, 10):
        assert r.metrics[f"i2t_R@{k}"] == pytest.approx((image_rank <= k).mean())
        assert r.metrics[f"t2i_R@{k}"] == pytest.approx((text_rank <= k).mean())
    assert r.metrics["i2t_median_rank"] == pytest.approx(float(torch.tensor(image_rank).double().median()))
    assert r.metrics["t2i_mean_rank"] == pytest.approx(text_rank.mean())
    sims = img @ txt.T
    assert torch.equal(r.image_topk[:, 0], sims.argmax(1))
    assert torch.allclose(r.image_topk_scores[:, 0], sims.max(1).values)


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
