"""How much of an encoder's output depends on its input: the spread of [CLS] and mean-pooled states over real pairs.

    python bench/representation_spread.py ENCODER [ENCODER ...] [--pairs TSV] [--limit 300] [--max-seq-len 64]

Each ENCODER is a run directory, one ``checkpoints/step_N`` or a Hugging Face directory. The pairs of a scored
pair TSV (default STS-B dev, its first --limit pairs) are packed as fine-tuning packs them (``[CLS] a [SEP] b
[SEP]``, segments 0 and 1, task-embedding row 0) and encoded without gradient. For the [CLS] state and for the
mean-pooled state it prints:

- the mean cosine between two different pairs' states (near 1: every input gets nearly the same vector);
- the input-dependent share of the states' energy: sum ||x - mean||^2 / sum ||x||^2 (near 0: the same).

A fine-tuning head on [CLS] reads only that input-dependent part: an encoder whose share is small starts its
fine-tuning from an almost constant feature, the situation in which a regression head can settle at the mean.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
STSB_DEV = REPO.parent / "shared" / "data" / "glue" / "STS-B" / "dev.tsv"


def spread(states: torch.Tensor) -> tuple[float, float]:
    """(mean cosine between two different rows, input-dependent share of the rows' energy) of [N, H] states."""
    unit = torch.nn.functional.normalize(states, dim=-1)
    off_diagonal = ~torch.eye(len(unit), dtype=torch.bool)
    centred = states - states.mean(0)
    return float((unit @ unit.T)[off_diagonal].mean()), float(centred.pow(2).sum() / states.pow(2).sum())


def pair_states(path: str, first: list[str], second: list[str], max_seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, H] [CLS] states, [N, H] mean-pooled states) of the packed pairs under the encoder at ``path``, from
    one pass of :func:`ernie_cmtl.retention.pooled_states` (task-embedding row 0, as fine-tuning adds)."""
    from ernie_cmtl.pretrained import open_pretrained
    from ernie_cmtl.retention import mean_pool, pooled_states

    pretrained = open_pretrained(path)
    tokenizer = pretrained.tokenizer
    tokenizer.enable_truncation(max_seq_len)
    encodings = tokenizer.encode_batch(list(zip(first, second, strict=True)))
    both = pooled_states(pretrained.encoder(), [e.ids for e in encodings], [e.type_ids for e in encodings],
                         pool=lambda states, mask: torch.cat([states[:, 0].float(), mean_pool(states, mask)], -1))
    return both.chunk(2, dim=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("encoders", nargs="+", help="run directories, checkpoints or Hugging Face directories")
    parser.add_argument("--pairs", type=Path, default=STSB_DEV, help="a scored pair TSV (default STS-B dev)")
    parser.add_argument("--limit", type=int, default=300, help="the file's first LIMIT pairs")
    parser.add_argument("--max-seq-len", type=int, default=64)
    args = parser.parse_args()
    from ernie_cmtl.trainer import read_scored_pairs

    first, second, _ = read_scored_pairs(args.pairs, args.limit)
    print(f"{len(first)} pairs of {args.pairs}, packed, max {args.max_seq_len} tokens\n")
    print("| encoder | [CLS] mean cosine | [CLS] input-dependent share | mean-pooled mean cosine | "
          "mean-pooled input-dependent share |\n|---|---|---|---|---|")
    for path in args.encoders:
        cls, mean = pair_states(path, first, second, args.max_seq_len)
        (cls_cos, cls_share), (mean_cos, mean_share) = spread(cls), spread(mean)
        print(f"| {path} | {cls_cos:.3f} | {cls_share:.3f} | {mean_cos:.3f} | {mean_share:.3f} |", flush=True)


if __name__ == "__main__":
    main()
