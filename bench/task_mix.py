"""The real task mix for the step benchmarks: built examples of the seven ERNIE tasks, batched as training
batches them, in the cmtl schedule's proportions, plus the training steps of the models being compared.

What "the same examples" means here. Window 0 of a task's length-grouped stream holds exactly the examples of
its first ``window`` random batches (grouping only regroups a window). Ours is timed on grouped batches of
that window, chosen at evenly spaced ranks of their padded length (so short and long batches are both
represented); the plain arms (HF, today's code) on the window's first random batches. Each arm's cost per
real token is measured per task, and the mix figure weights the tasks by the real tokens the schedule gives
them (its steps x the task's mean example length), the same weights for every arm:
``tokens/s = sum_t W_t / sum_t W_t * (seconds per real token)_t``.

Used by ``bench/step_vs_hf.py --workload task-mix`` (CPU) and ``bench/gpu_throughput.py``.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from datasets import Dataset, load_from_disk
from tokenizers import Tokenizer
from torch import Tensor, nn

from ernie_cmtl.build.examples import make_tasks
from ernie_cmtl.config import MODEL_FLAVOURS, ModelConfig, OptimConfig, RunConfig
from ernie_cmtl.engine import AdamWImpl, TorchEngine, make_adamw, param_groups
from ernie_cmtl.model import flops_per_token
from ernie_cmtl.scheduler import build_plan
from ernie_cmtl.stream import TaskStream, example_lengths, hash_seed
from ernie_cmtl.tasks import IGNORE_INDEX, PretrainTask, SpecialIds
from ernie_cmtl.trainer import assign_task_ids, build_model

REPO_ROOT = Path(__file__).resolve().parents[1]
WIKI_TRAIN = REPO_ROOT.parent / "shared" / "data" / "wikipedia-en-2018-sample" / "train"
DEFAULT_SHARDS = [str(WIKI_TRAIN / f"wiki_0{i}") for i in range(4)]
"""Four shards of the shared Wikipedia sample: about 1,500 articles, every task has hundreds of examples."""
BERT_VOCAB = 30522
"""The tokenizer is trained to BERT's vocabulary size, as in the full-sequence figures."""
DROPOUT = 0.1
SIZES = {"debug": "hidden 128", "small": "hidden 256", "base": "BERT-base"}
"""Flavour -> the name the summary line uses."""


@dataclass
class TaskMix:
    """The seven tasks' built training examples and the schedule's share of each task."""

    tasks: dict[str, PretrainTask]
    train: dict[str, Dataset]
    task_ids: dict[str, int]
    steps: dict[str, int]
    """Steps the cmtl plan gives each task over the whole run."""
    vocab_size: int
    seed: int = 0
    mean_length: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mean_length = {name: float(example_lengths(ds).double().mean()) for name, ds in self.train.items()}

    def token_weights(self) -> dict[str, float]:
        """Real tokens per unit batch size the schedule gives each task (its steps x mean example length)."""
        return {name: self.steps[name] * self.mean_length[name] for name in self.tasks}


def build_task_mix(corpus: list[str] | None = None, cache_dir: str = "~/.cache/ernie_cmtl",
                   vocab_size: int = BERT_VOCAB, config_path: Path = REPO_ROOT / "configs" / "default.yaml",
                   ) -> TaskMix:
    """Build (or load from the data cache) the default config's seven tasks on ``corpus``."""
    from ernie_cmtl import api

    corpus = corpus or DEFAULT_SHARDS
    missing = [p for p in corpus if not Path(p).exists()]
    if missing:
        raise SystemExit(f"corpus not found: {missing[0]} (the shared Wikipedia sample, or pass --corpus)")
    overrides = [f"tokenizer.vocab_size={vocab_size}", f"data.cache_dir={cache_dir}", "data.valid_fraction=0.02",
                 "data.max_seq_len=128"]
    with tempfile.TemporaryDirectory() as run_dir:
        config = api.configure(config_path, overrides, corpus, run_dir)
        data = api.build_data(config, progress=False)
    return _mix(config, data.tasks, data.train, data.tokenizer.get_vocab_size())


def _mix(config: RunConfig, tasks: dict[str, PretrainTask], train: dict[str, Dataset], vocab: int) -> TaskMix:
    plan = build_plan(config.schedule, list(config.tasks), config.train.max_steps, config.seed)
    steps = {name: sum(stage.steps.get(name, 0) for stage in plan.stages) for name in tasks}
    return TaskMix(tasks, train, assign_task_ids(plan.tasks), steps, vocab, config.seed)


def export_task_mix(mix: TaskMix, directory: Path, tokenizer: Tokenizer | None, per_task: int,
                    config_path: Path) -> None:
    """Write the first ``per_task`` examples of each task (a random sample: the builders shuffle) with the
    schedule's steps, so a machine without the shared data (the GPU one) can load the same task mix."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, ds in mix.train.items():
        ds.select(range(min(per_task, len(ds)))).save_to_disk(str(directory / name))
    if tokenizer is not None:
        tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "config.yaml").write_text(Path(config_path).read_text())
    (directory / "meta.json").write_text(json.dumps({"steps": mix.steps, "task_ids": mix.task_ids,
                                                     "vocab_size": mix.vocab_size, "seed": mix.seed}))


def load_task_mix(directory: Path) -> TaskMix:
    """A task mix written by :func:`export_task_mix`."""
    from ernie_cmtl import api

    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise SystemExit(f"{directory}: no meta.json (write one with bench/gpu_throughput.py --export-task-mix)")
    meta = json.loads(meta_path.read_text())
    config = api.configure(directory / "config.yaml")
    special = SpecialIds.from_tokenizer(Tokenizer.from_file(str(directory / "tokenizer.json")))
    tasks = make_tasks(config, special)
    train = {name: load_from_disk(str(directory / name)) for name in tasks}
    return TaskMix(tasks, train, meta["task_ids"], meta["steps"], meta["vocab_size"], meta["seed"])


# -- batches --------------------------------------------------------------------------------------------------


@dataclass
class MixBatch:
    task: str
    batch: dict[str, Tensor]
    """The task's collated batch (``task_ids`` included), on the host."""
    real_tokens: int
    padded_tokens: int


def sample_batches(mix: TaskMix, batch_size: int, window: int, per_task: int
                   ) -> tuple[dict[str, list[MixBatch]], dict[str, list[MixBatch]]]:
    """(grouped, random) batches of every task: ``per_task`` each, from the same window of examples."""
    if per_task > window:
        raise SystemExit(f"--per-task {per_task} exceeds the grouping window ({window} batches)")
    grouped: dict[str, list[MixBatch]] = {}
    plain: dict[str, list[MixBatch]] = {}
    for name, task in mix.tasks.items():
        data, index = mix.train[name], mix.task_ids[name]
        by_length = TaskStream(data, batch_size, mix.seed, index, length_group_window=window)
        random_order = TaskStream(data, batch_size, mix.seed, index)
        lengths = example_lengths(data)
        padded = [int(lengths[by_length.indices(k)].max()) for k in range(window)]
        ranked = sorted(range(window), key=lambda k: padded[k])
        slots = [ranked[int((i + 0.5) * window / per_task)] for i in range(per_task)]
        grouped[name] = [_collate(mix, name, task, by_length.rows(k), k) for k in slots]
        plain[name] = [_collate(mix, name, task, random_order.rows(k), k) for k in range(per_task)]
    return grouped, plain


def _collate(mix: TaskMix, name: str, task: PretrainTask, rows: dict[str, list], k: int) -> MixBatch:
    batch = task.collate(rows, torch.Generator().manual_seed(hash_seed(mix.seed, k)))
    batch["task_ids"] = torch.full((batch["input_ids"].shape[0],), mix.task_ids[name])
    mask = batch["attention_mask"]
    return MixBatch(name, batch, int(mask.sum()), mask.numel())


def hf_inputs(batch: dict[str, Tensor], task: PretrainTask) -> dict[str, Tensor]:
    """``BertForPreTraining`` keyword arguments for one of our batches. HF computes its own pretraining loss:
    masked-LM cross-entropy at the positions our task labels (knowledge masking: the masked tokens with their
    original ids; the other token tasks: their labelled tokens; sequence tasks: [CLS]) plus next-sentence
    prediction (the sequence label mod 2). Its decoder covers every position whatever the labels, so the
    labels change the loss value, not the work."""
    input_ids = batch["input_ids"]
    labels = torch.full(input_ids.shape, IGNORE_INDEX, dtype=torch.long)
    flat = labels.view(-1)
    if "positions" in batch:
        targets = batch["labels"] if task.num_labels == task.special.vocab_size else \
            input_ids.reshape(-1)[batch["positions"]]
        flat[batch["positions"]] = targets
        nsp = torch.zeros(input_ids.shape[0], dtype=torch.long)
    else:
        labels[:, 0] = input_ids[:, 0]
        nsp = batch["labels"] % 2
    out = {"input_ids": input_ids, "attention_mask": batch["attention_mask"], "labels": labels,
           "next_sentence_label": nsp}
    if "segment_ids" in batch:
        out["token_type_ids"] = batch["segment_ids"]
    return out


# -- models and their training steps -----------------------------------------------------------------------


def model_config(flavour: str, vocab_size: int) -> ModelConfig:
    """Our ``ModelConfig`` of a flavour, dropout 0.1 (as BERT)."""
    return ModelConfig(flavour=flavour, **MODEL_FLAVOURS[flavour], vocab_size=vocab_size, dropout=DROPOUT,
                       attention_dropout=DROPOUT)


def optim_config(precision: str = "fp32") -> OptimConfig:
    """The default run's optimizer settings at a constant rate (lr is irrelevant to timing; clipping at 1.0 is
    not)."""
    return OptimConfig(lr=1e-4, decay="constant", precision=precision)


def hf_model(cfg: ModelConfig) -> nn.Module:
    """``transformers.BertForPreTraining`` of the same size with SDPA attention, in training mode."""
    from transformers import BertConfig, BertForPreTraining

    hf_cfg = BertConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size, hidden_act="gelu",
        max_position_embeddings=cfg.max_position, type_vocab_size=cfg.type_vocab_size,
        layer_norm_eps=cfg.layer_norm_eps, hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.attention_dropout, attn_implementation="sdpa")
    model = BertForPreTraining(hf_cfg)
    if model.config._attn_implementation != "sdpa":
        raise RuntimeError(f"HF picked attention {model.config._attn_implementation!r}, not sdpa")
    return model.train()


Step = Callable[[MixBatch], None]
"""One training step (zero_grad, forward, loss, backward, clipping, AdamW) on a batch."""


def ours_step(mix: TaskMix, cfg: ModelConfig, device: torch.device, precision: str = "fp32",
              adamw: AdamWImpl = "auto", read_loss: bool = False, compile: bool = False) -> Step:
    """Our trainer's step through :class:`TorchEngine`: the shared encoder, the task's head and loss.
    ``adamw="for-loop", read_loss=True`` is what the engine and trainer did before (torch's CPU default
    AdamW; the loss read back every step)."""
    torch.manual_seed(0)
    model = build_model(replace(cfg), mix.tasks)
    engine = TorchEngine(model, optim_config(precision), device, adamw=adamw, compile=compile)
    model.train()

    def step(item: MixBatch) -> None:
        batch = {k: v.to(device, non_blocking=True) for k, v in item.batch.items()}
        task = mix.tasks[item.task]
        loss = task.loss(engine(item.task, batch), batch)
        engine.backward(loss)
        engine.step()
        if read_loss:
            float(loss.detach())

    return step


def hf_step(mix: TaskMix, cfg: ModelConfig, device: torch.device, precision: str = "fp32") -> Step:
    """HF ``BertForPreTraining`` with what HF's Trainer does by default: fused AdamW (torch >= 2.8),
    gradient clipping at 1.0, bf16 autocast when asked."""
    torch.manual_seed(0)
    model = hf_model(cfg).to(device)
    optimizer, _ = make_adamw(param_groups(model, 0.01), optim_config(precision), "auto")
    params = [p for p in model.parameters() if p.requires_grad]

    def step(item: MixBatch) -> None:
        inputs = {k: v.to(device, non_blocking=True) for k, v in hf_inputs(item.batch, mix.tasks[item.task]).items()}
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    return step


def step_flops(cfg: ModelConfig, item: MixBatch, task: PretrainTask, hf: bool) -> float:
    """Model FLOPs of one training step on ``item`` (matmuls, forward + backward; ``flops_per_token``) with
    attention at the batch's padded length. Ours: real tokens, the vocabulary decoder at the masked positions
    only (other heads are negligible). HF: every padded position, each decoded."""
    length = item.batch["input_ids"].shape[1]
    if hf:
        return item.padded_tokens * flops_per_token(cfg, length, 1.0)
    masked_lm = task.num_labels == task.special.vocab_size
    masked = item.batch["positions"].numel() if masked_lm else 0
    return item.real_tokens * flops_per_token(cfg, length, masked / max(1, item.real_tokens))


def padding_report(mix: TaskMix, batch_size: int, window: int, windows: int = 4) -> dict[str, dict[str, float]]:
    """Per task, over its first ``windows`` windows: the real-token share of random batches, of length-grouped
    ones (``TaskStream`` itself) and of packed rows (first-fit decreasing of each window's examples into
    rows of the sequence length), and the attention-score work (sum of rows x length^2) packed / grouped."""
    out = {}
    for name, data in mix.train.items():
        lengths = example_lengths(data)
        random_order = TaskStream(data, batch_size, mix.seed, mix.task_ids[name])
        by_length = TaskStream(data, batch_size, mix.seed, mix.task_ids[name], length_group_window=window)
        real = plain = grouped = packed = grouped_attention = packed_attention = 0
        for k in range(windows * window):
            for stream, is_grouped in ((random_order, False), (by_length, True)):
                batch = lengths[stream.indices(k)]
                longest = int(batch.max())
                if is_grouped:
                    grouped += longest * len(batch)
                    grouped_attention += longest**2 * len(batch)
                else:
                    plain += longest * len(batch)
                    real += int(batch.sum())
        row = 128
        for j in range(windows):  # a window holds the examples of its random batches: pack those
            examples = [i for k in range(j * window, (j + 1) * window) for i in random_order.indices(k)]
            bins: list[int] = []
            for length in sorted(lengths[examples].tolist(), reverse=True):
                for i, used in enumerate(bins):
                    if used + length <= row:
                        bins[i] += length
                        break
                else:
                    bins.append(length)
            packed += len(bins) * row
            packed_attention += len(bins) * row**2
        out[name] = {"random": real / plain, "grouped": real / grouped, "packed": real / packed,
                     "attention_packed_over_grouped": packed_attention / grouped_attention}
    return out


def mix_tokens_per_s(seconds: dict[str, float], tokens: dict[str, int], weights: dict[str, float]) -> float:
    """Tokens/s over the schedule's mix from each task's measured seconds and real tokens."""
    total = sum(weights.values())
    cost = sum(weights[t] * seconds[t] / tokens[t] for t in weights)
    return total / cost if cost > 0 else math.nan


def time_steps(step: Step, items: list[MixBatch], clock: Callable[[], float],
               sync: Callable[[], None] = lambda: None) -> list[float]:
    """Seconds of each step in ``items`` on ``clock`` (``sync`` waits for the device before reading it)."""
    out = []
    for item in items:
        sync()
        start = clock()
        step(item)
        sync()
        out.append(clock() - start)
    return out


__all__ = ["TaskMix", "MixBatch", "build_task_mix", "export_task_mix", "load_task_mix", "sample_batches",
           "hf_inputs", "ours_step", "hf_step", "model_config", "mix_tokens_per_s", "step_flops", "time_steps",
           "padding_report",
           "SIZES", "BERT_VOCAB"]
