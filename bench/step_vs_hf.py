"""Training-step time of our encoder + heads against Hugging Face ``BertForPreTraining`` (SDPA).

``--workload full`` (the default): full 128-token sequences of random ids. Both models have the same size,
vocabulary (30,522), batch, sequence length, dropout and precision. Ours decodes only the masked positions
(15 %) and takes the cross-entropy there; HF runs its standard pretraining loss (MLM labels with -100 at
unmasked positions, plus next-sentence prediction), which decodes every position. One training step is
``zero_grad`` + forward + loss + backward + ``AdamW.step``, with the AdamW HF's Trainer uses by default
(fused, torch >= 2.8) for both unless ``--adamw for-loop``. The two models are timed interleaved in one
process (ours, HF, ours, HF, ...) so machine noise hits both; the reported time is the median of the timed
steps after the warm-up steps.

``--workload task-mix``: real batches of the seven tasks' examples built from the shared Wikipedia sample,
in the cmtl schedule's proportions (``bench/task_mix.py`` says how "the same examples" is kept). Arms: ours
(length-grouped batches, our trainer's step through ``TorchEngine``), today (the code before this
benchmark: random batches, for-loop AdamW, the loss read every step), HF (the window's random batches,
padded to the longest, HF Trainer's defaults: fused AdamW, clipping 1.0) and optionally hf-grouped (HF fed
our grouped batches). Reported: real (non-pad) tokens per second. The last line reads
``task-mix HF/ours at <size>: <ratio>x``.

    PYTHONPATH=. python bench/step_vs_hf.py --precision both
    PYTHONPATH=. python bench/step_vs_hf.py --configs small --precision bf16 --steps 20 --json out.json
    PYTHONPATH=. python bench/step_vs_hf.py --threads 1 --clock cpu     # on a machine others are using
    PYTHONPATH=. python bench/step_vs_hf.py --workload task-mix --configs debug,small --threads 1 --clock cpu
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench import task_mix as mix_lib
from ernie_cmtl.config import MODEL_FLAVOURS, ModelConfig, TrainConfig
from ernie_cmtl.engine import make_adamw, param_groups
from ernie_cmtl.model import Encoder, MaskedLMHead

VOCAB_SIZE = 30522
SEQ_LEN = 128
MASK_FRACTION = 0.15
DROPOUT = 0.1
LR = 1e-4
WEIGHT_DECAY = 0.01

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
"""``wall``: elapsed time (what a run costs). ``cpu``: CPU time of this process, all threads (with
``--threads 1`` it is robust to other processes competing for the cores; with more threads it counts
OpenMP spin-waiting too)."""

# name -> (flavour, default batch size, default timed steps)
CONFIGS: dict[str, tuple[str, int, int]] = {"small": ("small", 16, 12), "base": ("base", 8, 10)}


@dataclass
class Result:
    """One (config, precision) measurement; times in milliseconds."""

    config: str
    precision: str
    batch: int
    seq_len: int
    hidden: int
    layers: int
    masked: int
    steps: int
    ours_ms: float
    hf_ms: float
    ours_ms_all: list[float]
    hf_ms_all: list[float]

    @property
    def ratio(self) -> float:
        """HF median step time over ours (> 1: ours is faster)."""
        return self.hf_ms / self.ours_ms

    def tokens_per_s(self, ms: float) -> float:
        """Input tokens (batch x sequence length) processed per second at step time ``ms``."""
        return self.batch * self.seq_len / (ms / 1000.0)


class OursMLM(nn.Module):
    """Our ``Encoder`` and a ``MaskedLMHead`` tied to its word embeddings (parameters counted once)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.encoder = Encoder(cfg)
        self.head = MaskedLMHead(cfg, self.encoder.embeddings.word)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Masked-LM loss, decoding only ``batch["positions"]`` (flat indices into the [B * L] grid)."""
        hidden = self.encoder(batch["input_ids"], batch["attention_mask"], batch["segment_ids"],
                              batch["task_ids"])
        logits = self.head(hidden, batch["positions"])
        return F.cross_entropy(logits.float(), batch["position_labels"])


def model_config(name: str) -> ModelConfig:
    """Our ``ModelConfig`` for a benchmark config name (a flavour), BERT vocabulary, dropout 0.1."""
    flavour = CONFIGS[name][0]
    return ModelConfig(flavour=flavour, **MODEL_FLAVOURS[flavour], vocab_size=VOCAB_SIZE, dropout=DROPOUT,
                       attention_dropout=DROPOUT)


def build_ours(cfg: ModelConfig) -> OursMLM:
    """Our encoder + masked-LM head, in training mode."""
    return OursMLM(cfg).train()


def build_hf(cfg: ModelConfig) -> nn.Module:
    """``transformers.BertForPreTraining`` of the same size with SDPA attention, in training mode."""
    return mix_lib.hf_model(cfg)


def make_batch(batch_size: int, seq_len: int, vocab_size: int, mask_fraction: float,
               seed: int = 0) -> dict[str, Tensor]:
    """Random ids, two segments, no padding, and ``mask_fraction`` of all positions masked.

    Holds both label forms: ``positions`` + ``position_labels`` (ours) and ``labels`` [B, L] with -100 at
    unmasked positions + ``next_sentence_label`` (HF)."""
    gen = torch.Generator().manual_seed(seed)
    total = batch_size * seq_len
    n_masked = max(1, round(mask_fraction * total))
    positions = torch.randperm(total, generator=gen)[:n_masked].sort().values
    position_labels = torch.randint(0, vocab_size, (n_masked,), generator=gen)
    labels = torch.full((total,), -100, dtype=torch.long)
    labels[positions] = position_labels
    return {
        "input_ids": torch.randint(0, vocab_size, (batch_size, seq_len), generator=gen),
        "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long),
        "segment_ids": (torch.arange(seq_len) >= seq_len // 2).long().expand(batch_size, seq_len).clone(),
        "task_ids": torch.zeros(batch_size, dtype=torch.long),
        "positions": positions,
        "position_labels": position_labels,
        "labels": labels.view(batch_size, seq_len),
        "next_sentence_label": torch.randint(0, 2, (batch_size,), generator=gen),
    }


def make_step(model: nn.Module, loss_fn: Callable[[], Tensor], precision: str,
              clock: Callable[[], float] = time.perf_counter, adamw: str = "auto") -> Callable[[], float]:
    """A closure running one training step of ``model``; returns its time in seconds on ``clock``."""
    optimizer, _ = make_adamw(param_groups(model, WEIGHT_DECAY), TrainConfig(lr=LR).optim, adamw)

    def step() -> float:
        start = clock()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = loss_fn()
        loss.backward()
        optimizer.step()
        return clock() - start

    return step


def measure(name: str, precision: str, batch_size: int, steps: int, warmup: int,
            seq_len: int = SEQ_LEN, seed: int = 0, clock: str = "wall", adamw: str = "auto") -> Result:
    """Time ``steps`` interleaved training steps of ours and HF after ``warmup`` steps of each."""
    cfg = model_config(name)
    torch.manual_seed(seed)
    ours = build_ours(cfg)
    hf = build_hf(cfg)
    batch = make_batch(batch_size, seq_len, cfg.vocab_size, MASK_FRACTION, seed)

    def hf_loss() -> Tensor:
        return hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  token_type_ids=batch["segment_ids"], labels=batch["labels"],
                  next_sentence_label=batch["next_sentence_label"]).loss

    ours_step = make_step(ours, lambda: ours(batch), precision, CLOCKS[clock], adamw)
    hf_step = make_step(hf, hf_loss, precision, CLOCKS[clock], adamw)
    ours_times: list[float] = []
    hf_times: list[float] = []
    for i in range(warmup + steps):
        t_ours, t_hf = ours_step(), hf_step()
        if i >= warmup:
            ours_times.append(t_ours * 1000.0)
            hf_times.append(t_hf * 1000.0)
    return Result(config=name, precision=precision, batch=batch_size, seq_len=seq_len, hidden=cfg.hidden_size,
                  layers=cfg.num_layers, masked=int(batch["positions"].numel()), steps=steps,
                  ours_ms=statistics.median(ours_times), hf_ms=statistics.median(hf_times),
                  ours_ms_all=ours_times, hf_ms_all=hf_times)


def cpu_name() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    """The 1/5/15-minute load averages, or "n/a" where the OS does not report them."""
    try:
        return "/".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def format_table(results: list[Result]) -> str:
    """The results as a fixed-width text table."""
    header = (f"{'config':<7} {'precision':<9} {'batch':>5} {'ours ms':>9} {'HF ms':>9} {'HF/ours':>8} "
              f"{'ours tok/s':>11} {'HF tok/s':>10}")
    rows = [header, "-" * len(header)]
    for r in results:
        rows.append(f"{r.config:<7} {r.precision:<9} {r.batch:>5} {r.ours_ms:>9.1f} {r.hf_ms:>9.1f} "
                    f"{r.ratio:>7.2f}x {r.tokens_per_s(r.ours_ms):>11.0f} {r.tokens_per_s(r.hf_ms):>10.0f}")
    return "\n".join(rows)


@dataclass
class MixResult:
    """One size's task-mix measurement: per arm and task, the summed step seconds and real/padded tokens."""

    config: str
    precision: str
    batch: int
    window: int
    per_task: int
    seconds: dict[str, dict[str, float]]
    real_tokens: dict[str, dict[str, int]]
    padded_tokens: dict[str, dict[str, int]]
    weights: dict[str, float]
    step_ms: dict[str, list[float]]

    def tokens_per_s(self, arm: str) -> float:
        """Real tokens per second over the schedule's mix (see ``bench/task_mix.py``)."""
        return mix_lib.mix_tokens_per_s(self.seconds[arm], self.real_tokens[arm], self.weights)

    def real_share(self, arm: str) -> float:
        return sum(self.real_tokens[arm].values()) / sum(self.padded_tokens[arm].values())

    def ratio(self, slower: str, faster: str) -> float:
        return self.tokens_per_s(faster) / self.tokens_per_s(slower)


ARMS = ("ours", "today", "hf", "hf-grouped")
MIX_CONFIGS: dict[str, tuple[str, int, int]] = {"debug": ("debug", 32, 4), "small": ("small", 32, 3),
                                                "base": ("base", 16, 2)}
"""Task-mix name -> (flavour, default batch, default timed batches per task and arm)."""


def measure_task_mix(name: str, mix: mix_lib.TaskMix, precision: str, batch_size: int, per_task: int,
                     window: int, arms: list[str], warmup: int, clock: str) -> MixResult:
    """Interleave the arms' steps task by task (rotating the arms' order each round) and sum their times."""
    cfg = mix_lib.model_config(MIX_CONFIGS[name][0], mix.vocab_size)
    device = torch.device("cpu")
    grouped, plain = mix_lib.sample_batches(mix, batch_size, window, per_task)
    builders = {"ours": lambda: mix_lib.ours_step(mix, cfg, device, precision),
                "today": lambda: mix_lib.ours_step(mix, cfg, device, precision, adamw="for-loop", read_loss=True),
                "hf": lambda: mix_lib.hf_step(mix, cfg, device, precision),
                "hf-grouped": lambda: mix_lib.hf_step(mix, cfg, device, precision)}
    steps = {arm: builders[arm]() for arm in arms}
    feeds = {arm: grouped if arm in ("ours", "hf-grouped") else plain for arm in arms}
    for _ in range(warmup):
        for task in mix.tasks:
            for arm in arms:
                steps[arm](feeds[arm][task][0])
    tick = CLOCKS[clock]
    seconds = {arm: dict.fromkeys(mix.tasks, 0.0) for arm in arms}
    real = {arm: dict.fromkeys(mix.tasks, 0) for arm in arms}
    padded = {arm: dict.fromkeys(mix.tasks, 0) for arm in arms}
    step_ms: dict[str, list[float]] = {arm: [] for arm in arms}
    for i in range(per_task):
        for j, task in enumerate(mix.tasks):
            shift = (i * len(mix.tasks) + j) % len(arms)
            for arm in arms[shift:] + arms[:shift]:
                item = feeds[arm][task][i]
                start = tick()
                steps[arm](item)
                elapsed = tick() - start
                seconds[arm][task] += elapsed
                real[arm][task] += item.real_tokens
                padded[arm][task] += item.padded_tokens
                step_ms[arm].append(elapsed * 1000.0)
    return MixResult(name, precision, batch_size, window, per_task, seconds, real, padded, mix.token_weights(),
                     step_ms)


def format_mix_table(result: MixResult) -> str:
    """Per task and arm: real tokens/s; then the mix figure and the share of real tokens per arm."""
    arms = list(result.seconds)
    header = f"{'task':<24}" + "".join(f"{arm + ' tok/s':>17}" for arm in arms)
    rows = [header, "-" * len(header)]
    for task in result.weights:
        rows.append(f"{task:<24}" + "".join(
            f"{result.real_tokens[arm][task] / result.seconds[arm][task]:>17.0f}" for arm in arms))
    rows.append(f"{'mix (schedule-weighted)':<24}" + "".join(f"{result.tokens_per_s(arm):>17.0f}" for arm in arms))
    rows.append(f"{'real-token share':<24}" + "".join(f"{result.real_share(arm):>17.3f}" for arm in arms))
    return "\n".join(rows)


def run_task_mix(args: argparse.Namespace, precisions: list[str]) -> list[MixResult]:
    """The task-mix workload: build (or load) the examples, measure each size, print the summary lines."""
    started = time.perf_counter()
    mix = mix_lib.build_task_mix(args.corpus, args.cache_dir, args.vocab)
    window = args.window if args.window is not None else (TrainConfig().length_group_window or 32)
    print(f"task mix: {', '.join(f'{t} {len(d)} ex, {mix.steps[t]} steps' for t, d in mix.train.items())}; "
          f"vocab {mix.vocab_size}; built/loaded in {time.perf_counter() - started:.0f} s", flush=True)
    arms = args.arms.split(",")
    results = []
    for name in args.configs.split(","):
        _, default_batch, default_per_task = MIX_CONFIGS[name]
        batch = args.batch or default_batch
        per_task = args.steps or default_per_task
        for precision in precisions:
            result = measure_task_mix(name, mix, precision, batch, per_task, window, arms, args.warmup,
                                      args.clock)
            results.append(result)
            print(f"\n{mix_lib.SIZES[name]} ({name}), {precision}, batch {batch}, window {window}, {per_task} "
                  f"batches per task and arm ({time.perf_counter() - started:.0f} s elapsed)")
            print(format_mix_table(result), flush=True)
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average at the end {load_average()}")
    for r in results:
        size = mix_lib.SIZES[r.config] + ("" if len(precisions) == 1 else f" {r.precision}")
        if "today" in r.seconds and "ours" in r.seconds:
            print(f"task-mix ours/today at {size}: {r.ratio('today', 'ours'):.2f}x")
        if "hf-grouped" in r.seconds and "ours" in r.seconds:
            print(f"task-mix HF-grouped/ours at {size}: {r.ratio('hf-grouped', 'ours'):.2f}x")
        if "hf" in r.seconds and "ours" in r.seconds:
            print(f"task-mix HF/ours at {size}: {r.ratio('hf', 'ours'):.2f}x")
    return results


def run_padding(args: argparse.Namespace) -> list:
    """Real-token share of each task's batches: random, length-grouped (the stream itself) and packed."""
    mix = mix_lib.build_task_mix(args.corpus, args.cache_dir, args.vocab)
    window = args.window if args.window is not None else (TrainConfig().length_group_window or 32)
    batch = args.batch or 32
    report = mix_lib.padding_report(mix, batch, window)
    weights = mix.token_weights()
    print(f"batch {batch}, window {window}, 4 windows per task; packed: first-fit decreasing into 128-token rows")
    print(f"{'task':<24} {'random':>8} {'grouped':>8} {'packed':>8} {'attention packed/grouped':>25}")
    for task, r in report.items():
        print(f"{task:<24} {r['random']:>8.3f} {r['grouped']:>8.3f} {r['packed']:>8.3f} "
              f"{r['attention_packed_over_grouped']:>25.2f}")
    for kind in ("random", "grouped", "packed"):  # schedule-weighted: real tokens over padded work
        share = sum(weights.values()) / sum(w / report[t][kind] for t, w in weights.items())
        print(f"schedule-weighted real-token share, {kind}: {share:.3f}")
    return []


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=["full", "task-mix", "padding"], default="full",
                        help="padding: the task mix's real-token share, random / length-grouped / packed; no timing")
    parser.add_argument("--configs", default=None,
                        help="comma-separated. full: small (256/4 layers/4 heads) and/or base (768/12/12), "
                             "default both; task-mix: debug (128/2/2), small, base, default debug,small")
    parser.add_argument("--precision", choices=["fp32", "bf16", "both"], default=None,
                        help="default: both (full), fp32 (task-mix)")
    parser.add_argument("--batch-small", type=int, default=CONFIGS["small"][1])
    parser.add_argument("--batch-base", type=int, default=CONFIGS["base"][1])
    parser.add_argument("--steps", type=int, default=None,
                        help="full: timed steps per model (default 12 small, 10 base); task-mix: timed batches "
                             "per task and arm (default 4 debug, 3 small, 2 base)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps per model first (full, default 2) / rounds over the tasks (task-mix, "
                             "default 1)")
    parser.add_argument("--seq-len", type=int, default=SEQ_LEN)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time; cpu: process CPU time (use with --threads 1 on a busy machine)")
    parser.add_argument("--adamw", choices=["auto", "for-loop"], default="auto",
                        help="full: the AdamW of both models (auto: fused where torch has it, as HF's Trainer)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    mix = parser.add_argument_group("task-mix")
    mix.add_argument("--corpus", nargs="+", default=None, help="default: 4 shards of the shared Wikipedia sample")
    mix.add_argument("--cache-dir", default="~/.cache/ernie_cmtl", help="the data cache (examples are reused)")
    mix.add_argument("--vocab", type=int, default=mix_lib.BERT_VOCAB, help="WordPiece vocabulary size")
    mix.add_argument("--batch", type=int, default=None, help="sequences per batch (default 32; 16 at base)")
    mix.add_argument("--window", type=int, default=None,
                     help="length-grouping window of ours, in batches (default: train.length_group_window)")
    mix.add_argument("--arms", default="ours,today,hf", help=f"comma-separated, of {', '.join(ARMS)}")
    args = parser.parse_args(argv)
    task_mix = args.workload in ("task-mix", "padding")
    args.configs = args.configs or ("debug,small" if task_mix else "small,base")
    args.precision = args.precision or ("fp32" if task_mix else "both")
    args.warmup = args.warmup if args.warmup is not None else (1 if task_mix else 2)
    known = MIX_CONFIGS if task_mix else CONFIGS
    unknown = set(args.configs.split(",")) - set(known)
    if unknown:
        parser.error(f"unknown config(s) {sorted(unknown)} for --workload {args.workload}; choose from "
                     f"{sorted(known)}")
    if task_mix and (set(args.arms.split(",")) - set(ARMS) or "ours" not in args.arms.split(",")):
        parser.error(f"--arms: expected 'ours' and any of {', '.join(ARMS)}, got {args.arms!r}")
    if (args.steps is not None and args.steps < 1) or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> list[Result] | list[MixResult]:
    """Run the benchmark, print the environment and the table; return the results."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    import transformers

    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"threads {torch.get_num_threads()}, CPU: {cpu_name()}, load average {load_average()}")
    if args.workload == "padding":
        return run_padding(args)
    if args.workload == "task-mix":
        print(f"task mix: dropout {DROPOUT}, warm-up {args.warmup} round(s), arms {args.arms}; real tokens/s, "
              f"{args.clock} clock", flush=True)
        mix_results = run_task_mix(args, precisions)
        if args.json is not None:
            payload = {"torch": torch.__version__, "transformers": transformers.__version__,
                       "threads": torch.get_num_threads(), "cpu": cpu_name(), "clock": args.clock,
                       "load_average_end": load_average(), "workload": "task-mix",
                       "results": [{**asdict(r), "tokens_per_s": {a: r.tokens_per_s(a) for a in r.seconds}}
                                   for r in mix_results]}
            args.json.write_text(json.dumps(payload, indent=2))
        return mix_results
    print(f"seq_len {args.seq_len}, vocab {VOCAB_SIZE}, {MASK_FRACTION:.0%} masked, dropout {DROPOUT}, "
          f"warm-up {args.warmup}, AdamW {args.adamw}; median of interleaved steps, {args.clock} clock",
          flush=True)
    results = []
    start = time.perf_counter()
    for name in args.configs.split(","):
        batch = args.batch_small if name == "small" else args.batch_base
        steps = args.steps if args.steps is not None else CONFIGS[name][2]
        for precision in precisions:
            result = measure(name, precision, batch, steps, args.warmup, args.seq_len, args.seed, args.clock,
                             args.adamw)
            results.append(result)
            print(f"  {name} {precision}: ours {result.ours_ms:.1f} ms, HF {result.hf_ms:.1f} ms "
                  f"({result.ratio:.2f}x, {time.perf_counter() - start:.0f} s elapsed)", flush=True)
    print(f"\ntotal {time.perf_counter() - start:.0f} s; load average at the end {load_average()} "
          f"(above ~0.5 per core, other processes compete and the medians are noisy)")
    print(format_table(results))
    if args.json is not None:
        payload = {"torch": torch.__version__, "transformers": transformers.__version__,
                   "threads": torch.get_num_threads(), "cpu": cpu_name(), "clock": args.clock,
                   "load_average_end": load_average(), "adamw": args.adamw,
                   "results": [{**asdict(r), "ratio": r.ratio} for r in results]}
        args.json.write_text(json.dumps(payload, indent=2))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
