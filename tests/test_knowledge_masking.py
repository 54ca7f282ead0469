from __future__ import annotations

import pytest
import torch

from data_builders.knowledge_masking import ENTITY, PHRASE, WORD
from ernie_cmtl.tasks import BuildContext, SpecialIds
from pretrain_tasks.knowledge_masking import (
    KnowledgeMaskingConfig,
    KnowledgeMaskingTask,
    LevelMix,
    mask_units,
)


@pytest.fixture(scope="module")
def built(wiki_corpus, tmp_path_factory):
    docs, tok = wiki_corpus
    task = KnowledgeMaskingTask(KnowledgeMaskingConfig(phrase_min_count=3), SpecialIds.from_tokenizer(tok))
    ctx = BuildContext(tokenizer=tok, max_seq_len=128, seed=0, num_proc=1,
                       cache_dir=tmp_path_factory.mktemp("km"), train_documents=docs)
    return task, task.build(docs, ctx), tok


def test_examples_are_well_formed(built):
    task, examples, tok = built
    assert len(examples) > 300
    levels = [lvl for row in examples["unit_level"] for lvl in row]
    assert {WORD, PHRASE, ENTITY} <= set(levels)
    assert levels.count(ENTITY) / len(levels) > 0.02 and levels.count(PHRASE) / len(levels) > 0.005
    for ids, units, unit_level in zip(examples["input_ids"][:200], examples["token_unit"][:200],
                                      examples["unit_level"][:200], strict=True):
        assert len(ids) <= 128 and ids[0] == tok.token_to_id("[CLS]") and ids[-1] == tok.token_to_id("[SEP]")
        assert units[0] == -1 and units[-1] == -1 and min(units[1:-1]) >= 0
        # units are contiguous, numbered in order, and cover every inner token
        assert units[1:-1] == sorted(units[1:-1]) and max(units) == len(unit_level) - 1


def test_entity_units_are_real_names(built):
    _, examples, tok = built
    names = []
    for ids, units, unit_level in zip(examples["input_ids"][:100], examples["token_unit"][:100],
                                      examples["unit_level"][:100], strict=True):
        for u, level in enumerate(unit_level):
            if level == ENTITY:
                names.append(tok.decode([i for i, x in zip(ids, units, strict=True) if x == u]))
    assert len(names) > 50
    assert all(len(n.split()) >= 2 for n in names)


def _batch(task, examples, n=64):
    rows = examples[:n]
    return rows, task.collate(rows, torch.Generator().manual_seed(0))


def test_whole_units_are_masked_and_ratio_is_near_15_percent(built):
    task, examples, _ = built
    rows, batch = _batch(task, examples, 128)
    input_ids, _ = (torch.nn.utils.rnn.pad_sequence([torch.tensor(r) for r in rows["input_ids"]],
                                                     batch_first=True), None)
    masked = torch.zeros(input_ids.numel(), dtype=torch.bool)
    masked[batch["positions"]] = True
    masked = masked.view(input_ids.shape)
    whole_multiword = 0
    for b, (units, unit_level) in enumerate(zip(rows["token_unit"], rows["unit_level"], strict=True)):
        units_t = torch.tensor(units)
        for u, level in enumerate(unit_level):
            flags = masked[b, : len(units)][units_t == u]
            assert bool(flags.all()) or not bool(flags.any()), "a unit was masked in part"
            if level != WORD and bool(flags.all()) and flags.numel() > 1:
                whole_multiword += 1
        assert not masked[b, 0] and not masked[b, len(units) - 1]  # never [CLS]/[SEP]
    assert whole_multiword > 20
    inner = sum(len(u) - 2 for u in rows["token_unit"])
    ratio = batch["positions"].numel() / inner
    assert 0.14 <= ratio <= 0.22, ratio
    assert torch.equal(batch["labels"], input_ids.reshape(-1)[batch["positions"]])


def test_replacement_split_is_80_10_10(built):
    task, examples, _ = built
    rows, batch = _batch(task, examples, 512)
    padded = torch.nn.utils.rnn.pad_sequence([torch.tensor(r) for r in rows["input_ids"]], batch_first=True)
    new = batch["input_ids"].reshape(-1)[batch["positions"]]
    as_mask = (new == task.special.mask).float().mean()
    unchanged = (new == padded.reshape(-1)[batch["positions"]]).float().mean()
    assert 0.75 < as_mask < 0.85 and 0.06 < unchanged < 0.16
    assert int((batch["input_ids"] == task.special.mask).sum()) == int((new == task.special.mask).sum())


def test_masking_is_deterministic_in_the_generator_and_varies_across_seeds(built):
    task, examples, _ = built
    rows = examples[:32]
    a = task.collate(rows, torch.Generator().manual_seed(5))
    b = task.collate(rows, torch.Generator().manual_seed(5))
    c = task.collate(rows, torch.Generator().manual_seed(6))
    assert torch.equal(a["positions"], b["positions"]) and torch.equal(a["input_ids"], b["input_ids"])
    assert not torch.equal(a["positions"], c["positions"])


def test_level_mix_steers_what_is_masked():
    special = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4, vocab_size=100, first_regular=5)
    # one sequence: 20 single-token word units, then 5 two-token entity units
    token_unit = torch.tensor([[-1] + list(range(20)) + [u for u in range(20, 25) for _ in (0, 1)] + [-1]])
    input_ids = torch.randint(5, 100, token_unit.shape)
    levels = [torch.tensor([WORD] * 20 + [ENTITY] * 5)]
    only_entities = KnowledgeMaskingConfig(level_mix=LevelMix(word=1e-6, phrase=0, entity=1.0))
    out = mask_units(input_ids, token_unit, levels, only_entities, special, torch.Generator().manual_seed(0))
    assert out.unit_selected[20:].any() and not out.unit_selected[:20].any()


def test_mask_units_handles_empty_sequences():
    special = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4, vocab_size=100, first_regular=5)
    token_unit = torch.tensor([[-1, 0, 1, -1], [-1, -1, -1, -1]])
    out = mask_units(torch.tensor([[2, 7, 8, 3], [2, 3, 0, 0]]), token_unit,
                     [torch.tensor([WORD, WORD]), torch.tensor([], dtype=torch.long)],
                     KnowledgeMaskingConfig(), special, torch.Generator().manual_seed(0))
    assert out.positions.numel() >= 1 and bool((out.positions < 4).all())


