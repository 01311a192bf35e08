"""Evaluation of a model on one split: retrieval both ways, zero-shot accuracy, the
modality gap and pair cosines, plus the per-sample tables the readers show.

`figure_intervals` gives every retrieval figure and the zero-shot accuracy a 95% bootstrap
interval over the split's images (each resampled with all its captions: core/stats.py).
The trainer asks for them where a figure is reported (step 0, val's, test's and extra sets' final evaluation,
WiSE-FT's mixes), not at the evaluations in between, which only draw curves."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from core import run_store
from core.stats import recall_at_k_intervals
from data.manifest import load_manifest
from training import metrics
from training.features import TowerInputs
from training.models import ClipModel
from training.pairs import Pairs, SplitView, to_device


@dataclass
class EvalSet:
    """What one evaluation covers: its name (the split column of eval.parquet), the rows, the
    tower inputs that serve them, and the labels zero-shot classification chooses among.
    `reported_only`: evaluated where figures are reported (step 0, the end), never in between:
    the test split, which no choice may look at while training runs."""

    name: str
    view: SplitView
    inputs: TowerInputs
    labels: list[str]
    reported_only: bool = False


def dataset_labels(pairs: Pairs) -> list[str]:
    return sorted(set(pairs.images["label"]) - {""})


def select(pairs: Pairs, spec: dict, where: str) -> SplitView:
    """The rows an evaluation set spec names (split, include_labels, exclude_labels); none is an error."""
    for key in ("include_labels", "exclude_labels"):
        pairs.check_labels(spec.get(key), where)
    view = pairs.subset(spec["split"], include_labels=spec.get("include_labels"),
                        exclude_labels=spec.get("exclude_labels"))
    if len(view.image_rows) < 2:
        splits = sorted(set(pairs.images["split"]))
        raise ValueError(f"{where} selects {len(view.image_rows)} image(s) (split {spec['split']!r}; "
                         f"the dataset's splits: {splits}): retrieval needs at least two")
    return view


def extra_eval_sets(cfg, model: ClipModel, pairs: Pairs, inputs: TowerInputs, cache_dir,
                    show_progress: bool) -> list[EvalSet]:
    """The run's extra evaluation sets (cfg.extra_evals); another dataset gets its own tower
    inputs, served by the feature cache like the run's own."""
    out = []
    for spec in cfg.extra_evals or []:
        own = spec["data"] == cfg.data
        set_pairs = pairs if own else Pairs.from_manifest(load_manifest(spec["data"]))
        set_inputs = inputs if own else TowerInputs(model, set_pairs, cache_dir, show_progress=show_progress)
        view = select(set_pairs, spec, f"extra evaluation set {spec['name']!r}")
        out.append(EvalSet(spec["name"], view, set_inputs, dataset_labels(set_pairs)))
    return out




@dataclass
class Evaluation:
    values: dict[str, float]
    image_emb: torch.Tensor
    text_emb: torch.Tensor
    retrieval: metrics.Retrieval
    zero_shot_correct: torch.Tensor | None  # [N] bool per image; None without labels
    text_to_image: torch.Tensor  # [M] each caption's image index
    prompts: tuple[list[str], list[str], torch.Tensor] | None = None  # (labels, prompt texts, [L, d] embeddings)


@torch.no_grad()
def embed(model: ClipModel, inputs: TowerInputs, view: SplitView, batch_size: int = 256):
    """L2-normalised embeddings of the view's images and captions (float32, on the CPU)."""
    device = model.logit_scale.device
    images, texts = [], []
    for lo in range(0, len(view.image_rows), batch_size):
        rows = torch.as_tensor(view.image_rows[lo:lo + batch_size])
        images.append(model.embed_image_input(to_device(inputs.image_input(rows), device), inputs.image_start)
                      .float().cpu())
    for lo in range(0, len(view.caption_rows), batch_size):
        rows = torch.as_tensor(view.caption_rows[lo:lo + batch_size])
        texts.append(model.embed_text_input(to_device(inputs.text_input(rows), device), inputs.text_start)
                     .float().cpu())
    return torch.cat(images), torch.cat(texts)



@torch.no_grad()
def evaluate(model: ClipModel, inputs: TowerInputs, view: SplitView, label_names: list[str],
             prompt_template: str, top_k: int) -> Evaluation:
    image_emb, text_emb = embed(model, inputs, view)
    t2i = view.text_to_image()
    result = metrics.retrieval(image_emb, text_emb, t2i, top_k=top_k)
    values = dict(result.metrics)
    values["modality_gap"] = metrics.modality_gap(image_emb, text_emb)
    values.update(metrics.pair_cosines(image_emb, text_emb, t2i))
    correct = prompts = None
    if label_names:
        device = model.logit_scale.device
        texts = [prompt_template.format(n) for n in label_names]
        label_emb = model.embed_text_input(to_device(inputs.prompt_input(tuple(texts)), device),
                                           inputs.text_start).float().cpu()
        prompts = (list(label_names), texts, label_emb)
        correct = metrics.zero_shot_correct(image_emb, view.images["label"].tolist(), label_emb, label_names)
        values["zero_shot_accuracy"] = correct.double().mean().item()
        values["zero_shot_chance"] = 1.0 / len(label_names)
    values["temperature"] = float(torch.exp(-model.logit_scale.detach().float()).item())
    values["n_images"], values["n_captions"] = float(len(image_emb)), float(len(text_emb))
    return Evaluation(values, image_emb, text_emb, result, correct, t2i, prompts)


def figure_intervals(ev: Evaluation) -> dict[str, tuple[float, float]]:
    """metric -> (low, high) of R@1/5/10 and mean rank both ways and zero-shot accuracy."""
    r = ev.retrieval
    zero_shot = {} if ev.zero_shot_correct is None else {"zero_shot_accuracy": ev.zero_shot_correct.double().numpy()}
    found = recall_at_k_intervals(r.image_rank.numpy(), r.text_rank.numpy(), ev.text_to_image.numpy(),
                                  image_outcomes=zero_shot)
    return {metric: (low, high) for metric, (_, low, high) in found.items()}


def embeddings_frame(view: SplitView, ev: Evaluation, step: int) -> pd.DataFrame:
    images, captions = view.images, view.captions
    image_rows = pd.DataFrame(dict(
        sample_id=images["sample_id"].to_numpy(), modality="image", image_id=images["image_id"].to_numpy(),
        caption=images["caption"].to_numpy(), label=images["label"].to_numpy(), split=view.split, step=step,
        embedding=list(ev.image_emb.numpy().astype(np.float32))))
    text_rows = pd.DataFrame(dict(
        sample_id=captions["sample_id"].to_numpy(), modality="text", image_id=captions["image_id"].to_numpy(),
        caption=captions["caption"].to_numpy(), label=captions["label"].to_numpy(), split=view.split, step=step,
        embedding=list(ev.text_emb.numpy().astype(np.float32))))
    frames = [image_rows, text_rows]
    if ev.prompts is not None:  # the class prompts, for zero-shot figures recomputed from the store
        labels, texts, emb = ev.prompts
        frames.append(pd.DataFrame(dict(
            sample_id=[f"prompt:{x}" for x in labels], modality=run_store.PROMPT, image_id="", caption=texts,
            label=labels, split=view.split, step=step, embedding=list(emb.numpy().astype(np.float32)))))
    return pd.concat(frames, ignore_index=True)


def samples_frame(view: SplitView, ev: Evaluation, step: int, thumbnails: dict[str, bytes]) -> pd.DataFrame:
    """Per image and per caption of the view: its rank, top-k and outcomes (samples.parquet)."""
    images, captions = view.images, view.captions
    r = ev.retrieval
    cap_ids = captions["sample_id"].to_numpy()
    img_ids = images["image_id"].to_numpy()
    image_rows = pd.DataFrame(dict(
        modality="image", split=view.split, sample_id=images["sample_id"].to_numpy(), image_id=img_ids,
        caption=images["caption"].to_numpy(), label=images["label"].to_numpy(), step=step,
        rank=r.image_rank.numpy(), positive_cosine=r.image_positive.numpy().astype(np.float32),
        topk_ids=[list(cap_ids[row]) for row in r.image_topk.numpy()],
        topk_scores=list(r.image_topk_scores.numpy().astype(np.float32)),
        thumbnail=[thumbnails.get(i) for i in img_ids], tied=r.image_tied.numpy(),
        zero_shot_correct=(np.full(len(img_ids), np.nan) if ev.zero_shot_correct is None
                           else ev.zero_shot_correct.numpy().astype(float))))
    t2i = view.text_to_image().numpy()
    text_pos = ev.text_emb.mul(ev.image_emb[view.text_to_image()]).sum(1).numpy().astype(np.float32)
    text_rows = pd.DataFrame(dict(
        modality="text", split=view.split, sample_id=cap_ids, image_id=captions["image_id"].to_numpy(),
        caption=captions["caption"].to_numpy(), label=captions["label"].to_numpy(), step=step,
        rank=r.text_rank.numpy(), positive_cosine=text_pos,
        topk_ids=[list(img_ids[row]) for row in r.text_topk.numpy()],
        topk_scores=list(r.text_topk_scores.numpy().astype(np.float32)),
        thumbnail=[None] * len(t2i), tied=r.text_tied.numpy(), zero_shot_correct=np.nan))
    return pd.concat([image_rows, text_rows], ignore_index=True)
