from __future__ import annotations

from pathlib import Path

import pytest

from data_builders.tokenizer import (
    TokenizerError,
    is_lowercasing,
    load_tokenizer,
    save_tokenizer,
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
