"""The run configuration: one typed dataclass tree, loaded from YAML, overridable with dotted keys.

Every section is a small dataclass; each component receives only its own section. Loading validates each
section up front: an unknown key or a value of the wrong type or range raises :class:`ConfigError` with a
one-line message that names the dotted key, so a typo never survives until hour three of a run.

This module is a leaf: it imports nothing of the project but the generic typed loader
(:mod:`ernie_cmtl.typed_config`, a leaf) and the corpus options
(``data_builders.corpus_options``, itself a leaf), which the ``data`` section extends. Task sections
(``tasks.<name>``) are typed by the task plugin that owns the name, the schedule is checked against the tasks
and ``model.init_from`` against its checkpoint where the run is assembled (:mod:`ernie_cmtl.assembly`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from data_builders.corpus_options import CorpusOptionError, CorpusOptions
from ernie_cmtl.typed_config import (  # noqa: F401  (re-exported: the config's public names)
    ConfigError,
    from_dict,
    parse_override,
    require,
    set_dotted,
    to_plain,
)


@dataclass
class DataConfig(CorpusOptions):
    """The ``data`` section: how the corpus is read (the fields of
    :class:`~data_builders.corpus_options.CorpusOptions`: ``format``, ``encoding``, ``language``,
    ``min_body_chars``, ``min_paragraph_words``, ``min_paragraph_chars``, ``max_documents``, ``on_bad_input``,
    ``max_paragraph_chars``, ``max_document_chars``, declared, defaulted and checked there), then how examples
    are built from it."""

    corpus: list[str] = field(default_factory=list)
    """Files, directories or globs. Empty: the embedded corpus (docstrings of the Python standard library)."""
    skip_empty_tasks: bool = False
    """pretrain: train without the tasks this corpus gives no examples (they are reported either way). False:
    one error listing every such task, before any training."""
    valid_fraction: float = 0.02
    """Share of documents held out for evaluation (split by document, deterministic in the seed)."""
    max_seq_len: int = 128
    """Sequence length of built examples, special tokens included."""
    num_proc: int = 1
    """Worker processes for example building (forked; the same examples as one process): the shared
    tokenization pass in blocks, then whole tasks, corpus statistics included, one per worker, the costliest
    first. More workers than tasks do not help the second part: past about 7 per node, build in shards
    (``build-data --shard K/N``, docs/DISTRIBUTED.md). Measured 1.68-2.04x at 2 on the Wikipedia sample in
    seven runs of session 11, 1.40-1.83x in four earlier ones (docs/PERFORMANCE.md); each worker adds a few
    hundred MB."""
    statistics_documents: int = 100_000
    """Corpus statistics (tokenizer training, the knowledge-masking lexicon, frequent words, discourse class
    counts) come from an evenly spaced sample of at most this many training documents: bounded work on any
    corpus, and the same statistics for every shard of a sharded build (``build-data --shard K/N``)."""
    block_documents: int = 4096
    """Tasks whose examples depend on their own document only are built this many documents at a time (the
    same examples as one pass; the progress line moves per block). IR relevance retrieves within blocks of
    ``tasks.ir_relevance.block_documents``."""
    zh_segmenter: Literal["rjieba", "jieba"] = "rjieba"
    """Chinese word segmenter (POS-tagged, jieba's dictionary and tags) of the shared tokenization pass:
    ``rjieba`` (jieba-rs, Rust, ~20x faster) or ``jieba`` (``jieba.posseg``, pure Python: the examples of
    builds before rjieba). Its name and version are part of the cache fingerprints (docs/PERFORMANCE.md)."""
    cache_dir: str = "~/.cache/ernie_cmtl"
    """Where documents, tokenizers and built examples are cached under their fingerprints."""

    def __post_init__(self) -> None:
        try:
            self.check_corpus_options()
        except CorpusOptionError as err:  # already the one-line "data.<key>: expected ..." form
            raise ConfigError(str(err)) from None
        require(0.0 < self.valid_fraction < 0.5, "data.valid_fraction", "a number in (0, 0.5)")
        require(16 <= self.max_seq_len <= 4096, "data.max_seq_len", "an integer in [16, 4096]")
        require(self.num_proc >= 1, "data.num_proc", "an integer >= 1")
        require(self.statistics_documents >= 1, "data.statistics_documents", "an integer >= 1")
        require(self.block_documents >= 1, "data.block_documents", "an integer >= 1")


@dataclass
class TokenizerConfig:
    path: str | None = None
    """An existing ``tokenizer.json`` or ``vocab.txt``; unset: train WordPiece on the corpus (once per run)."""
    vocab_size: int = 8000
    min_frequency: int = 2
    lowercase: bool = True
    """Uncased input. Keep it: capitalization prediction would otherwise read its label off the input."""
    chinese_seed_characters: int = 3500
    """Chinese (or mixed) corpora: the alphabet of a trained tokenizer also holds this many of the most frequent
    characters of jieba's dictionary and the CJK punctuation, so that a vocabulary trained on a narrow corpus
    reads everyday text (``data_builders.tokenizer.chinese_seed_alphabet``); 0: the corpus's characters
    alone. English corpora are never seeded."""

    def __post_init__(self) -> None:
        require(self.vocab_size >= 200, "tokenizer.vocab_size", "an integer >= 200")
        require(self.min_frequency >= 1, "tokenizer.min_frequency", "an integer >= 1")
        require(self.chinese_seed_characters >= 0, "tokenizer.chinese_seed_characters", "an integer >= 0")


MODEL_FLAVOURS: dict[str, dict[str, Any]] = {
    "debug": {"hidden_size": 128, "num_layers": 2, "num_heads": 2, "intermediate_size": 512},
    "small": {"hidden_size": 256, "num_layers": 4, "num_heads": 4, "intermediate_size": 1024},
    "base": {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "intermediate_size": 3072},
    "large": {"hidden_size": 1024, "num_layers": 24, "num_heads": 16, "intermediate_size": 4096},
}


MODEL_DEFAULTS: dict[str, Any] = {"max_position": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12}
"""Shape fields every flavour shares; like the flavour sizes, filled in only when not given."""

CHECKPOINT_FIELDS = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position",
                     "type_vocab_size", "layer_norm_eps", "vocab_size")
"""Fields a pretrained checkpoint (``init_from``) decides; a disagreeing value set next to it is an error."""


@dataclass
class ModelConfig:
    flavour: Literal["debug", "small", "base", "large", "custom"] = "debug"
    """A size preset; size fields given next to it override the preset (``custom``: the debug sizes).
    Ignored with ``init_from``: the checkpoint's ``config.json`` gives the sizes."""
    init_from: str | None = None
    """A local Hugging Face model directory (BERT or ERNIE: ``config.json``, ``model.safetensors`` or
    ``pytorch_model.bin``, tokenizer files; a sentence-transformers directory works too) to continue
    pretraining from. Its sizes, vocabulary and tokenizer are the run's; the masked-LM head is imported when
    the checkpoint has one; task embeddings start at zero unless the checkpoint has them (docs/HUGGINGFACE.md)."""
    hidden_size: int | None = None
    """None: the flavour's (the four size fields are filled in from ``MODEL_FLAVOURS`` when not given)."""
    num_layers: int | None = None
    num_heads: int | None = None
    intermediate_size: int | None = None
    max_position: int | None = None
    """Position-embedding rows (None: 512)."""
    type_vocab_size: int | None = None
    """Segment-embedding rows (None: 2)."""
    num_task_embeddings: int = 16
    """Rows of the task-embedding table; task ids are stable, so leave room for tasks added later."""
    dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float | None = None
    """None: 1e-12 (BERT's)."""
    initializer_range: float = 0.02
    vocab_size: int = 0
    """Filled in from the tokenizer (or the ``init_from`` checkpoint); 0 in a config file."""

    def __post_init__(self) -> None:
        if self.init_from is None:
            self.fill_defaults()
        elif self.sizes_resolved():
            self.check()
        require(self.num_task_embeddings >= 1, "model.num_task_embeddings", "an integer >= 1")
        require(0.0 <= self.dropout < 1.0, "model.dropout", "a number in [0, 1)")
        require(0.0 <= self.attention_dropout < 1.0, "model.attention_dropout", "a number in [0, 1)")

    def fill_defaults(self) -> None:
        """Fill the size fields not given from the flavour and ``MODEL_DEFAULTS``, then check them."""
        preset = {**MODEL_FLAVOURS.get(self.flavour, MODEL_FLAVOURS["debug"]), **MODEL_DEFAULTS}
        for key, value in preset.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self.check()

    def sizes_resolved(self) -> bool:
        return all(getattr(self, key) is not None for key in CHECKPOINT_FIELDS)

    def check(self) -> None:
        require(self.num_heads is not None and self.num_heads >= 1, "model.num_heads", "an integer >= 1")
        require(self.hidden_size > 0 and self.hidden_size % self.num_heads == 0, "model.hidden_size",
                f"a positive multiple of model.num_heads ({self.num_heads})")
        require(self.num_layers >= 1, "model.num_layers", "an integer >= 1")
        require(self.intermediate_size >= 1, "model.intermediate_size", "an integer >= 1")
        require(self.max_position >= 1, "model.max_position", "an integer >= 1")
        require(self.type_vocab_size >= 1, "model.type_vocab_size", "an integer >= 1")
        require(self.layer_norm_eps > 0, "model.layer_norm_eps", "a number > 0")


@dataclass
class DeepSpeedSection:
    config: str = "configs/ds/zero2.json"
    """A DeepSpeed JSON config (ZeRO stage, offload, communication). The run config's batch size,
    accumulation, clipping and precision are written over the matching fields."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Nested DeepSpeed fields to change, e.g. {zero_optimization: {stage: 3}}."""


@dataclass(frozen=True)
class OptimConfig:
    """How an engine steps: AdamW, its learning-rate schedule, clipping, accumulation and precision.

    Every training loop builds one and hands it to its engine (:func:`ernie_cmtl.engine.build_engine`):
    pretraining from its ``train`` section (:attr:`TrainConfig.optim`), fine-tuning from its own config,
    the benchmarks directly. Not a YAML section of its own."""

    lr: float
    """Peak learning rate."""
    total_steps: int = 0
    """Optimizer steps the schedule decays over; 0 only with ``decay="constant"`` (no horizon needed)."""
    warmup_steps: int = 0
    """Linear warm-up: step s (from 0) runs at ``(s + 1) / (warmup_steps + 1)`` of the peak."""
    decay: Literal["linear", "cosine", "constant"] = "linear"
    min_lr_ratio: float = 0.0
    """The decay ends at this share of the peak, at ``total_steps``."""
    weight_decay: float = 0.01
    """On matrices only: biases and LayerNorm weights (1-D parameters) are not decayed."""
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = off)."""
    grad_accum_steps: int = 1
    """Micro-batches per optimizer step."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """bf16: autocast (torch engine) or DeepSpeed bf16; fp16: DeepSpeed engine only (loss scaling)."""

    def __post_init__(self) -> None:
        require(self.lr > 0, "lr", "a number > 0")
        require(self.total_steps >= 1 or self.decay == "constant", "total_steps",
                "an integer >= 1 (the steps a linear or cosine decay runs over)")
        require(self.warmup_steps >= 0, "warmup_steps", "an integer >= 0")
        require(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", "a number in [0, 1]")
        require(self.weight_decay >= 0, "weight_decay", "a number >= 0")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", "two numbers in [0, 1)")
        require(self.grad_clip >= 0, "grad_clip", "a number >= 0")
        require(self.grad_accum_steps >= 1, "grad_accum_steps", "an integer >= 1")
        object.__setattr__(self, "betas", (float(self.betas[0]), float(self.betas[1])))


@dataclass
class TrainConfig:
    batch_size: int = 32
    """Micro-batch size (sequences per forward pass)."""
    grad_accum_steps: int = 1
    max_steps: int = 300
    """Optimizer steps of the whole run."""
    lr: float = 5e-4
    warmup_steps: int = 30
    lr_decay: Literal["linear", "cosine", "constant"] = "linear"
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.01
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    adam_eps: float = 1e-6
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = off)."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """bf16: autocast (torch engine) or DeepSpeed bf16; fp16: DeepSpeed engine only (loss scaling)."""
    engine: Literal["torch", "deepspeed"] = "torch"
    """torch: one process, plain PyTorch. deepspeed: the DeepSpeed engine (1 process, or N through
    launch.sh), ZeRO per ``train.deepspeed.config``."""
    deepspeed: DeepSpeedSection = field(default_factory=DeepSpeedSection)
    device: str = "auto"
    """``auto`` (cuda if present, else cpu), ``cpu``, ``cuda``, ``cuda:1`` ..."""
    eval_every: int = 100
    eval_batches: int = 8
    log_every: int = 10
    save_every: int = 100
    keep_last: int = 2
    """Checkpoints kept on disk (older ones are deleted after a new one is complete)."""
    peak_flops: float = 0.0
    """Device peak FLOP/s for MFU (0 = do not report MFU). Set it for your hardware; never guessed."""
    length_group_window: int = 0
    """Length grouping: each window of this many global batches is sorted by example length and cut into
    batches (run in a random order, rows shuffled), so batches pad little (real tokens 0.64 -> 0.98 of the
    work on the task mix, 1.5x less CPU time); 0 or 1 = off (random batches, the default). Off by default
    because it hurt learning in two measurements (docs/PERFORMANCE.md): sentence reordering +0.088 held-out
    loss (mean of 4 seeds, worse in 3) and the capitalization learning test's accuracy 0.838 vs 0.857."""
    compile: bool = False
    """``torch.compile`` the model (torch engine). Off: on CPU it was slower than eager (docs/PERFORMANCE.md)."""
    stop_signals: list[str] = field(default_factory=lambda: ["SIGTERM", "SIGUSR1", "SIGINT"])
    """Signals that stop the run gracefully: finish the step, write and verify a checkpoint, exit with code 3
    (``--resume`` continues exactly). Any of SIGTERM, SIGUSR1, SIGUSR2, SIGINT, SIGHUP; [] = none."""
    max_bad_steps: int = 5
    """Steps with a non-finite loss or gradient norm are skipped (never applied); this many in a row stop the
    run (exit code 4) with a line naming the step, task and batches."""

    def __post_init__(self) -> None:
        require(self.length_group_window >= 0, "train.length_group_window", "an integer >= 0")
        require(all(s in ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGHUP") for s in self.stop_signals),
                "train.stop_signals", "a list of SIGTERM, SIGUSR1, SIGUSR2, SIGINT, SIGHUP")
        require(self.max_bad_steps >= 1, "train.max_bad_steps", "an integer >= 1")
        require(not self.compile or self.engine == "torch", "train.compile",
                "false with train.engine=deepspeed (it applies to the torch engine)")
        for key in ("batch_size", "grad_accum_steps", "max_steps", "eval_every", "eval_batches",
                    "log_every", "save_every", "keep_last"):
            require(getattr(self, key) >= 1, f"train.{key}", "an integer >= 1")
        require(self.lr > 0, "train.lr", "a number > 0")
        require(self.warmup_steps >= 0, "train.warmup_steps", "an integer >= 0")
        require(0.0 <= self.min_lr_ratio <= 1.0, "train.min_lr_ratio", "a number in [0, 1]")
        require(len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas),
                "train.adam_betas", "two numbers in [0, 1)")
        require(self.grad_clip >= 0, "train.grad_clip", "a number >= 0")
        require(self.precision != "fp16" or self.engine == "deepspeed", "train.precision",
                "'fp32' or 'bf16' with train.engine=torch (fp16 needs DeepSpeed's loss scaling)")

    @property
    def optim(self) -> OptimConfig:
        """The optimizer, schedule and step settings of this section, as the engine takes them."""
        return OptimConfig(lr=self.lr, total_steps=self.max_steps, warmup_steps=self.warmup_steps,
                           decay=self.lr_decay, min_lr_ratio=self.min_lr_ratio, weight_decay=self.weight_decay,
                           betas=tuple(self.adam_betas), eps=self.adam_eps, grad_clip=self.grad_clip,
                           grad_accum_steps=self.grad_accum_steps, precision=self.precision)


@dataclass
class ScheduleConfig:
    """The continual multi-task schedule: plain data; ``ernie_cmtl.scheduler`` turns it into a plan."""

    strategy: Literal["cmtl", "continual", "multitask", "explicit"] = "cmtl"
    """cmtl: ERNIE 2.0 continual multi-task learning; continual: one stage per task, each alone;
    multitask: all tasks from step 0; explicit: per-stage steps written out in ``explicit_steps``."""
    stages: list[Any] = field(default_factory=list)
    """Tasks in the order they are introduced: each entry a task name or a list of names introduced together.
    Empty: the ``tasks`` section's order, one task per stage."""
    steps_per_task: int = 0
    """B, the budget of every task. 0: the total budget (``total_steps``) is divided among the tasks."""
    total_steps: int = 0
    """The whole run's steps when ``steps_per_task`` is 0. 0: ``train.max_steps``."""
    always_include: list[str] = field(default_factory=list)
    """Tasks present in every stage (their budget spread evenly over the stages), e.g. knowledge_masking."""
    allocation: str = "ernie"
    """How a task's budget is spread over the stages from its introduction on (``cmtl`` only); a name in
    ``ernie_cmtl.scheduler.ALLOCATION_RULES``."""
    sampling: Literal["proportional", "uniform", "temperature"] = "proportional"
    """Which task a step trains, within a stage. proportional: exact counts (a seeded shuffle of the stage's
    task slots); uniform / temperature (multitask only): each step draws a task with probability ~ uniform /
    budget^(1/temperature); the counts then match the budgets only in expectation."""
    temperature: float = 1.0
    explicit_steps: list[dict[str, int]] = field(default_factory=list)
    """strategy explicit: one mapping per stage, task -> steps in that stage."""

    def __post_init__(self) -> None:
        require(self.steps_per_task >= 0, "schedule.steps_per_task", "an integer >= 0")
        require(self.total_steps >= 0, "schedule.total_steps", "an integer >= 0")
        require(not (self.steps_per_task and self.total_steps), "schedule.total_steps",
                "0 when schedule.steps_per_task is set (give one budget, not both)")
        require(self.temperature > 0, "schedule.temperature", "a number > 0")
        require(self.sampling == "proportional" or self.strategy == "multitask", "schedule.sampling",
                "'proportional' unless schedule.strategy is 'multitask'")
        require((self.strategy == "explicit") == bool(self.explicit_steps), "schedule.explicit_steps",
                "a list of per-stage {task: steps} mappings exactly when schedule.strategy is 'explicit'")
        for i, stage in enumerate(self.stages):
            ok = isinstance(stage, str) or (isinstance(stage, list) and stage
                                            and all(isinstance(t, str) for t in stage))
            require(bool(ok), f"schedule.stages[{i}]", "a task name or a non-empty list of task names")
        for i, stage in enumerate(self.explicit_steps):
            require(all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in stage.values()),
                    f"schedule.explicit_steps[{i}]", "a mapping of task name -> steps (integers >= 0)")


@dataclass
class WandbConfig:
    enabled: bool = False
    project: str = "ernie-cmtl"
    entity: str | None = None
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    """auto: the WANDB_MODE environment variable if set (tests set offline), else online if wandb has
    credentials (a login or WANDB_API_KEY), else offline. An explicit mode always wins."""
    tags: list[str] = field(default_factory=list)
    name: str | None = None
    """Run name (default: the run directory's name)."""
    log_checkpoints: bool = False
    """Upload each checkpoint as a wandb artifact (type model)."""


@dataclass
class RetentionMonitorConfig:
    """``monitor.retention``: what a run with ``model.init_from`` still knows of its source, at every evaluation
    (``retention/*`` beside ``valid/*``; the source's own values at step 0). Ignored without ``init_from``."""

    enabled: bool = True
    """Measure drift (always, with ``init_from``) and zero-shot similarity (when ``pairs`` is set)."""
    pairs: str | None = None
    """A TSV of scored sentence pairs (``sentence1``, ``sentence2``, ``score`` columns by header name, or the
    first three columns), e.g. ``../shared/data/glue/STS-B/dev.tsv``: Spearman of the cosine of mean-pooled
    embeddings against the score. None: no zero-shot similarity."""
    max_pairs: int = 0
    """Use the first this many pairs of ``pairs`` (0 = all)."""
    drift_sequences: int = 256
    """Held-out sequences (the first task's valid examples, fixed) on which the mean cosine and linear CKA of
    the source's and the current encoder's mean-pooled states are measured."""
    batch_size: int = 64

    def __post_init__(self) -> None:
        require(self.max_pairs == 0 or self.max_pairs >= 2, "monitor.retention.max_pairs",
                "0 (all) or an integer >= 2 (a correlation needs two pairs)")
        require(self.drift_sequences >= 2, "monitor.retention.drift_sequences", "an integer >= 2")
        require(self.batch_size >= 1, "monitor.retention.batch_size", "an integer >= 1")


@dataclass
class MonitorConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    affinity_every: int = 0
    """Every this many steps, the cosine similarity of the active tasks' gradients (0 = off)."""
    affinity_batch_size: int = 8
    retention: RetentionMonitorConfig = field(default_factory=RetentionMonitorConfig)

    def __post_init__(self) -> None:
        require(self.affinity_every >= 0, "monitor.affinity_every", "an integer >= 0")
        require(self.affinity_batch_size >= 1, "monitor.affinity_batch_size", "an integer >= 1")


REPLAY_TASK = "knowledge_masking"
"""The task whose training examples ``preserve.replay_corpus``'s join: the masked-LM stream."""


@dataclass
class PreserveConfig:
    """The ``preserve`` section (:mod:`ernie_cmtl.preserve`): ways to keep what the ``model.init_from``
    encoder knew, all off by default. Anchoring and distillation need ``model.init_from``; head warm-up and
    replay work in any run."""

    head_warmup_steps: int = 0
    """For each task's first N steps, the encoder learns at ``head_warmup_encoder_lr`` x its rate (0 = off)."""
    head_warmup_encoder_lr: float = 0.0
    """The encoder's learning-rate factor during a task's head warm-up (0: the encoder is frozen)."""
    l2sp_weight: float = 0.0
    """lambda of the L2-SP penalty lambda * ||theta - theta_source||^2 on the encoder's weights (0 = off); its
    gradient is added in the backward pass, its value logged as ``preserve.l2sp``."""
    distill_weight: float = 0.0
    """mu: weight of the distance between the current and the frozen source encoder's states (0 = off)."""
    distill_on: Literal["mean", "tokens"] = "mean"
    """``mean``: 1 - cosine of the mean-pooled states; ``tokens``: mean squared error of every real token's
    last-layer state."""
    replay_corpus: list[str] = field(default_factory=list)
    """A second corpus (files, directories or globs, read with the ``data`` section's options), e.g. general
    text beside a narrow domain corpus: its knowledge-masking examples are mixed into the run's own."""
    replay_fraction: float = 0.0
    """Share of knowledge masking's training examples drawn from ``replay_corpus`` (0 = off): the run's own
    examples are all kept, and the replay corpus's are added (repeated, if it has too few) until they make up
    this share (ernie_cmtl.build.replay)."""

    def __post_init__(self) -> None:
        require(self.head_warmup_steps >= 0, "preserve.head_warmup_steps", "an integer >= 0")
        require(0.0 <= self.head_warmup_encoder_lr <= 1.0, "preserve.head_warmup_encoder_lr", "a number in [0, 1]")
        require(self.l2sp_weight >= 0, "preserve.l2sp_weight", "a number >= 0")
        require(self.distill_weight >= 0, "preserve.distill_weight", "a number >= 0")
        require(self.distill_on in ("mean", "tokens"), "preserve.distill_on", "'mean' or 'tokens'")
        require(0.0 <= self.replay_fraction < 1.0, "preserve.replay_fraction", "a number in [0, 1)")
        require(self.replay_fraction == 0 or bool(self.replay_corpus), "preserve.replay_corpus",
                "the files of the corpus to replay (preserve.replay_fraction is set)")
        require(self.replay_fraction > 0 or not self.replay_corpus, "preserve.replay_fraction",
                "a number in (0, 1): the share of replayed examples (preserve.replay_corpus is set)")

    @property
    def needs_source(self) -> bool:
        """Whether a frozen copy of the source encoder is kept (anchoring or distillation)."""
        return self.l2sp_weight > 0 or self.distill_weight > 0

    @property
    def enabled(self) -> bool:
        return self.needs_source or self.head_warmup_steps > 0 or self.replay_fraction > 0


@dataclass
class RunConfig:
    seed: int = 0
    run_dir: str = "runs/default"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tasks: dict[str, Any] = field(default_factory=lambda: {"knowledge_masking": {}})
    """Task name -> that task's own config section (typed by the task plugin)."""
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    preserve: PreserveConfig = field(default_factory=PreserveConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)


def read_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Parse a run config from YAML (defaults when ``path`` is None) plus ``KEY=VALUE`` overrides into the
    typed tree. Task sections stay plain mappings and the schedule is not yet checked against the tasks:
    :func:`ernie_cmtl.assembly.load_config` does that whole-tree validation (this module imports nothing of
    the project)."""
    return from_dict(RunConfig, read_raw(path, overrides))


def read_raw(path: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """The YAML mapping of ``path`` (empty when None) with the dotted ``KEY=VALUE`` overrides applied."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark else ""
            raise ConfigError(f"{path}: not valid YAML{where}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        raw = loaded or {}
    for text in overrides or []:
        key, value = parse_override(text)
        set_dotted(raw, key, value)
    return raw


def dump_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (what actually ran, defaults included)."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
