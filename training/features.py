"""Tower inputs for the training loop, with the frozen part of each tower computed once.

With augmentation off, a locked tower (or the locked bottom of a partly unlocked one)
gives the same output for an image or a caption every epoch and in every run of a sweep
that shares the model and the data. `TowerInputs` computes those outputs once, keeps them
in memory, and saves them under the cache folder keyed by model, weights, data,
preprocessing and cut point, so a second run or a second sweep loads them instead of
recomputing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from core import atomic
from core.config import RunConfig
from data.manifest import load_manifest
from training import cpu_inference
from training.models import ClipModel, build_model, weights_fingerprint
from training.pairs import Pairs, load_pixels, normalize, to_device

CACHE_DIR = Path(__file__).resolve().parents[1] / ".cache" / "features"
_memory: dict[str, torch.Tensor] = {}


def data_fingerprint(pairs: Pairs) -> str:
    """Which images, in which order, with which bytes: a re-prepared dataset (other size,
    other subset) never reuses features of the old one; an identical one does."""
    h = hashlib.sha256()
    for path in pairs.images["image_path"]:
        h.update(hashlib.sha256(Path(path).read_bytes()).digest())
    h.update("\n".join(pairs.captions["caption"]).encode())
    return h.hexdigest()[:20]


def _autocast_state() -> str:
    """The precision features are computed at (callers enter the run's autocast): bf16
    features are close to, but not, the fp32 ones, so each has its own cache entry."""
    if torch.is_autocast_enabled("cpu"):
        return f"cpu:{torch.get_autocast_dtype('cpu')}"
    return "off"


def _pad_tokens(x: torch.Tensor, width: int) -> torch.Tensor:
    """Zeros after the last token (dim 1) up to `width`: padding, as the attention mask says."""
    pad = [0, 0] * (x.ndim - 2) + [0, width - x.shape[1]]
    return torch.nn.functional.pad(x, pad)


@dataclass(frozen=True)
class TowerBatch:
    """A batch as ClipModel.forward takes it: each tower's input, and the stage of the tower
    it enters at (0: pixels and tokens; the tower's stage count: its finished features)."""

    image: Any  # pixels, or the cached output of the image tower's frozen stages
    text: Any  # tokens, cached features, or the frozen bottom's token states
    image_start: int = 0
    text_start: int = 0

    def model_args(self) -> tuple:
        return self.image, self.text, self.image_start, self.text_start

    def split(self, k: int) -> list[TowerBatch]:
        """k micro-batches (fewer when the batch is shorter than k)."""
        images, texts = _chunks(self.image, k), _chunks(self.text, k)
        return [replace(self, image=i, text=t) for i, t in zip(images, texts)]


def _chunks(x, k: int) -> list:
    if isinstance(x, dict):
        parts = {key: value.chunk(k) for key, value in x.items()}
        return [{key: parts[key][i] for key in x} for i in range(len(next(iter(parts.values()))))]
    return list(x.chunk(k))


def _key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


class TowerInputs:
    """What each tower's trainable part takes for given rows: cached prefixes or raw input."""

    def __init__(self, model: ClipModel, pairs: Pairs, cache_dir: Path = CACHE_DIR,
                 batch_size: int = 64, show_progress: bool = True, cache: bool = True, text: bool = True):
        self.model, self.pairs = model, pairs
        self.cache_dir = Path(cache_dir)
        self.batch_size, self.show_progress = batch_size, show_progress
        self.stats = {"image_cache": "off", "text_cache": "off"}
        base = dict(model=model.name, data=data_fingerprint(pairs), preprocess=model.preprocess.__dict__,
                    max_text_len=model.max_text_len, autocast=_autocast_state())
        self.image_cut = model.image_tower.cache_point
        self.image_prefix = None
        if cache and self.image_cut > 0:
            # Once per unit: the search for a cached earlier cut asks for many prefixes.
            self._stage_prints = [weights_fingerprint(u) for u in model.image_tower.stages]
            self.image_prefix = self._image_prefix(base)
        # The locked text tower's features, or the frozen bottom's token states ("hidden",
        # "attention_mask", padded to the longest caption) when only its top is unlocked.
        self.text_cut = model.text_tower.cache_point
        self.text_cached = None
        self._prompts: dict[tuple[str, ...], object] = {}  # zero-shot prompts' frozen part, once
        if cache and text and self.text_cut > 0:
            self.text_cached = self._text_prefix(base)

    # -------------------------------------------------------------- images

    def _image_key(self, base: dict, cut: int, runtime: str) -> str:
        # Computed with batch norms folded into the convolutions: a key of its own. ONNX
        # Runtime's outputs are within float rounding of PyTorch's, not equal: another key.
        parts = dict(base, tower="image", cut=cut, weights=self._stage_prints[:cut], batch_norms="folded")
        return _key(parts if runtime == "torch" else dict(parts, runtime=runtime))

    def _image_prefix(self, base: dict) -> torch.Tensor:
        cut = self.image_cut
        on_cpu = self.model.logit_scale.device.type == "cpu"
        runtime = "onnxruntime" if on_cpu and cpu_inference.available() is None else "torch"
        cached = self._load(self._image_key(base, cut, runtime))
        if cached is not None:
            self.stats["image_cache"] = "hit"
            return cached
        # Start from the deepest cached earlier cut if there is one: cheaper than pixels.
        start, source = 0, None
        for j in range(cut - 1, 0, -1):
            source = self._load(self._image_key(base, j, runtime))
            if source is not None:
                start = j
                break
        frozen = self.model.image_tower.inference_stages(start, cut)
        n = len(self.pairs.images)
        if runtime != "torch":
            first = (source[:2] if source is not None else
                     load_pixels(self.pairs.images["image_path"].iloc[:2].tolist(), self.model.preprocess))
            frozen, runtime = cpu_inference.runner(frozen, first)
        key = self._image_key(base, cut, runtime)
        self.stats["image_cache"] = f"miss (from cut {start}, {runtime})"
        out = None
        bar = tqdm(total=n, desc=f"image features (cut {cut})", unit="img",
                   disable=not self.show_progress, leave=False)
        with torch.inference_mode():
            for lo in range(0, n, self.batch_size):
                hi = min(lo + self.batch_size, n)
                if source is None:
                    x = load_pixels(self.pairs.images["image_path"].iloc[lo:hi].tolist(),
                                    self.model.preprocess)
                else:
                    x = source[lo:hi]
                if x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = frozen(x)
                if out is None:
                    out = torch.empty((n, *y.shape[1:]), dtype=y.dtype)
                out[lo:hi] = y
                bar.update(hi - lo)
        bar.close()
        self._save(key, out)
        return out

    # -------------------------------------------------------------- text

    def _text_prefix(self, base: dict):
        tower, cut = self.model.text_tower, self.text_cut
        locked = cut == len(tower.stages)
        # The locked tower keeps the key it had before towers were cut into stages.
        parts = (dict(tower="text", weights=weights_fingerprint(tower)) if locked else
                 dict(tower="text", cut=cut, weights=[weights_fingerprint(s) for s in tower.stages[:cut]]))
        key = _key(dict(base, **parts))
        cached = self._load(key)
        if cached is not None:
            self.stats["text_cache"] = "hit"
            return cached
        self.stats["text_cache"] = "miss" if locked else f"miss (cut {cut})"
        captions = self.pairs.captions["caption"].tolist()
        chunks = []
        with torch.inference_mode():
            for lo in range(0, len(captions), 256):
                chunks.append(tower.forward_stages(self.model.tokenize(captions[lo:lo + 256]), 0, cut))
        if locked:
            out = torch.cat(chunks)
        else:  # token states of chunks padded to their own longest, to the longest of all
            width = max(c["hidden"].shape[1] for c in chunks)
            out = {name: torch.cat([_pad_tokens(c[name], width) for c in chunks])
                   for name in ("hidden", "attention_mask")}
        self._save(key, out)
        return out

    # -------------------------------------------------------------- storage

    def _load(self, key: str):
        if key in _memory:
            return _memory[key]
        path = self.cache_dir / f"{key}.pt"
        if not path.exists():
            return None
        try:
            tensor = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a torn or foreign file: recompute rather than fail
            return None
        _memory[key] = tensor
        return tensor

    def _save(self, key: str, tensor) -> None:
        _memory[key] = tensor
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # Not durable: a file torn by a power cut fails to load and is computed again.
        atomic.write(self.cache_dir / f"{key}.pt", lambda tmp: torch.save(tensor, tmp), durable=False)

    # -------------------------------------------------------------- batches

    def image_input(self, image_rows: torch.Tensor):
        """Cached prefixes of these images when there are, else their pixels."""
        if self.image_prefix is not None:
            return self.image_prefix[image_rows]
        paths = self.pairs.images["image_path"].iloc[image_rows.tolist()].tolist()
        return load_pixels(paths, self.model.preprocess)

    def text_input(self, caption_rows: torch.Tensor):
        """Cached text features of these captions when the tower is locked, the cached token
        states of its frozen bottom (trimmed to these captions' longest) when its top is
        unlocked, else tokens."""
        cached = self.text_cached
        if cached is None:
            return self.model.tokenize(self.pairs.captions["caption"].iloc[caption_rows.tolist()].tolist())
        if isinstance(cached, torch.Tensor):
            return cached[caption_rows]
        mask = cached["attention_mask"][caption_rows]
        width = int(mask.sum(1).max())
        return {"hidden": cached["hidden"][caption_rows, :width], "attention_mask": mask[:, :width]}

    def prompt_input(self, prompts: tuple[str, ...]):
        """The text input of zero-shot label prompts (text_start applies): their frozen part is
        computed once, not at every evaluation, as the captions' is."""
        if self.text_cached is None:
            return self.model.tokenize(list(prompts))
        if prompts not in self._prompts:
            with torch.no_grad():
                self._prompts[prompts] = self.model.text_tower.forward_stages(
                    self.model.tokenize(list(prompts)), 0, self.text_cut)
        return self._prompts[prompts]

    @property
    def image_start(self) -> int:
        """The image tower stage that image_input's tensors enter at (0: pixels)."""
        return self.image_cut if self.image_prefix is not None else 0

    @property
    def text_start(self) -> int:
        """The text tower stage that text_input's tensors enter at (0: tokens)."""
        return self.text_cut if self.text_cached is not None else 0

    def rows_batch(self, image_rows: torch.Tensor, caption_rows: torch.Tensor) -> TowerBatch:
        """The model inputs of these image and caption rows."""
        return TowerBatch(self.image_input(image_rows), self.text_input(caption_rows),
                          self.image_start, self.text_start)

    def loader_batch(self, batch: dict, device: torch.device) -> TowerBatch:
        """The model inputs of a training loader's batch, on `device`: the pixels and tokens
        its workers decoded (uint8 pixels are normalised there), else the cached features of
        its rows."""
        if "pixels" in batch:
            image = normalize(to_device(batch["pixels"], device), self.model.preprocess)
        else:
            image = to_device(self.image_input(batch["image_rows"].cpu()), device)
        text = batch["tokens"] if "tokens" in batch else self.text_input(batch["caption_rows"].cpu())
        return TowerBatch(image, to_device(text, device), self.image_start, self.text_start)


def warm_cache(configs: list[RunConfig], cache_dir: Path, show_progress: bool) -> None:
    """Extract image features once per (model, data, size), at the lowest cut any run needs:
    runs that lock more of the tower derive theirs from it in a fraction of the time."""
    groups: dict[tuple, list[RunConfig]] = {}
    for cfg in configs:
        if cfg.unlock_image >= 0:  # a fully trainable tower has nothing to cache
            groups.setdefault((cfg.model, cfg.data, cfg.image_size), []).append(cfg)
    for group in groups.values():
        if len({c.unlock_image for c in group}) < 2:
            continue  # one cut only: the first run extracts it
        cfg = max(group, key=lambda c: c.unlock_image)
        model = build_model(cfg)
        pairs = Pairs.from_manifest(load_manifest(cfg.data))
        TowerInputs(model, pairs, cache_dir, show_progress=show_progress, text=False)
