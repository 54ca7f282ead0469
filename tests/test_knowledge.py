from __future__ import annotations

import pytest

from data_builders.corpus import build_documents
from data_builders.knowledge import find_entity_spans, find_phrase_spans, mine_phrases, npmi, title_gazetteer
from data_builders.knowledge_masking import ENTITY, PHRASE, WORD, Lexicon, build_lexicon, sentence_units
from data_builders.tokenizer import train_wordpiece


def test_npmi_bounds():
    assert npmi(10, 10, 10, 1000) == pytest.approx(1.0)  # always together
    assert npmi(1, 100, 100, 10000) == pytest.approx(0.0, abs=1e-9)  # independent


def test_mine_phrases_finds_collocations_not_function_word_pairs():
    sentences = [["he", "moved", "to", "new", "york", "city", "in", "the", "spring"]] * 20
    sentences += [["the", "new", "car", "is", "in", "the", "city"]] * 5
    sentences += [["york", "is", "old", "and", "spring", "is", "new"]] * 3
    phrases = mine_phrases(sentences, min_count=5, threshold=0.3)
    assert ("new", "york") in phrases or ("new", "york", "city") in phrases
    assert not any(p[0] in {"the", "in", "to"} or p[-1] in {"the", "in", "to"} for p in phrases)


def test_phrase_spans_are_longest_match_and_respect_blocks():
    phrases = {("new", "york"), ("new", "york", "city")}
    words = ["i", "love", "new", "york", "city"]
    assert find_phrase_spans(words, phrases) == [(2, 5)]
    assert find_phrase_spans(words, phrases, blocked=[False, False, False, False, True]) == [(2, 4)]


def test_entity_spans_on_real_sentences():
    words = "In January 2018 , he made an appearance against Ipswich Town in the FA Cup".split()
    spans = [" ".join(words[s:e]) for s, e in find_entity_spans(words)]
    assert spans == ["Ipswich Town", "FA Cup"]
    words = "Harrow International School Shanghai is a British school in Waigaoqiao , Pudong".split()
    assert [" ".join(words[s:e]) for s, e in find_entity_spans(words)] == ["Harrow International School Shanghai"]
    words = "He played for the Liga Uruguaya de Básquetbol side".split()
    assert [" ".join(words[s:e]) for s, e in find_entity_spans(words)] == ["Liga Uruguaya de Básquetbol"]


def test_title_gazetteer_matches_lowercase_mentions_only_when_capitalized():
    gazetteer = title_gazetteer(["Jarred Shaw", "Harrow (band)", "Sheffield United F.C."], str.split)
    assert ("jarred", "shaw") in gazetteer and ("harrow",) not in gazetteer
    assert find_entity_spans("yesterday Jarred Shaw scored".split(), gazetteer) == [(1, 3)]


def test_sentence_units_partition_the_words():
    lexicon = Lexicon(phrases={("professional", "basketball")}, titles=set())
    words = "Jarred Shaw is an American professional basketball player".split()
    units = sentence_units(words, lexicon, use_entities=True, max_phrase_words=4)
    covered = [w for s, e, _ in units for w in range(s, e)]
    assert covered == list(range(len(words)))
    levels = {" ".join(words[s:e]): level for s, e, level in units}
    assert levels["Jarred Shaw"] == ENTITY
    assert levels["professional basketball"] == PHRASE
    assert levels["player"] == WORD


def test_lexicon_from_real_wikipedia(wiki_shards):
    docs = build_documents(wiki_shards[:1])
    tok = train_wordpiece((p for ps in docs["paragraphs"] for p in ps), vocab_size=3000)
    lexicon = build_lexicon(docs, tok, phrases=True, titles=True, min_count=5, threshold=0.5, passes=2,
                            max_words=4)
    assert len(lexicon.phrases) > 100, len(lexicon.phrases)
    assert ("united", "states") in lexicon.phrases
    assert len(lexicon.titles) > 100
