"""Knowledge masking (ERNIE 1.0): masked-LM over whole words, phrases and entities."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from datasets import Dataset
from torch import Tensor, nn

from data_builders.knowledge_masking import LEVELS, Lexicon, build_knowledge_masking, build_lexicon
from ernie_cmtl.config import ModelConfig, require
from ernie_cmtl.model import MaskedLMHead, mlm_decoder_flops
from ernie_cmtl.tasks import BuildContext, PretrainTask, pad_sequences


@dataclass
class LevelMix:
    """Relative weight of choosing a unit of each level when picking what to mask. A level with weight 0 is
    not built at all (its words become word-level units)."""

    word: float = 1.0
    phrase: float = 1.0
    entity: float = 1.0

    def __post_init__(self) -> None:
        for level in LEVELS:
            require(getattr(self, level) >= 0, f"level_mix.{level}", "a number >= 0")
        require(self.word > 0, "level_mix.word", "a number > 0 (every token belongs to some unit)")


@dataclass
class KnowledgeMaskingConfig:
    mask_prob: float = 0.15
    """Share of (non-special) tokens to mask per sequence; whole units are masked, so it may overshoot
    by at most one unit."""
    replace_mask: float = 0.8
    """Of the chosen units: share replaced by [MASK] ..."""
    replace_random: float = 0.1
    """... share replaced by random tokens (the rest stays unchanged)."""
    level_mix: LevelMix = field(default_factory=LevelMix)
    phrase_min_count: int = 5
    phrase_npmi: float = 0.5
    phrase_passes: int = 2
    max_phrase_words: int = 4
    phrase_sample_documents: int = 5000
    """Phrases are mined from at most this many training documents (evenly spaced), bounding memory."""
    phrase_sample_chars: int = 20_000_000
    """... and from about this many characters at most (fewer documents where documents are long: a one-line
    dump cut into 100,000-character documents), so mining's time and memory do not depend on how the corpus
    is cut into documents. 5,000 Wikipedia articles hold about 10 million characters."""
    title_entities: bool = True
    """Also treat spans matching (multi-word) document titles as entities."""
    min_tokens: int = 8
    """Drop segments shorter than this."""

    def __post_init__(self) -> None:
        require(0 < self.mask_prob < 1, "mask_prob", "a number in (0, 1)")
        require(self.replace_mask >= 0 and self.replace_random >= 0
                and self.replace_mask + self.replace_random <= 1, "replace_mask",
                "replace_mask and replace_random in [0, 1] with a sum <= 1")
        require(-1 <= self.phrase_npmi <= 1, "phrase_npmi", "a number in [-1, 1]")
        require(self.phrase_min_count >= 1, "phrase_min_count", "an integer >= 1")
        require(self.max_phrase_words >= 2, "max_phrase_words", "an integer >= 2")
        require(self.phrase_sample_documents >= 1, "phrase_sample_documents", "an integer >= 1")
        require(self.phrase_sample_chars >= 1, "phrase_sample_chars", "an integer >= 1")


class KnowledgeMaskingTask(PretrainTask):
    """Masked-LM over knowledge units: whole words, mined phrases and entity-like spans (ERNIE 1.0)."""

    name = "knowledge_masking"
    level = "token"
    reads_sentence_tokens = True
    document_local = True
    config_class = KnowledgeMaskingConfig
    label_summary = "vocabulary"
    builder_version = 2  # 2: the phrase sample is spread over the whole corpus (was its first documents)
    build_cost = 0.6

    @property
    def num_labels(self) -> int:
        return self.special.vocab_size

    def prepare_statistics(self, ctx: BuildContext) -> None:
        self.lexicon(ctx)

    def lexicon(self, ctx: BuildContext) -> Lexicon:
        """The phrase and title lexicon of ``ctx.train_documents``, mined once and cached in ``ctx.cache_dir``."""
        lexicon_path = ctx.cache_dir / "lexicon.json"
        cached = getattr(self, "_lexicon", None)
        if cached is not None and cached[0] == lexicon_path:
            return cached[1]
        cfg = self.config
        if lexicon_path.is_file():
            lexicon = Lexicon.load(lexicon_path)
        else:
            lexicon = build_lexicon(
                ctx.train_documents, ctx.tokenizer, phrases=cfg.level_mix.phrase > 0,
                titles=cfg.level_mix.entity > 0 and cfg.title_entities, min_count=cfg.phrase_min_count,
                threshold=cfg.phrase_npmi, passes=cfg.phrase_passes, max_words=cfg.max_phrase_words,
                sample_documents=cfg.phrase_sample_documents, sample_chars=cfg.phrase_sample_chars)
            ctx.cache_dir.mkdir(parents=True, exist_ok=True)
            lexicon.save(lexicon_path)
        self._lexicon = (lexicon_path, lexicon)
        return lexicon

    def build(self, documents: Dataset, ctx: BuildContext) -> Dataset:
        cfg = self.config
        lexicon = self.lexicon(ctx)
        return build_knowledge_masking(
            documents, ctx.tokenizer, lexicon, use_entities=cfg.level_mix.entity > 0,
            max_seq_len=ctx.max_seq_len, max_phrase_words=cfg.max_phrase_words, min_tokens=cfg.min_tokens,
            num_proc=ctx.num_proc)

    def make_head(self, model_config: ModelConfig, word_embeddings: nn.Embedding) -> nn.Module:
        return MaskedLMHead(model_config, word_embeddings)

    def head_flops_per_token(self, model_config: ModelConfig, seq_len: int) -> float:
        """The vocabulary decoder runs on the masked tokens only (``mask_prob`` of them)."""
        return self.config.mask_prob * mlm_decoder_flops(model_config)

    def label_counts(self, examples: Dataset) -> dict[str, int]:
        """Masking units per level (the labels themselves are vocabulary ids, drawn per step)."""
        counts = dict.fromkeys(LEVELS, 0)
        for levels in examples["unit_level"]:
            for level in levels:
                counts[LEVELS[level]] += 1
        return counts

    def collate(self, rows: dict[str, list], generator: torch.Generator) -> dict[str, Tensor]:
        input_ids, attention_mask = pad_sequences(rows["input_ids"], self.special.pad)
        token_unit, _ = pad_sequences(rows["token_unit"], -1)
        unit_level = [torch.as_tensor(levels, dtype=torch.long) for levels in rows["unit_level"]]
        masked = mask_units(input_ids, token_unit, unit_level, self.config, self.special, generator)
        return {"input_ids": masked.input_ids, "attention_mask": attention_mask,
                "positions": masked.positions, "labels": masked.labels}


@dataclass
class MaskedBatch:
    input_ids: Tensor
    """[B, L] ids after replacement."""
    positions: Tensor
    """Flat indices (into B * L) of every masked token, in order."""
    labels: Tensor
    """The original ids at ``positions``."""
    unit_selected: Tensor
    """[U] bool over the batch's units (concatenated in example order): chosen for masking."""


def mask_units(input_ids: Tensor, token_unit: Tensor, unit_level: list[Tensor], cfg: KnowledgeMaskingConfig,
               special, generator: torch.Generator) -> MaskedBatch:
    """Choose whole units to mask, per sequence, without Python loops over tokens or units.

    Units are drawn without replacement with probability proportional to their level's weight (an
    exponential race: the smallest ``-log(u) / w`` goes first) until ``mask_prob`` of the sequence's tokens
    are covered; then each chosen unit is replaced by [MASK] / random tokens / kept (80/10/10 by default).
    """
    batch_size = input_ids.shape[0]
    units_per_example = torch.tensor([len(levels) for levels in unit_level])
    levels = torch.cat(unit_level) if unit_level else torch.zeros(0, dtype=torch.long)
    num_units = levels.numel()
    unit_offset = torch.cumsum(units_per_example, 0) - units_per_example
    in_unit = token_unit >= 0
    global_unit = torch.where(in_unit, token_unit + unit_offset[:, None], 0)
    unit_len = torch.bincount(global_unit[in_unit], minlength=num_units)
    unit_example = torch.repeat_interleave(torch.arange(batch_size), units_per_example)

    weights = torch.tensor([cfg.level_mix.word, cfg.level_mix.phrase, cfg.level_mix.entity])[levels]
    uniform = torch.rand(num_units, generator=generator).clamp_min(1e-12)
    key = -torch.log(uniform) / weights  # inf where the weight is 0: never chosen
    order = torch.argsort(key, stable=True)
    order = order[torch.argsort(unit_example[order], stable=True)]  # by example, then by key
    sorted_len = unit_len[order]
    tokens_per_example = in_unit.sum(1)  # units partition these tokens
    example_start = torch.cumsum(tokens_per_example, 0) - tokens_per_example
    covered_before = torch.cumsum(sorted_len, 0) - sorted_len - example_start[unit_example[order]]
    budget = (tokens_per_example * cfg.mask_prob).round().clamp_min(1)
    chosen_sorted = (covered_before < budget[unit_example[order]]) & torch.isfinite(key[order])
    unit_selected = torch.zeros(num_units, dtype=torch.bool)
    unit_selected[order] = chosen_sorted

    action = torch.rand(num_units, generator=generator)
    to_mask = unit_selected & (action < cfg.replace_mask)
    to_random = unit_selected & (action >= cfg.replace_mask) & (action < cfg.replace_mask + cfg.replace_random)
    token_selected = in_unit & unit_selected[global_unit]
    flat_selected = token_selected.reshape(-1)
    positions = flat_selected.nonzero().squeeze(1)
    labels = input_ids.reshape(-1)[positions]

    out = input_ids.clone()
    out[in_unit & to_mask[global_unit]] = special.mask
    random_tokens = in_unit & to_random[global_unit]
    count = int(random_tokens.sum())
    if count:
        out[random_tokens] = torch.randint(special.first_regular, special.vocab_size, (count,),
                                           generator=generator)
    return MaskedBatch(out, positions, labels, unit_selected)


