"""Each training knob does what it says: locked towers stay put, the temperature clamp
holds, the schedule has its shape, weight decay skips what open_clip skips, and the
feature cache is reused and invalidated as it should be."""

import math

import pytest
import torch

from core.config import COMPILE_MODES, ConfigError, RunConfig
from data.manifest import load_manifest
from training import features
from training.features import TowerInputs
from training.losses import clip_loss
from training.models import MAX_LOGIT_SCALE, build_model
from training.pairs import Pairs
from training.step import lr_lambda, param_groups

TINY = dict(model="tiny-clip", image_size=32, embed_dim=16)


def _steps(model, cfg, inputs, n=3):
    optimizer = torch.optim.AdamW(param_groups(model, cfg), betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    rows = torch.arange(8)
    for _ in range(n):
        image, text, scale = model(*inputs.rows_batch(rows, rows).model_args())
        clip_loss(image, text, scale).backward()
        optimizer.step()
        optimizer.zero_grad()
        model.clamp_logit_scale()


@pytest.fixture
def pairs(synthetic_data):
    return Pairs.from_manifest(load_manifest(synthetic_data))


def test_locked_towers_get_no_gradient_and_keep_their_weights(pairs, tmp_path):
    cfg = RunConfig(**TINY, unlock_text=-1)
    model = build_model(cfg)
    inputs = TowerInputs(model, pairs, tmp_path, show_progress=False)
    image_before = {k: v.clone() for k, v in model.image_tower.state_dict().items()}
    text_before = {k: v.clone() for k, v in model.text_tower.state_dict().items()}
    head_before = model.image_head.weight.clone()
    _steps(model, cfg, inputs)
    assert all(p.grad is None for p in model.image_tower.parameters())
    assert all(torch.equal(image_before[k], v) for k, v in model.image_tower.state_dict().items())
    assert any(not torch.equal(text_before[k], v) for k, v in model.text_tower.state_dict().items())
    assert not torch.equal(head_before, model.image_head.weight)


def test_temperature_clamp_holds_when_the_scale_starts_above_it(pairs, tmp_path):
    cfg = RunConfig(**TINY, init_temperature=0.01, lr=0.5)  # 1/0.01 = 100 = the limit
    model = build_model(cfg)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(500.0))
    inputs = TowerInputs(model, pairs, tmp_path, show_progress=False)
    _steps(model, cfg, inputs, n=1)
    assert model.logit_scale.item() <= MAX_LOGIT_SCALE + 1e-6


def test_step_logs_the_gradient_norm_and_takes_a_plain_adamw_step(pairs, tmp_path):
    """finish_step reports the L2 norm of all trainable gradients (not of the weights), and its
    update is a plain AdamW step at the schedule's first learning rate."""
    from training.step import finish_step, lr_lambda, make_optimizer

    cfg = RunConfig(**TINY, unlock_text=-1)
    runs = []
    for _ in range(2):
        model = build_model(cfg)
        inputs = TowerInputs(model, pairs, tmp_path, show_progress=False)
        image, text, scale = model(*inputs.rows_batch(torch.arange(8), torch.arange(8)).model_args())
        loss = clip_loss(image, text, scale)
        loss.backward()
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = make_optimizer(model, cfg)
        runs.append((model, trainable, optimizer, loss.detach()))
    (model, trainable, optimizer, loss), (peer, _, peer_optimizer, _) = runs
    expected = torch.cat([p.grad.flatten() for p in trainable if p.grad is not None]).norm().item()
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, 10))
    values = finish_step(model, trainable, optimizer, schedule, loss)
    assert values["grad_norm"] == pytest.approx(expected, rel=1e-5)
    assert values["loss"] == pytest.approx(loss.item())
    for group, peer_group in zip(optimizer.param_groups, peer_optimizer.param_groups):
        peer_group["lr"] = group["initial_lr"] * lr_lambda(cfg, 10)(0)
    peer_optimizer.step()
    peer.clamp_logit_scale()
    for (name, a), b in zip(model.named_parameters(), peer.parameters()):
        assert torch.allclose(a, b, atol=1e-7), name


def test_fixed_temperature_does_not_train():
    model = build_model(RunConfig(**TINY, learn_temperature=False, init_temperature=0.05))
    assert not model.logit_scale.requires_grad
    assert math.exp(-model.logit_scale.item()) == pytest.approx(0.05)


def test_schedule_warmup_then_cosine():
    cfg = RunConfig(warmup_steps=10)
    f = lr_lambda(cfg, total_steps=110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0)
    const = lr_lambda(RunConfig(warmup_steps=10, schedule="constant"), total_steps=110)
    assert const(5) == pytest.approx(0.6) and const(100) == 1.0


def test_no_weight_decay_on_biases_norms_embeddings_and_temperature():
    cfg = RunConfig(**TINY, unlock_image=-1, unlock_text=-1, weight_decay=0.2, lr=1e-3, tower_lr=1e-5)
    model = build_model(cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    for group in param_groups(model, cfg):
        for p in group["params"]:
            name = names[id(p)]
            exempt = p.ndim < 2 or "norm" in name or "embeddings" in name or "logit_scale" in name
            assert group["weight_decay"] == (0.0 if exempt else 0.2), name
            assert group["lr"] == (1e-5 if name.startswith(("image_tower", "text_tower")) else 1e-3), name
    assert any(names[id(p)] == "logit_scale" for g in param_groups(model, cfg) for p in g["params"])


def test_feature_cache_hit_on_second_run_and_invalidated_by_preprocessing(pairs, tmp_path, monkeypatch):
    monkeypatch.setattr(features, "_memory", {})  # only the disk cache may serve the second run
    first = TowerInputs(build_model(RunConfig(**TINY)), pairs, tmp_path, show_progress=False)
    assert first.stats == {"image_cache": "miss (from cut 0, onnxruntime)", "text_cache": "miss"}
    monkeypatch.setattr(features, "_memory", {})
    second = TowerInputs(build_model(RunConfig(**TINY)), pairs, tmp_path, show_progress=False)
    assert second.stats == {"image_cache": "hit", "text_cache": "hit"}
    assert torch.equal(first.image_prefix, second.image_prefix)
    # Features PyTorch computed are another entry: ONNX Runtime's are close to them, not equal.
    monkeypatch.setattr(features, "_memory", {})
    monkeypatch.setattr(features.cpu_inference, "available", lambda: "onnxruntime is not installed")
    torch_run = TowerInputs(build_model(RunConfig(**TINY)), pairs, tmp_path, show_progress=False)
    assert torch_run.stats["image_cache"] == "miss (from cut 0, torch)"
    assert torch.allclose(torch_run.image_prefix, first.image_prefix, atol=1e-4)
    monkeypatch.undo()
    other = TowerInputs(build_model(RunConfig(**dict(TINY, image_size=48))), pairs, tmp_path,
                        show_progress=False)
    assert other.stats["image_cache"].startswith("miss")


def test_partly_unlocked_text_tower_trains_from_its_cached_bottom(pairs, tmp_path, monkeypatch):
    """With MiniLM's top two layers unlocked, the token states of the four frozen layers below
    are computed once; training from them gives the loss and gradients of training from tokens."""
    monkeypatch.setattr(features, "_memory", {})
    cfg = RunConfig(model="offline-default", image_size=32, embed_dim=16, unlock_text=2)
    model = build_model(cfg)
    inputs = TowerInputs(model, pairs, tmp_path, show_progress=False)
    assert inputs.stats["text_cache"] == "miss (cut 5)"
    assert inputs.text_start == 5
    rows = torch.arange(8)
    tokens = model.tokenize(pairs.captions["caption"].iloc[:8].tolist())
    cached = inputs.text_input(rows)
    assert cached["hidden"].shape[:2] == tokens["input_ids"].shape  # trimmed to these captions' longest
    assert torch.equal(cached["attention_mask"], tokens["attention_mask"])
    image = inputs.image_input(rows)
    results = []
    for start, text in ((5, cached), (0, tokens)):
        model.zero_grad()
        loss = clip_loss(*model(image, text, inputs.image_start, start))
        loss.backward()
        results.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss_cached, g_cached), (loss_tokens, g_tokens) = results
    assert loss_cached == pytest.approx(loss_tokens, rel=1e-5)
    assert g_cached.keys() == g_tokens.keys() and any(".layer.5." in n for n in g_cached)
    for name in g_cached:
        torch.testing.assert_close(g_cached[name], g_tokens[name], atol=1e-6, rtol=1e-4)

    monkeypatch.setattr(features, "_memory", {})
    assert TowerInputs(model, pairs, tmp_path, show_progress=False).stats["text_cache"] == "hit"
    deeper = build_model(RunConfig(model="offline-default", image_size=32, embed_dim=16, unlock_text=3))
    assert TowerInputs(deeper, pairs, tmp_path, show_progress=False).stats["text_cache"] == "miss (cut 4)"


@pytest.mark.parametrize("steps", [2, 4])
def test_accumulation_equals_one_big_batch(pairs, tmp_path, steps):
    """k micro-batches of b give the loss and the gradients of one batch of k*b."""
    from training.losses import accumulated_clip_backward

    cfg = RunConfig(**TINY, unlock_image=-1, unlock_text=1)
    rows = torch.arange(8)
    results = []
    for k in (1, steps):
        model = build_model(cfg)
        inputs = TowerInputs(model, pairs, tmp_path, show_progress=False)
        loss = accumulated_clip_backward(model, inputs.rows_batch(rows, rows), k, lambda loss: loss.backward())
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss, grads))
    (loss1, g1), (lossk, gk) = results
    assert lossk.item() == pytest.approx(loss1.item(), rel=1e-5)
    assert g1.keys() == gk.keys() and "logit_scale" in g1 and any(n.startswith("image_tower") for n in g1)
    for name in g1:
        assert torch.allclose(g1[name], gk[name], atol=1e-6, rtol=1e-4), name


@pytest.mark.parametrize("key, value, message", [
    ("compile_mode", "fast", "compile_mode must be one of 'default', 'reduce-overhead', 'max-autotune'"),
    ("compile_mode", None, "'compile_mode' must be str"),
    ("pad_multiple", 0, "pad_multiple must be at least 1"),
    ("pad_multiple", 1.5, "'pad_multiple' must be int"),
])
def test_compile_mode_and_pad_multiple_are_validated(key, value, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**{key: value})
    assert (RunConfig().compile_mode, RunConfig().pad_multiple) == ("default", 1)  # today's behaviour
    assert all(RunConfig(compile_mode=m).compile_mode == m for m in COMPILE_MODES)


def test_cuda_graph_mode_trains_through_train_py(synthetic_data, tmp_path, monkeypatch):
    """compile_mode = "reduce-overhead" with bucketed caption widths, through train.py: on the CPU
    inductor compiles the towers (CUDA graphs are a GPU matter), the loop marks every step's
    start for them, and the run finishes with a finite loss. About 75 s on two cores with a
    cold inductor cache, 10 s with a warm one."""
    from core import run_store
    from training.train import main

    marks = []
    mark = torch.compiler.cudagraph_mark_step_begin
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1) or mark())
    torch._dynamo.utils.counters.clear()
    try:
        code = main(["--no-umap", "--data", str(synthetic_data), "--model", "tiny-clip", "--runs-dir",
                                  str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"), "--only",
                                  "heads-only", "--seeds", "1", "--set", "epochs=1", "batch_size=40", "image_size=32",
                                  "unlock_text=-1", "compile=true", 'compile_mode="reduce-overhead"',
                                  "pad_multiple=16", 'precision="no"'])
        compiled = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    finally:
        torch._dynamo.reset()  # the compiled code of this test's model, not other tests' business
    assert code == 0 and compiled > 0
    run = run_store.list_runs(tmp_path / "runs")[0]
    assert run.state == "FINISHED" and run.status["step"] == len(marks) == 2
    loss = run_store.read_metrics(run.path).query("name == 'loss'")["value"]
    assert len(loss) == 2 and loss.map(math.isfinite).all()
