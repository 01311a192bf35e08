"""Why the project's ViT-B/32 step is no faster on short captions (GPU; one diagnostic run).

    PYTHONPATH=... python bench/gpu_diagnosis.py      # on the GPU machine; OUT=DIR for diag.json

Times the eager project step on random batches, length-grouped batches, grouped batches
padded to a multiple of 8, and batches of one width, next to open_clip on the same lengths,
then profiles four grouped steps (torch.profiler: CPU time against CUDA time per step).
The H200 run of 2026-11-27 (bench/gpu_diagnosis_h200.txt) found the step CPU-bound: 395 ms
of CPU against 173 ms of CUDA time over four steps.
"""
import json
import os

import numpy as np
import torch

import bench.gpu_step as g
from training.models import tokenizer_for_tests

dev = torch.device("cuda"); tok = tokenizer_for_tests(); B = 256
rng = np.random.default_rng(0)
lengths = g.coco_lengths(B * 64, rng)
rand = g.batches_of_lengths(lengths, B, False, 1)[:8]
grp = g.batches_of_lengths(lengths, B, True, 1)
grp = [grp[i] for i in np.random.default_rng(2).choice(len(grp), 16, replace=False)]
imgs = torch.randn(B, 3, 224, 224, device=dev)
out = {}
oc_step, oc_fb, m = g.openclip_stepper(dev)
out["open_clip@coco"] = B / g.time_steps(oc_step, [(imgs, g.openclip_tokens(lb, dev)) for lb in rand], 6, 20, dev)
del oc_step, oc_fb, m; torch.cuda.empty_cache()
model, cfg = g.project_model("random-clip-vit-b32", False, dev)
step, fb = g.project_stepper(model, cfg, dev)
def toks(lb, mult=1, same=None):
    lb = [same] * len(lb) if same else lb
    t = g.project_tokens(lb, dev, tok)
    w = t["input_ids"].shape[1]; W = -(-w // mult) * mult
    if W > w:
        pad = lambda x, v: torch.nn.functional.pad(x, (0, W - w), value=v)
        t = {"input_ids": pad(t["input_ids"], tok.pad_token_id), "attention_mask": pad(t["attention_mask"], 0)}
    return t
for name, inputs in [("random", [(imgs, toks(lb)) for lb in rand]), ("grouped", [(imgs, toks(lb)) for lb in grp]),
                     ("grouped-pad8", [(imgs, toks(lb, 8)) for lb in grp]), ("same-width-14", [(imgs, toks(lb, 1, 14)) for lb in grp]),
                     ("same-width-14-padmask", [(imgs, {**toks(lb, 1, 14), "attention_mask": torch.cat([torch.ones(B, 13, dtype=torch.long, device=dev), torch.zeros(B, 1, dtype=torch.long, device=dev)], 1)}) for lb in grp[:2]])]:
    out[name] = B / g.time_steps(step, inputs, 6, 20, dev)
    print(name, round(out[name], 1), flush=True)
print("open_clip@coco", round(out["open_clip@coco"], 1))
from torch.profiler import ProfilerActivity, profile

inputs = [(imgs, toks(lb)) for lb in grp]
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    for i in range(4):
        step(*inputs[i])
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=14, max_name_column_width=60))
print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=10, max_name_column_width=60))
json.dump(out, open(os.path.join(os.environ.get("OUT", "."), "diag.json"), "w"), indent=1)
