from __future__ import annotations

import random

import numpy as np
import pytest

from data_builders.corpus import build_documents
from data_builders.knowledge import (
    batch_knowledge_spans,
    find_entity_spans,
    find_phrase_spans,
    mine_phrases,
    npmi,
    title_gazetteer,
    word_forms,
)
from data_builders.knowledge_masking import (
    ENTITY,
    PHRASE,
    WORD,
    Lexicon,
    build_lexicon,
    document_characters,
    phrase_sample,
    sentence_units,
)
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


def test_mining_does_not_depend_on_how_many_words_are_encoded_at_a_time(wiki_corpus):
    documents, _ = wiki_corpus
    sentences = [sentence.lower().split() for doc in documents["sentences"] for paragraph in doc
                 for sentence in paragraph]
    whole = mine_phrases(sentences, min_count=3, threshold=0.4)
    assert len(whole) > 20, len(whole)
    assert mine_phrases(sentences, min_count=3, threshold=0.4, chunk_words=997) == whole
    assert mine_phrases(iter([]), min_count=3) == set()


def test_phrase_sample_is_bounded_by_characters_not_only_documents(wiki_corpus):
    documents, _ = wiki_corpus
    total = document_characters(documents)
    assert total == sum(len(s) for doc in documents["sentences"] for paragraph in doc for s in paragraph)
    # an unbinding character bound: the documents rule alone (evenly spaced, at most max_documents)
    assert phrase_sample(documents, 5000, 10 * total)["id"] == documents["id"]
    assert phrase_sample(documents, 50, 10 * total)["id"] == documents["id"][::4][:50]
    # between half and all of the corpus: still spread over all of it, not its first documents
    spread = [documents["id"].index(doc_id) for doc_id in phrase_sample(documents, 150, 10 * total)["id"]]
    gaps = {b - a for a, b in zip(spread, spread[1:], strict=False)}
    assert len(spread) == 150 and spread[-1] >= 195 and gaps == {1, 2}
    # a quarter of the characters: about a quarter of the documents, evenly spaced over the whole corpus
    sample = phrase_sample(documents, 5000, total // 4)
    ids = documents["id"]
    positions = [ids.index(doc_id) for doc_id in sample["id"]]
    assert 40 <= len(sample) <= 50, len(sample)
    assert positions[-1] >= len(documents) * 3 // 4
    assert 0.5 * total / 4 <= document_characters(sample) <= 1.5 * total / 4
    assert len(phrase_sample(documents, 5000, 1)) == 1  # never empty


@pytest.mark.parametrize("use_entities", [True, False])
@pytest.mark.parametrize("use_phrases", [True, False])
def test_batch_spans_are_the_sentence_rules_on_random_sentences(use_entities, use_phrases):
    """Whole batches in numpy (batch_knowledge_spans) give the spans of the greedy sentence matchers
    (sentence_units: find_entity_spans, then find_phrase_spans with the entities' words blocked), on
    sentences drawn to collide: titles inside titles, phrases across entities, connectors, hyphens and initials
    in names, capitalized stopwords, titles longer than 8 words, words outside the lexicon, empty sentences."""
    vocabulary = ("The New York Times of de - . J D the city united states in In Cooper Thomas report "
                  "UNITED States York new Σ ΣΟΦΊΑ 3 A").split()
    phrases = {("new", "york"), ("new", "york", "times"), ("united", "states"), ("the", "city", "of"),
               ("york", "times"), ("city", "report"), ("states", "in", "the", "city"), ("in", "the")}
    titles = {("new", "york", "times"), ("the", "new", "york"), ("cooper", "thomas"), ("j", "d"),
              ("york", "times", "report"), ("a", "new", "york", "times", "report", "of", "the", "city"),
              ("a", "new", "york", "times", "report", "of", "the", "city", "report")}
    lexicon = Lexicon(phrases if use_phrases else set(), titles if use_entities else set())
    rng = random.Random(7)
    sentences = [[rng.choice(vocabulary) for _ in range(rng.choice([0, 1, 2, 5, 12, 30]))] for _ in range(1000)]
    dictionary = sorted({w for sentence in sentences for w in sentence})
    code = {w: i for i, w in enumerate(dictionary)}
    forms = word_forms(dictionary, lexicon.phrases, lexicon.phrase_starts, lexicon.titles if use_entities else None,
                       lexicon.title_starts, lexicon.index.vocabulary)
    flat = [code[w] for sentence in sentences for w in sentence]
    flags = np.array([forms[c][6] for c in flat], dtype=np.int64)
    ids = np.array([forms[c][7] for c in flat], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum([len(s) for s in sentences])]).astype(np.int64)
    entity_starts, entity_ends, phrase_starts, phrase_ends = batch_knowledge_spans(
        ids, flags, starts, lexicon.index, entities=use_entities, phrases=use_phrases, max_phrase_words=4)
    found = {"entities": 0, "phrases": 0}
    for k, sentence in enumerate(sentences):
        a, b = int(starts[k]), int(starts[k + 1])

        def inside(lo, hi, a=a, b=b):
            return [(int(x) - a, int(y) - a) for x, y in zip(lo, hi, strict=True) if a <= x < b]

        units = sentence_units(sentence, lexicon, use_entities=use_entities, max_phrase_words=4)
        entities = [(start, end) for start, end, level in units if level == ENTITY]
        spans = [(start, end) for start, end, level in units if level == PHRASE]
        assert inside(entity_starts, entity_ends) == entities, sentence
        assert inside(phrase_starts, phrase_ends) == spans, sentence
        found["entities"] += len(entities)
        found["phrases"] += len(spans)
    assert found["entities"] > 200 if use_entities else found["entities"] == 0
    assert found["phrases"] > 40 if use_phrases else found["phrases"] == 0
