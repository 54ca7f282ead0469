from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from data_builders.tokenizer import (
    TokenizerError,
    encode_space_joined,
    is_lowercasing,
    load_hf_tokenizer,
    load_tokenizer,
    save_tokenizer,
    splits_at_spaces,
    tokenizer_for_run,
    train_wordpiece,
)

TEXTS = [
    "The Sheffield United academy produced Regan Slater, an English professional footballer.",
    "Harrow International School Shanghai opened in August 2016 in Pudong, Shanghai.",
    "He signed a season-long loan with Scunthorpe United on 27 July 2019.",
] * 50


@pytest.fixture(scope="module")
def tok():
    return train_wordpiece(TEXTS, vocab_size=300, min_frequency=1)


def test_special_tokens_and_post_processor(tok):
    enc = tok.encode("Regan Slater plays football.")
    assert enc.tokens[0] == "[CLS]" and enc.tokens[-1] == "[SEP]"
    pair = tok.encode("Regan Slater.", "He plays.")
    assert pair.tokens.count("[SEP]") == 2 and set(pair.type_ids) == {0, 1}


def test_uncased_input_hides_capitalization(tok):
    assert is_lowercasing(tok)
    assert tok.encode("Apple United").ids == tok.encode("apple united").ids


def test_offsets_map_back_to_cased_text(tok):
    text = "Regan Slater signed for Sheffield United."
    enc = tok.encode(text, add_special_tokens=False)
    words = {}
    for word_id, (start, end) in zip(enc.word_ids, enc.offsets, strict=True):
        words.setdefault(word_id, [start, end])[1] = end
    surface = [text[s:e] for s, e in words.values()]
    assert surface[:5] == ["Regan", "Slater", "signed", "for", "Sheffield"]


def test_save_load_round_trip_and_vocab_txt(tok, tmp_path: Path):
    path = save_tokenizer(tok, tmp_path / "tokenizer.json")
    again = load_tokenizer(path)
    assert again.encode("Sheffield United").ids == tok.encode("Sheffield United").ids
    vocab = tmp_path / "vocab.txt"
    inverse = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    vocab.write_text("\n".join(token for token, _ in inverse) + "\n")
    from_vocab = load_tokenizer(vocab)
    assert from_vocab.encode("Sheffield United").ids == tok.encode("Sheffield United").ids


def test_missing_or_bad_files_give_clear_errors(tmp_path: Path):
    with pytest.raises(TokenizerError, match="not found"):
        load_tokenizer(tmp_path / "nope.json")
    (tmp_path / "vocab.txt").write_text("hello\nworld\n")
    with pytest.raises(TokenizerError, match="lacks special tokens"):
        load_tokenizer(tmp_path / "vocab.txt")


def test_run_reuses_its_saved_tokenizer_instead_of_retraining(tmp_path: Path):
    run_file = tmp_path / "run" / "tokenizer.json"
    first = tokenizer_for_run(run_file, pretrained=None, texts=iter(TEXTS), cache_path=None, vocab_size=300,
                              min_frequency=1, lowercase=True)
    assert run_file.is_file()
    second = tokenizer_for_run(run_file, pretrained=None, texts=None, cache_path=None, vocab_size=999,
                               min_frequency=1, lowercase=True)
    assert second.to_str() == first.to_str()


ODD_TEXTS = ["", " ", "two  spaces", " leading and trailing ", "tab\tinside and\nnewline", "Café naïve ΣΟΦΊΑΣ",
             "北京 is 中国的首都", "ctrl\x00char and \u200bzero width", "emoji 🙂 end.", "e.g. U.S.-based (1990–2000)"]


def _check_space_joined(tok, texts):
    for max_tokens in (5, 125):
        expected = {t: tok.encode(t, add_special_tokens=False).ids[:max_tokens] for t in texts}
        assert encode_space_joined(texts, tok, max_tokens) == expected


def test_space_joined_encoding_is_the_tokenizers_own_on_real_passages(wiki_corpus, minilm_dir):
    """IR relevance encodes its passages word by word (each distinct word once): exactly what encoding each
    whole passage gives, with our trained tokenizer and a Hugging Face BERT's (all-MiniLM-L6-v2), on real
    Wikipedia passages, titles and odd spacing."""
    from data_builders.ir_relevance import collect_passages

    documents, ours = wiki_corpus
    passages = collect_passages(documents["paragraphs"][:], 64, 12).texts
    texts = passages + documents["title"][:] + ODD_TEXTS + passages[:50]  # repeats: one entry per distinct text
    assert len(passages) > 500
    for tok in (ours, load_hf_tokenizer(minilm_dir)):
        assert splits_at_spaces(tok)
        _check_space_joined(tok, texts)
    assert encode_space_joined([], ours, 10) == {}


def test_tokenizers_that_mark_a_leading_space_are_encoded_whole():
    """Byte-level BPE and Metaspace encode a word differently after a space: no word-by-word shortcut, and the
    result is still the tokenizer's own."""
    byte_level = Tokenizer(models.BPE())
    byte_level.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    byte_level.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    metaspace = Tokenizer(models.Unigram())
    metaspace.pre_tokenizer = pre_tokenizers.Metaspace()
    metaspace.train_from_iterator(TEXTS, trainers.UnigramTrainer(vocab_size=200, show_progress=False))
    for tok in (byte_level, metaspace):
        assert not splits_at_spaces(tok)
        _check_space_joined(tok, [*TEXTS[:3], "Regan  Slater", "plays football."])
    truncating = train_wordpiece(TEXTS, vocab_size=300, min_frequency=1)
    truncating.enable_truncation(4)
    assert not splits_at_spaces(truncating)


def test_english_tokenizers_are_never_seeded_with_chinese_characters(tmp_path: Path):
    """``chinese_seed_characters`` applies to Chinese corpora only: an English tokenizer's alphabet is the
    corpus's characters, whatever the setting."""
    tok = tokenizer_for_run(tmp_path / "tokenizer.json", pretrained=None, texts=iter(TEXTS), cache_path=None,
                            vocab_size=300, min_frequency=1, lowercase=True, chinese=False,
                            chinese_seed_characters=3500)
    seen = set("".join(TEXTS).lower())
    singles = {t for t in tok.get_vocab() if len(t) == 1}
    assert singles <= seen and "的" not in singles


def test_chinese_seed_alphabet_is_jiebas_most_frequent_characters_and_punctuation():
    from data_builders.tokenizer import chinese_seed_alphabet, common_chinese_characters

    assert chinese_seed_alphabet(0) == []
    top = common_chinese_characters(3500)
    assert len(top) == 3500 and top[:3] == ["一", "是", "人"] and all(c in top for c in "什么孩她")
    seeds = chinese_seed_alphabet(3500)
    assert set(top) <= set(seeds) and {"!", "?", ",", "。", "“", "》"} <= set(seeds)  # ！？， after NFKC
    assert all(len(c) == 1 for c in seeds) and len(seeds) == len(set(seeds))
