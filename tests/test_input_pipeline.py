"""The input pipeline the GPU benchmarks rely on: uint8 pixels from the loader workers,
tokens padded per batch, batches grouped by caption length, metrics in float32 under
autocast, and the ViT-B/32 architecture built without the hub."""

from __future__ import annotations

import torch

from core.config import RunConfig
from training import metrics
from training.models import IMAGENET_MEAN, IMAGENET_STD, Preprocess, tokenizer_for_tests
from training.pairs import Collate, LengthGroupedBatches, PairDataset, Pairs, load_pixels, normalize, pixels_uint8


def test_uint8_pixels_normalised_on_the_device_equal_load_pixels(synthetic_data):
    from data.manifest import load_manifest

    pre = Preprocess(40, IMAGENET_MEAN, IMAGENET_STD)
    paths = load_manifest(synthetic_data)["image_path"].drop_duplicates().tolist()[:4]
    raw = torch.stack([pixels_uint8(p, pre) for p in paths])
    assert raw.dtype == torch.uint8 and raw.shape == (4, 3, 40, 40)
    torch.testing.assert_close(normalize(raw, pre), load_pixels(paths, pre), atol=1e-6, rtol=0)


def test_loader_items_carry_raw_inputs_and_batches_pad_to_their_longest_caption(synthetic_data):
    from data.manifest import load_manifest

    pairs = Pairs.from_manifest(load_manifest(synthetic_data))
    view = pairs.subset("train")
    pre = Preprocess(32, IMAGENET_MEAN, IMAGENET_STD)
    dataset = PairDataset(view, pre, with_text=True)
    tokenizer = tokenizer_for_tests()
    items = [dataset[i] for i in range(6)]
    batch = Collate(tokenizer, max_text_len=64)(items)
    assert batch["pixels"].shape == (6, 3, 32, 32) and batch["pixels"].dtype == torch.uint8
    lengths = [len(tokenizer(it["caption"])["input_ids"]) for it in items]
    assert batch["tokens"]["input_ids"].shape == (6, max(lengths))  # not 64, not 77
    assert batch["tokens"]["attention_mask"].sum(1).tolist() == lengths
    # Without raw inputs requested, items are row numbers only (cached features are looked up).
    assert set(PairDataset(view)[0]) == {"caption_row", "image_row"}


def test_length_grouped_batches_cover_every_sample_once_with_little_padding():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 47, (1000,), generator=g).tolist()
    sampler = LengthGroupedBatches(lengths, batch_size=32, drop_last=False, seed=3, pool=8)
    epoch0, epoch1 = list(sampler), list(sampler)
    assert sorted(i for b in epoch0 for i in b) == list(range(1000))
    assert len(epoch0) == len(sampler) == 32
    assert epoch0 != epoch1  # reshuffled every epoch
    sampler.set_epoch(0)
    assert list(sampler) == epoch0  # and reproducible from (seed, epoch)

    def mean_padding(batches):
        return sum(max(lengths[i] for i in b) - lengths[i] for b in batches for i in b) / 1000

    perm = torch.randperm(1000, generator=g).tolist()
    random_batches = [perm[i:i + 32] for i in range(0, 1000, 32)]
    assert mean_padding(epoch0) < 0.25 * mean_padding(random_batches)


def test_metrics_stay_float32_inside_a_bf16_autocast_region():
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(50, 32, generator=g), dim=1)
    t2i = torch.arange(50).repeat_interleave(2)
    txt = torch.nn.functional.normalize(img[t2i] + 0.5 * torch.randn(100, 32, generator=g), dim=1)
    plain = metrics.retrieval(img, txt, t2i, chunk=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = metrics.retrieval(img, txt, t2i, chunk=16)
        gap = metrics.modality_gap(img, txt)
    assert inside.metrics == plain.metrics
    assert gap == metrics.modality_gap(img, txt)


def test_random_vit_b32_has_the_openai_architecture_offline():
    from training.models import build_model

    model = build_model(RunConfig(model="random-clip-vit-b32", unlock_image=-1, unlock_text=-1))
    vision = model.image_tower.units[0].model.config
    text = model.text_tower.units[0].model.config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.patch_size, vision.image_size) == (768, 12, 32, 224)
    assert (text.hidden_size, text.num_hidden_layers, text.max_position_embeddings, text.vocab_size) == \
        (512, 12, 77, 49408)
    assert model.image_head.out_features == model.text_head.out_features == 512
    n = sum(p.numel() for p in model.parameters())
    assert 149e6 < n < 153e6  # openai/clip-vit-base-patch32 has 151.3M parameters


def test_auto_precision_is_bf16_only_where_the_hardware_has_it(monkeypatch):
    from training.step import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: False, raising=False)
    assert resolve_precision("auto") == "no"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert resolve_precision("auto") == "bf16"
    assert resolve_precision("fp16") == "fp16" and resolve_precision("no") == "no"


def test_training_step_attention_is_the_math_kernel_on_a_cpu_under_bf16():
    """PyTorch's CPU flash-attention backward is slow in bf16 (bench/cpu_precision.py); the
    training step turns it off there, and only there."""
    from training.step import training_attention

    flash, math_ = torch.backends.cuda.flash_sdp_enabled, torch.backends.cuda.math_sdp_enabled
    assert flash() and math_()
    with training_attention(torch.device("cpu"), "bf16"):
        assert not flash() and math_()
    assert flash()  # restored after the step
    for device, precision in (("cpu", "no"), ("cuda", "bf16"), ("cuda", "no")):
        with training_attention(torch.device(device), precision):
            assert flash()


def test_bf16_features_are_cached_apart_from_fp32_ones(synthetic_data, tmp_path, monkeypatch):
    from data.manifest import load_manifest
    from training import features
    from training.features import TowerInputs
    from training.models import build_model

    monkeypatch.setattr(features, "_memory", {})  # other tests' features stay in memory otherwise

    model = build_model(RunConfig(model="tiny-clip", image_size=32))
    pairs = Pairs.from_manifest(load_manifest(synthetic_data))
    fp32 = TowerInputs(model, pairs, tmp_path, show_progress=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = TowerInputs(model, pairs, tmp_path, show_progress=False)
    assert fp32.stats["image_cache"].startswith("miss") and bf16.stats["image_cache"].startswith("miss")
    assert not torch.equal(bf16.image_prefix.float(), fp32.image_prefix)  # computed in bf16, not reused
    torch.testing.assert_close(bf16.image_prefix.float(), fp32.image_prefix, atol=0.1, rtol=0.05)
    assert len(list(tmp_path.glob("*.pt"))) == 4  # image and text, once per precision


def test_train_py_decodes_and_tokenizes_in_loader_workers_with_length_groups(synthetic_data, tmp_path, monkeypatch):
    """Both towers trainable (nothing cached): pixels and tokens come from 2 loader workers,
    batches are length-grouped through Accelerate's prepared loader, and the run finishes
    with one metrics row per step."""
    from core import run_store
    from training.train import main

    code = main(["--no-umap", "--data", str(synthetic_data), "--model", "tiny-clip",
                 "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"),
                 "--only", "heads-only", "--seeds", "1",
                 "--set", "epochs=2", "batch_size=8", "image_size=32", "unlock_image=-1", "unlock_text=-1",
                 "num_workers=2", "group_by_length=true", "eval_every=2",
                 'precision="no"'])  # as the other tests: one Accelerator state per process
    assert code == 0
    run = run_store.list_runs(tmp_path / "runs")[0]
    assert run.state == "FINISHED"
    metrics = run_store.read_metrics(run.path)
    steps = sorted(metrics["step"].unique())
    assert steps == list(range(1, run.status["step"] + 1)) and len(steps) >= 4
    assert run.status["cache"] == {"image_cache": "off", "text_cache": "off"}


def test_pad_multiple_rounds_the_width_up_and_the_text_tower_reads_the_same():
    """Captions padded past the batch's longest to a multiple of 16 (never past max_text_len):
    the extra positions are padding, and the text tower's output does not change."""
    from bench.gpu_step import padded_width
    from training.models import build_model, minilm_tower

    tokenizer = tokenizer_for_tests()

    def tokens(captions, max_text_len, pad_multiple):
        items = [{"caption_row": i, "image_row": i, "caption": c} for i, c in enumerate(captions)]
        return Collate(tokenizer, max_text_len, pad_multiple)(items)["tokens"]

    captions = ["a red circle", "a picture of a big blue square on a white ground"]
    plain, padded = tokens(captions, 32, 1), tokens(captions, 32, 16)
    width = plain["input_ids"].shape[1]
    assert width < 16 and padded["input_ids"].shape == (2, 16) == padded["attention_mask"].shape
    assert torch.equal(padded["input_ids"][:, :width], plain["input_ids"])
    assert torch.equal(padded["attention_mask"][:, :width], plain["attention_mask"])
    assert (padded["attention_mask"][:, width:] == 0).all()
    assert (padded["input_ids"][:, width:] == tokenizer.pad_token_id).all()
    long_caption = " ".join(["word"] * 40)  # 42 tokens
    assert tokens(captions + [long_caption], 64, 16)["input_ids"].shape[1] == 48
    assert tokens(captions + [long_caption], 20, 16)["input_ids"].shape[1] == 20  # capped, not 32
    assert padded_width([width], 16) == 16 and padded_width([42], 16) == 48  # the GPU bench counts these

    # CLIP's text tower pools its end token; MiniLM's (offline-default) averages over the mask.
    towers = [build_model(RunConfig(model="tiny-clip", image_size=32, embed_dim=16)).text_tower, minilm_tower()[0]]
    with torch.no_grad():
        for tower in towers:
            torch.testing.assert_close(tower(padded), tower(plain))
