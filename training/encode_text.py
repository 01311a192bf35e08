"""Embed texts with a finished run's text tower and head, for readers that never import torch:
the write-up's free-text queries and zero-shot prompts. Prints one JSON object,
{"texts": [...], "embeddings": [[...], ...]}, the embeddings L2-normalised as evaluation's.

    python training/encode_text.py runs/default/heads-only.s0 "a red apple" "a crying face"

The run's model is rebuilt from its config.json and its final_weights.safetensors loaded into
it; a file whose frozen part differs from the rebuilt model's (another pretrained tower, another
seed of a random one) is refused, as init_from refuses it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished run's folder (runs/<sweep>/<run>)")
    parser.add_argument("texts", nargs="+", help="the texts to embed")
    return parser.parse_args(argv)


def encode(run: Path, texts: list[str]) -> list[list[float]]:
    """The run's embeddings of `texts`, as lists of floats."""
    import torch

    from training.trained_weights import trained_model

    model = trained_model(run)
    with torch.no_grad():
        return model.encode_text(model.tokenize(texts)).float().tolist()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    json.dump({"texts": args.texts, "embeddings": encode(args.run, args.texts)}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
