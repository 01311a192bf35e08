"""The closed-form baseline (training/closed_form.py) on synthetic features with a planted
linear relation between the two sides, and loaded into a tiny model's heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.config import RunConfig
from training import metrics
from training.closed_form import METHODS, choose_ridge, embed, fit_heads, load_heads
from training.models import build_model, make_head

DI, DT, DIM = 24, 16, 8  # image and text widths, shared space: small, with room for a rank-DIM fit
PLANTED = np.random.default_rng(1234).standard_normal((DI, DT)) / np.sqrt(DI)  # text = image @ PLANTED + noise


def planted(n: int, noise: float, seed: int, captions: int = 1, width: int = DI):
    """n images and `captions` captions each, text features a fixed linear function of their
    image's plus noise; image features with a non-zero mean, as pooled ReLU features have."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n, width)) + 0.5
    owners = np.repeat(np.arange(n), captions)
    texts = images[owners, :DI] @ PLANTED + noise * rng.standard_normal((len(owners), DT))
    return (torch.tensor(images, dtype=torch.float32), torch.tensor(texts, dtype=torch.float32),
            torch.tensor(owners))


def r_at_1(data, image_map, text_map) -> dict[str, float]:
    images, texts, owners = data
    found = metrics.retrieval(embed(images, image_map), embed(texts, text_map), owners).metrics
    return {"i2t": found["i2t_R@1"], "t2i": found["t2i_R@1"]}


@pytest.mark.parametrize("method", METHODS)
def test_planted_pairs_are_retrieved_far_above_chance_where_random_heads_are_not(method):
    train, held_out = planted(400, noise=0.05, seed=0), planted(200, noise=0.05, seed=1)
    image_map, text_map = fit_heads(*train, dim=DIM, method=method, ridge=1e-3)
    assert image_map[0].shape == (DIM, DI) and image_map[1].shape == (DIM,)
    assert text_map[0].shape == (DIM, DT) and text_map[1].shape == (DIM,)
    fitted = r_at_1(held_out, image_map, text_map)
    assert fitted["i2t"] > 0.9 and fitted["t2i"] > 0.9, fitted
    g = torch.Generator().manual_seed(0)
    random_maps = [(torch.randn(DIM, d, generator=g), torch.zeros(DIM)) for d in (DI, DT)]
    at_random = r_at_1(held_out, *random_maps)
    assert at_random["i2t"] < 0.05 and at_random["t2i"] < 0.05, at_random  # chance: 1/200


@pytest.mark.parametrize("method", METHODS)
def test_the_fit_is_deterministic(method):
    train = planted(100, noise=0.3, seed=2)
    first, second = fit_heads(*train, dim=DIM, method=method), fit_heads(*train, dim=DIM, method=method)
    for a, b in zip(first, second):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("method", METHODS)
def test_an_offset_of_every_image_feature_goes_into_the_bias_and_changes_no_retrieval(method):
    train, held_out = planted(200, noise=0.3, seed=3), planted(100, noise=0.3, seed=4)
    offset = torch.full((DI,), 50.0)
    (w, b), text_map = fit_heads(*train, dim=DIM, method=method)
    (w_shifted, b_shifted), text_map_shifted = fit_heads(train[0] + offset, *train[1:], dim=DIM, method=method)
    torch.testing.assert_close(w_shifted, w, rtol=1e-3, atol=1e-4)  # the float32 features round at 50
    torch.testing.assert_close(b_shifted, b - w @ offset, rtol=1e-4, atol=1e-3)
    plain = metrics.retrieval(embed(held_out[0], (w, b)), embed(held_out[1], text_map), held_out[2])
    shifted = metrics.retrieval(embed(held_out[0] + offset, (w_shifted, b_shifted)),
                                embed(held_out[1], text_map_shifted), held_out[2])
    assert torch.equal(plain.image_rank, shifted.image_rank)
    assert torch.equal(plain.text_rank, shifted.text_rank)


@pytest.mark.parametrize("method", METHODS)
def test_an_image_with_several_captions_counts_once_per_caption(method):
    train, held_out = planted(150, noise=0.2, seed=5, captions=3), planted(80, noise=0.2, seed=6, captions=3)
    images, texts, owners = train
    fitted = fit_heads(images, texts, owners, dim=DIM, method=method)
    # The same pairs with each image repeated once per caption: the same fit.
    repeated = fit_heads(images[owners], texts, torch.arange(len(texts)), dim=DIM, method=method)
    for a, b in zip(fitted, repeated):
        torch.testing.assert_close(a[0], b[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a[1], b[1], rtol=1e-4, atol=1e-5)
    found = r_at_1(held_out, *fitted)
    assert found["i2t"] > 0.9 and found["t2i"] > 0.8, found


def test_dim_beyond_the_directions_the_pairs_have_raises():
    images, texts, owners = planted(30, noise=0.1, seed=7)
    for dim in (0, DT + 1):  # the text side is the narrower one
        with pytest.raises(ValueError, match="dim="):
            fit_heads(images, texts, owners, dim=dim)
    few = planted(5, noise=0.1, seed=8)  # 5 pairs: 4 directions once centred
    assert fit_heads(*few, dim=4)[0][0].shape == (4, DI)
    with pytest.raises(ValueError, match="pairs - 1 = 4"):
        fit_heads(*few, dim=5)
    with pytest.raises(ValueError, match="unknown method"):
        fit_heads(images, texts, owners, dim=DIM, method="pls")
    with pytest.raises(ValueError, match="ridge must be positive"):
        fit_heads(images, texts, owners, dim=DIM, ridge=0.0)


@pytest.fixture(scope="module")
def tiny_model():
    return build_model(RunConfig(model="tiny-clip", image_size=32, embed_dim=DIM))


def test_load_heads_makes_the_models_embeddings_the_normalised_maps(tiny_model):
    model = tiny_model
    width = model.image_tower.out_dim  # tiny-clip: 32 on both sides
    images, _, owners = planted(60, noise=0.1, seed=9, width=width)
    texts = torch.tensor(np.random.default_rng(10).standard_normal((60, model.text_tower.out_dim)),
                         dtype=torch.float32) + images[owners] @ torch.eye(width)
    image_map, text_map = fit_heads(images, texts, owners, dim=DIM)
    trainable = model.image_head.weight.requires_grad
    load_heads(model, image_map, text_map)
    # Locked towers with cached features: those features enter after the last stage.
    with torch.no_grad():
        got_images = model.embed_image_input(images, start=len(model.image_tower.stages))
        got_texts = model.embed_text_input(texts, start=len(model.text_tower.stages))
    torch.testing.assert_close(got_images, embed(images, image_map))
    torch.testing.assert_close(got_texts, embed(texts, text_map))
    assert model.image_head.weight.requires_grad == trainable
    assert {"image_head.bias", "text_head.bias"} <= set(model.state_dict())


def test_load_heads_refuses_an_mlp_head_and_a_map_of_another_size(tiny_model):
    images, texts, owners = planted(40, noise=0.1, seed=11, width=tiny_model.image_tower.out_dim)
    texts = texts.repeat(1, 2)  # tiny-clip's text features are 32 wide
    maps = fit_heads(images, texts, owners, dim=DIM)
    narrow = fit_heads(images, texts, owners, dim=DIM - 1)
    saved = tiny_model.image_head
    try:
        with pytest.raises(ValueError, match="fit with dim"):
            load_heads(tiny_model, *narrow)
        tiny_model.image_head = make_head(tiny_model.image_tower.out_dim, DIM, "mlp")
        with pytest.raises(ValueError, match="head='linear'"):
            load_heads(tiny_model, *maps)
    finally:
        tiny_model.image_head = saved


def test_choose_ridge_scores_the_validation_set_it_is_given_and_nothing_else():
    # Few pairs for the width: the fit overfits, so in-sample and held-out scores disagree.
    train, val = planted(40, noise=1.0, seed=12), planted(100, noise=1.0, seed=13)
    grid = (1e-3, 1e-1, 10.0)
    rng_before = torch.get_rng_state()
    best, scores = choose_ridge(train, val, dim=DIM, grid=grid)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert list(scores) == list(grid)
    for ridge, score in scores.items():
        assert score == r_at_1(val, *fit_heads(*train, dim=DIM, ridge=ridge))["i2t"]
    assert scores[best] == max(scores.values())
    assert choose_ridge(train, val, dim=DIM, grid=grid) == (best, scores)
    _, in_sample = choose_ridge(train, train, dim=DIM, grid=grid)
    assert in_sample != scores
