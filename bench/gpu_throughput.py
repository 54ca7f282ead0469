"""Training throughput of our encoder against HF ``BertForPreTraining`` (SDPA) on one GPU: real tokens/s, MFU
and peak memory, on full 128-token sequences and on the real task mix.

Everything the GPU run needs travels in one file, so the run is a single call on a machine that has neither
the shared data nor ``datasets``: first, here (CPU, the shared Wikipedia sample),

    PYTHONPATH=. python bench/gpu_throughput.py --export-task-mix runs/gpu_mix/task_mix.pt

writes collated batches of the seven tasks (length-grouped ones for ours, random ones for HF, from the same
window of examples; ``bench/task_mix.py``), each task's head and the schedule's token weights. Then, on the GPU
machine (only torch and transformers are imported there):

    PYTHONPATH=. python bench/gpu_throughput.py --task-mix runs/gpu_mix/task_mix.pt --peak-flops PEAK

Defaults: BERT-base, bf16 autocast (fp32 master weights), sequence 128, batch 256, fused AdamW and gradient
clipping for both. Ours runs through the trainer's ``TorchEngine``; full sequences go in without an attention
mask (nothing is padded), task-mix batches with theirs. MFU counts each model's own matmul FLOPs
(``ernie_cmtl.model.flops_per_token``: ours decodes only the masked positions, HF every position) against
``--peak-flops``, the device's dense peak for the precision, which is never guessed: without it MFU is not
printed. Test it on CPU at debug size first:

    PYTHONPATH=. python bench/gpu_throughput.py --export-task-mix /tmp/mix.pt --batch 8 --per-task 2
    PYTHONPATH=. python bench/gpu_throughput.py --task-mix /tmp/mix.pt --size debug --device cpu \\
        --precision fp32 --batch 8 --steps 2 --warmup 1 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ernie_cmtl.config import MODEL_FLAVOURS, ModelConfig, OptimConfig
from ernie_cmtl.engine import TorchEngine, make_adamw, param_groups
from ernie_cmtl.model import (
    Encoder,
    MaskedLMHead,
    PretrainingModel,
    SequenceClassificationHead,
    TokenClassificationHead,
    flops_per_token,
)

SEQ_LEN = 128
MASK_FRACTION = 0.15
DROPOUT = 0.1
HEADS: dict[str, Callable[..., nn.Module]] = {
    "MaskedLMHead": lambda cfg, words, n: MaskedLMHead(cfg, words),
    "TokenClassificationHead": lambda cfg, words, n: TokenClassificationHead(cfg, n),
    "SequenceClassificationHead": lambda cfg, words, n: SequenceClassificationHead(cfg, n),
}
"""Head class name (as the task's ``make_head`` built it when exported) -> the same class here."""
IGNORE_INDEX = -100


def model_config(size: str, vocab_size: int) -> ModelConfig:
    return ModelConfig(flavour=size, **MODEL_FLAVOURS[size], vocab_size=vocab_size, dropout=DROPOUT,
                       attention_dropout=DROPOUT)


def optim_config(precision: str) -> OptimConfig:
    """The default run's optimizer settings at a constant rate (lr is irrelevant to timing)."""
    return OptimConfig(lr=1e-4, decay="constant", precision=precision)


# -- the exported task mix -------------------------------------------------------------------------------------


def _compact(t: Tensor) -> Tensor:
    """The smallest integer dtype holding ``t``'s values (the file travels; int64 ids would be 4x larger)."""
    if t.dtype != torch.long or t.numel() == 0:
        return t
    lo, hi = int(t.min()), int(t.max())
    for dtype in (torch.int8, torch.int16, torch.int32):
        info = torch.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return t.to(dtype)
    return t


def export_task_mix(path: Path, batch_size: int, window: int, per_task: int, corpus: list[str] | None,
                    cache_dir: str) -> None:
    """Build the task mix here and write what the GPU run needs into one file."""
    from bench import task_mix as mix_lib
    from ernie_cmtl.tasks import PretrainTask

    mix = mix_lib.build_task_mix(corpus, cache_dir)
    grouped, plain = mix_lib.sample_batches(mix, batch_size, window, per_task)
    probe = model_config("debug", mix.vocab_size)
    words = nn.Embedding(mix.vocab_size, probe.hidden_size)
    tasks = {}
    for name, task in mix.tasks.items():
        if type(task).loss is not PretrainTask.loss:
            raise SystemExit(f"task {name} has its own loss; the GPU benchmark only knows cross-entropy")
        head = type(task.make_head(probe, words)).__name__
        if head not in HEADS:
            raise SystemExit(f"task {name}: head {head} is not one the GPU benchmark builds ({sorted(HEADS)})")
        hf = [mix_lib.hf_inputs(item.batch, task) for item in plain[name]]
        hf_grouped = [mix_lib.hf_inputs(item.batch, task) for item in grouped[name]]
        tasks[name] = {"head": head, "num_labels": task.num_labels,
                       "ours": [{k: _compact(v) for k, v in item.batch.items()} for item in grouped[name]],
                       "hf": [{k: _compact(v) for k, v in b.items()} for b in hf],
                       "hf_grouped": [{k: _compact(v) for k, v in b.items()} for b in hf_grouped]}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"vocab_size": mix.vocab_size, "weights": mix.token_weights(), "batch": batch_size,
                "window": window, "tasks": tasks}, path)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB): {len(tasks)} tasks x {per_task} batches of "
          f"{batch_size}, window {window}")


def load_task_mix(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SystemExit(f"--task-mix {path}: no such file (write it with --export-task-mix)")
    mix = torch.load(path, weights_only=True)
    for task in mix["tasks"].values():
        for key in ("ours", "hf", "hf_grouped"):
            task[key] = [{k: v.long() if not v.is_floating_point() else v for k, v in b.items()}
                         for b in task[key]]
    return mix


# -- steps --------------------------------------------------------------------------------------------------


Step = Callable[[str, dict[str, Tensor]], None]


def ours_step(cfg: ModelConfig, heads: dict[str, tuple[str, int]], device: torch.device, precision: str,
              compile: bool = False) -> tuple[Step, nn.Module]:
    """Our encoder and task heads through the trainer's ``TorchEngine`` (fused AdamW, clipping, autocast)."""
    torch.manual_seed(0)
    encoder = Encoder(cfg)
    model = PretrainingModel(encoder, {name: HEADS[head](cfg, encoder.embeddings.word, n)
                                       for name, (head, n) in heads.items()})
    engine = TorchEngine(model, optim_config(precision), device, compile=compile)
    model.train()

    def step(task: str, batch: dict[str, Tensor]) -> None:
        loss = F.cross_entropy(engine(task, batch).float(), batch["labels"], ignore_index=IGNORE_INDEX)
        engine.backward(loss)
        engine.step()

    return step, model


def hf_step(cfg: ModelConfig, device: torch.device, precision: str) -> tuple[Step, nn.Module]:
    """HF ``BertForPreTraining`` (SDPA) as HF's Trainer runs it: fused AdamW, clipping at 1.0, autocast."""
    from transformers import BertConfig, BertForPreTraining

    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size, hidden_act="gelu",
        max_position_embeddings=cfg.max_position, type_vocab_size=cfg.type_vocab_size,
        layer_norm_eps=cfg.layer_norm_eps, hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.attention_dropout, attn_implementation="sdpa")).to(device).train()
    if model.config._attn_implementation != "sdpa":
        raise RuntimeError(f"HF picked attention {model.config._attn_implementation!r}, not sdpa")
    optimizer, _ = make_adamw(param_groups(model, 0.01), optim_config(precision), "auto")
    params = [p for p in model.parameters() if p.requires_grad]

    def step(task: str, batch: dict[str, Tensor]) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    return step, model


def full_batches(batch_size: int, vocab_size: int, count: int, seed: int = 0) -> list[dict[str, Tensor]]:
    """Random ids, two segments, no padding, 15 % of positions masked: ours (``positions``/``labels``) and
    HF's (``labels`` [B, L] with -100 elsewhere, ``next_sentence_label``) forms, ``count`` distinct batches."""
    out = []
    for i in range(count):
        gen = torch.Generator().manual_seed(seed + i)
        total = batch_size * SEQ_LEN
        positions = torch.randperm(total, generator=gen)[:round(MASK_FRACTION * total)].sort().values
        targets = torch.randint(0, vocab_size, (positions.numel(),), generator=gen)
        dense = torch.full((total,), IGNORE_INDEX, dtype=torch.long)
        dense[positions] = targets
        ids = torch.randint(0, vocab_size, (batch_size, SEQ_LEN), generator=gen)
        segments = (torch.arange(SEQ_LEN) >= SEQ_LEN // 2).long().expand(batch_size, SEQ_LEN).contiguous()
        out.append({"ours": {"input_ids": ids, "segment_ids": segments, "positions": positions, "labels": targets,
                             "task_ids": torch.zeros(batch_size, dtype=torch.long)},
                    "hf": {"input_ids": ids, "token_type_ids": segments, "attention_mask": torch.ones_like(ids),
                           "labels": dense.view(batch_size, SEQ_LEN),
                           "next_sentence_label": torch.randint(0, 2, (batch_size,), generator=gen)}})
    return out


# -- measurement ----------------------------------------------------------------------------------------------


@dataclass
class Measurement:
    workload: str
    arm: str
    tokens_per_s: float
    """Real (non-pad) tokens per second; on the task mix weighted as the schedule weights the tasks."""
    flops_per_s: float
    peak_memory_gib: float
    ms_per_step: float
    real_share: float
    first_steps_s: float
    """Wall time of the warm-up steps (compilation, if any, happens there)."""

    def mfu(self, peak: float | None) -> float | None:
        return self.flops_per_s / peak if peak else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _to(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan


def run_full(arm: str, step: Step, cfg: ModelConfig, batches: list[dict[str, Tensor]], device: torch.device,
             steps: int, warmup: int) -> Measurement:
    """Full sequences: ``warmup`` untimed steps, then ``steps`` timed ones between two device syncs."""
    key = "hf" if arm == "hf" else "ours"
    on_device = [_to(b[key], device) for b in batches]
    started = time.perf_counter()
    for i in range(warmup):
        step("knowledge_masking", on_device[i % len(on_device)])
    _sync(device)
    first = time.perf_counter() - started
    start = time.perf_counter()
    for i in range(steps):
        step("knowledge_masking", on_device[i % len(on_device)])
    _sync(device)
    elapsed = time.perf_counter() - start
    tokens = steps * on_device[0]["input_ids"].numel()
    fraction = 1.0 if arm == "hf" else MASK_FRACTION
    flops = tokens * flops_per_token(cfg, SEQ_LEN, fraction)
    return Measurement("full", arm, tokens / elapsed, flops / elapsed, _peak_gib(device), elapsed / steps * 1e3,
                       1.0, first)


def run_task_mix(arm: str, step: Step, cfg: ModelConfig, mix: dict[str, Any], device: torch.device, rounds: int,
                 warmup: int) -> Measurement:
    """Every task's batches ``rounds`` times; per task, time between syncs; mix tokens/s by the weights."""
    key = {"ours": "ours", "ours-compiled": "ours", "hf": "hf", "hf-grouped": "hf_grouped"}[arm]
    batches = {name: [_to(b, device) for b in task[key]] for name, task in mix["tasks"].items()}
    started = time.perf_counter()
    for _ in range(warmup):
        for name, items in batches.items():
            for batch in items:
                step(name, batch)
    _sync(device)
    first = time.perf_counter() - started
    seconds, real, padded, flops, n_steps = {}, {}, {}, 0.0, 0
    for name, items in batches.items():
        _sync(device)
        start = time.perf_counter()
        for _ in range(rounds):
            for batch in items:
                step(name, batch)
        _sync(device)
        seconds[name] = time.perf_counter() - start
        real[name] = rounds * sum(int(b["attention_mask"].sum()) for b in items)
        padded[name] = rounds * sum(b["attention_mask"].numel() for b in items)
        for batch in items:
            length = batch["input_ids"].shape[1]
            n_real = int(batch["attention_mask"].sum())
            if key.startswith("hf"):
                flops += rounds * batch["input_ids"].numel() * flops_per_token(cfg, length, 1.0)
            else:
                masked = batch["positions"].numel() if mix["tasks"][name]["head"] == "MaskedLMHead" else 0
                flops += rounds * n_real * flops_per_token(cfg, length, masked / max(1, n_real))
        n_steps += rounds * len(items)
    weights = mix["weights"]
    cost = sum(weights[t] * seconds[t] / real[t] for t in weights)
    total = sum(seconds.values())
    return Measurement("task-mix", arm, sum(weights.values()) / cost, flops / total, _peak_gib(device),
                       total / n_steps * 1e3, sum(real.values()) / sum(padded.values()), first)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export-task-mix", type=Path, default=None,
                        help="build the task mix here and write it to this file, then exit")
    parser.add_argument("--task-mix", type=Path, default=None, help="an exported task mix (else: full only)")
    parser.add_argument("--size", choices=sorted(MODEL_FLAVOURS), default="base")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=256, help="sequences per step (and per exported batch)")
    parser.add_argument("--steps", type=int, default=30, help="full sequences: timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="full sequences: untimed steps first")
    parser.add_argument("--rounds", type=int, default=3, help="task mix: timed rounds over the exported batches")
    parser.add_argument("--warmup-rounds", type=int, default=1, help="task mix: untimed rounds first")
    parser.add_argument("--peak-flops", type=float, default=None,
                        help="the dense peak FLOP/s of the device at --precision, from its datasheet (no default)")
    parser.add_argument("--arms", default="ours,hf", help="of ours, hf, hf-grouped (task mix), ours-compiled")
    parser.add_argument("--vocab", type=int, default=30522, help="full sequences: vocabulary size")
    parser.add_argument("--window", type=int, default=8, help="export: length-grouping window, in batches")
    parser.add_argument("--per-task", type=int, default=4, help="export: batches per task")
    parser.add_argument("--corpus", nargs="+", default=None, help="export: default 4 shards of the wiki sample")
    parser.add_argument("--cache-dir", default="~/.cache/ernie_cmtl", help="export: the data cache")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    unknown = set(args.arms.split(",")) - {"ours", "hf", "hf-grouped", "ours-compiled"}
    if unknown:
        parser.error(f"--arms: unknown {sorted(unknown)}")
    if min(args.steps, args.batch, args.rounds) < 1 or min(args.warmup, args.warmup_rounds) < 0:
        parser.error("--steps, --batch and --rounds must be >= 1, --warmup and --warmup-rounds >= 0")
    return args


def main(argv: list[str] | None = None) -> list[Measurement]:
    args = parse_args(argv)
    if args.export_task_mix is not None:
        export_task_mix(args.export_task_mix, args.batch, args.window, args.per_task, args.corpus, args.cache_dir)
        return []
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no GPU visible to torch (use --device cpu for the debug-size check)")
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, device {name}, size {args.size}, "
          f"{args.precision}, batch {args.batch}, seq {SEQ_LEN}, peak {args.peak_flops or 'not given'}", flush=True)
    mix = load_task_mix(args.task_mix) if args.task_mix else None
    arms = args.arms.split(",")
    results = []
    vocab = mix["vocab_size"] if mix else args.vocab
    cfg = model_config(args.size, vocab)
    heads = {name: (task["head"], task["num_labels"]) for name, task in mix["tasks"].items()} if mix \
        else {"knowledge_masking": ("MaskedLMHead", vocab)}
    full = full_batches(args.batch, vocab, count=4)
    for arm in arms:
        for workload in ("full", "task-mix"):
            if workload == "task-mix" and mix is None:
                continue
            if workload == "full" and arm == "hf-grouped":
                continue
            _reset_memory(device)
            if arm.startswith("ours"):
                step, model = ours_step(replace(cfg), heads, device, args.precision, compile=arm == "ours-compiled")
            else:
                step, model = hf_step(replace(cfg), device, args.precision)
            if workload == "full":
                result = run_full(arm, step, cfg, full, device, args.steps, args.warmup)
            else:
                result = run_task_mix(arm, step, cfg, mix, device, args.rounds, args.warmup_rounds)
            results.append(result)
            mfu = result.mfu(args.peak_flops)
            print(f"  {workload:<8} {arm:<13} {result.tokens_per_s:>12,.0f} tok/s  "
                  f"{result.ms_per_step:>8.1f} ms/step  MFU {'n/a' if mfu is None else f'{mfu:.1%}':>6}  "
                  f"peak {result.peak_memory_gib:.1f} GiB  real share {result.real_share:.3f}  "
                  f"warm-up {result.first_steps_s:.1f} s", flush=True)
            del step, model
    by = {(r.workload, r.arm): r for r in results}
    for workload in ("full", "task-mix"):
        if (workload, "ours") in by and (workload, "hf") in by:
            ratio = by[(workload, "ours")].tokens_per_s / by[(workload, "hf")].tokens_per_s
            print(f"{workload} ours/HF tokens/s at {args.size} {args.precision}: {ratio:.2f}x")
    if args.json is not None:
        args.json.write_text(json.dumps({"device": name, "torch": torch.__version__, "size": args.size,
                                         "precision": args.precision, "batch": args.batch,
                                         "peak_flops": args.peak_flops,
                                         "results": [{**r.__dict__, "mfu": r.mfu(args.peak_flops)}
                                                     for r in results]}, indent=2))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
