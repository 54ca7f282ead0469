"""The fine-tuning run's configuration (``configs/finetune_glue.yaml`` spells out its defaults).

One flat section: the tasks and where their data live, the optimizer and schedule (turned into the engine's
:class:`~ernie_cmtl.config.OptimConfig` per stage by :meth:`FinetuneConfig.optim`), the engine and precision,
the multi-task recipe (sampling, sharing, output layers) and the monitor. Loaded like pretraining's config:
unknown keys and bad values fail at load time with a one-line message naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from downstream.benchmarks import canonical_task_name
from ernie_cmtl.config import (
    ConfigError,
    DeepSpeedSection,
    OptimConfig,
    WandbConfig,
    from_dict,
    read_raw,
    require,
)


@dataclass
class FinetuneMonitorConfig:
    """Fine-tuning's ``monitor`` section: the ``monitor.wandb`` keys of pretraining (``ernie_cmtl.config``)."""

    wandb: WandbConfig = field(default_factory=WandbConfig)
    """``enabled`` (``--wandb``), ``project`` (``--wandb-project``), ``entity``, ``mode`` (auto: WANDB_MODE,
    else online with a wandb login, else offline), ``tags``, ``name`` (default: the run directory's name).
    ``log_checkpoints`` must stay false: fine-tuning writes no checkpoints."""

    def __post_init__(self) -> None:
        require(not self.wandb.log_checkpoints, "wandb.log_checkpoints", "false (fine-tuning writes no "
                "checkpoints to upload)")


@dataclass
class FinetuneConfig:
    """Everything a fine-tuning run reads; ``configs/finetune_glue.yaml`` spells out these defaults."""

    tasks: list[str] = field(default_factory=lambda: ["sst2", "cola", "mrpc", "rte", "stsb"])
    """Tasks (case-insensitive): GLUE's sst2, cola, mrpc, rte, stsb, mnli, qqp, qnli, wnli; wikiqp; the Chinese
    chnsenticorp, ocnli, c3. ``--tasks`` overrides."""
    glue_dir: str = "../shared/data/glue"
    """The GLUE folder (SST-2/, CoLA/, MRPC/, RTE/, STS-B/, MNLI/, QQP/, QNLI/, WNLI/, each with train.tsv and
    dev.tsv; MNLI with dev_matched.tsv and dev_mismatched.tsv), relative to the working directory. Only the
    folders of the tasks run need to exist."""
    chnsenticorp_dir: str = "../shared/data/chnsenticorp"
    """ChnSentiCorp's folder (train.tsv, dev.tsv as released by LUGE / PaddleNLP)."""
    ocnli_dir: str = "../shared/data/ocnli"
    """OCNLI's folder (the CLUE release's JSON-lines files: ``ocnli_train_file`` and dev.json)."""
    ocnli_train_file: str = "train.10k.json"
    """OCNLI's training file in ``ocnli_dir``: train.50k.json is the full set, train.10k.json / train.3k.json
    the release's subsets (all are validated on the same dev.json)."""
    c3_dir: str = "../shared/data/c3"
    """C3's folder (c3-m-train.json, c3-d-train.json, c3-m-dev.json, c3-d-dev.json: written texts and
    dialogues, read together)."""
    ranking_corpus: list[str] = field(
        default_factory=lambda: ["../shared/data/wikipedia-en-2018-sample/valid"])
    """Wikipedia files the ``wikiqp`` ranking task is built from (queries = titles, passages = paragraphs; one
    held-out paragraph per article is the dev set)."""
    ranking_candidates: int = 4
    """K: passages per ``wikiqp`` query (one relevant, K - 1 from other articles). C3 has its own 2-4 choices."""
    run_dir: str = "runs/finetune"
    """Where ``config.yaml``, ``metrics.jsonl``, ``train.log`` and ``results.json`` go."""
    seed: int = 0
    max_seq_len: int = 128
    """Tokens per sequence (pairs: both segments together), special tokens included; longer input is cut."""
    batch_size: int = 32
    """Sequences per step (ranking: ``batch_size // ranking_candidates`` queries, each with its candidates)."""
    eval_batch_size: int = 128
    lr: float = 2e-4
    """Peak learning rate. BERT-base takes 2e-5..5e-5; the small flavours here learn faster at ~1e-4..5e-4."""
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    """Share of each stage's steps spent warming up linearly; then linear decay to 0."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = off)."""
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW's betas. Fine-tuning keeps BERT's (0.9, 0.999); pretraining's ``train.adam_betas`` default to
    (0.9, 0.98)."""
    adam_eps: float = 1e-6
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """bf16: autocast (torch engine) or DeepSpeed bf16; fp16: DeepSpeed engine only (loss scaling)."""
    engine: Literal["torch", "deepspeed"] = "torch"
    """The training engine, as pretraining's ``train.engine``: torch (one process) or DeepSpeed (one process;
    ZeRO, offload and precision per ``deepspeed.config``)."""
    deepspeed: DeepSpeedSection = field(default_factory=DeepSpeedSection)
    """``config`` (a DeepSpeed JSON) and ``overrides``, as pretraining's ``train.deepspeed``."""
    max_steps: int = 1000
    """Steps of stage 1, multi-task fine-tuning (each step trains one task's batch)."""
    per_task_steps: int = 0
    """Steps of stage 2 per task: a copy of the multi-task model fine-tuned on that task alone (0 = off)."""
    sampling: Literal["proportional", "uniform", "temperature"] = "proportional"
    """Which task a stage-1 step trains: probability ~ train size (MT-DNN), equal, or ~ size^(1/temperature)."""
    temperature: float = 2.0
    """For ``sampling: temperature``: 1 = proportional, larger flattens toward uniform."""
    task_embedding_id: int = 0
    """Task-embedding row added to every fine-tuning input (0: the first pretraining task, knowledge masking
    in the default runs; see the checkpoint's trainer_state.json ``task_ids``); -1: none."""
    pair_head: Literal["match", "cls"] = "match"
    """Output layer of the tasks whose input is a pair of segments (all but SST-2, CoLA and ChnSentiCorp; C3's
    pairs are (question and document, choice)). ``match``: the
    pooled [CLS] state plus kernel-pooled soft-match features of the two segments' tokens
    (``model.PairMatchingHead``); ``cls``: the pooled [CLS] state alone (``SequenceClassificationHead``, as
    single-sentence tasks)."""
    sharing: Literal["hard", "soft"] = "hard"
    """hard: one encoder for all tasks. soft: one encoder copy per task, tied by ``soft_sharing_weight``."""
    soft_sharing_weight: float = 1e-3
    """Weight of ``soft_sharing_penalty`` (sum over tasks of ||theta_t - mean theta||^2) in the loss."""
    max_train_examples: int = 0
    """Per task, train on a seeded random subset of this many examples (0 = all)."""
    max_eval_examples: int = 0
    """Per task, evaluate on a fixed subset of this many dev examples (0 = the whole dev set)."""
    eval_every: int = 0
    """Also evaluate every N stage-1 steps (0 = only at the end of each stage)."""
    log_every: int = 50
    device: str = "auto"
    """``auto`` (cuda if present, else cpu), ``cpu``, ``cuda``, ``cuda:1`` ..."""
    monitor: FinetuneMonitorConfig = field(default_factory=FinetuneMonitorConfig)
    """Weights & Biases logging of the train losses and dev metrics (``monitor.wandb.*``; off by default)."""

    def __post_init__(self) -> None:
        require(bool(self.tasks), "tasks", "at least one task name")
        canonical = []
        for i, name in enumerate(self.tasks):
            try:
                canonical.append(canonical_task_name(name))
            except KeyError as err:
                raise ConfigError(f"tasks[{i}]: {err.args[0]}") from None
        require(len(set(canonical)) == len(canonical), "tasks", "distinct task names")
        self.tasks = canonical
        require(self.ranking_candidates >= 2, "ranking_candidates", "an integer >= 2")
        require(8 <= self.max_seq_len <= 4096, "max_seq_len", "an integer in [8, 4096]")
        for key in ("batch_size", "eval_batch_size", "max_steps", "log_every"):
            require(getattr(self, key) >= 1, key, "an integer >= 1")
        for key in ("per_task_steps", "max_train_examples", "max_eval_examples", "eval_every"):
            require(getattr(self, key) >= 0, key, "an integer >= 0")
        require(self.lr > 0, "lr", "a number > 0")
        require(self.weight_decay >= 0, "weight_decay", "a number >= 0")
        require(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", "a number in [0, 1)")
        require(self.grad_clip >= 0, "grad_clip", "a number >= 0")
        require(len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas), "adam_betas",
                "two numbers in [0, 1)")
        require(self.adam_eps > 0, "adam_eps", "a number > 0")
        require(self.precision != "fp16" or self.engine == "deepspeed", "precision",
                "'fp32' or 'bf16' with engine=torch (fp16 needs DeepSpeed's loss scaling)")
        require(self.temperature > 0, "temperature", "a number > 0")
        require(self.task_embedding_id >= -1, "task_embedding_id", "-1 (none) or a task-embedding row >= 0")
        require(self.soft_sharing_weight >= 0, "soft_sharing_weight", "a number >= 0")



    def optim(self, steps: int) -> OptimConfig:
        """The engine's settings for a stage of ``steps`` steps: AdamW, ``warmup_ratio`` of them warming up
        linearly, then linear decay to 0."""
        return OptimConfig(lr=self.lr, total_steps=steps, warmup_steps=int(self.warmup_ratio * steps),
                           decay="linear", weight_decay=self.weight_decay, betas=tuple(self.adam_betas),
                           eps=self.adam_eps, grad_clip=self.grad_clip, precision=self.precision)


def load_finetune_config(path: str | Path | None = None,
                         overrides: list[str] | None = None) -> FinetuneConfig:
    """Read a fine-tuning config from YAML (defaults when ``path`` is None) plus ``KEY=VALUE`` overrides."""
    return from_dict(FinetuneConfig, read_raw(path, overrides))
