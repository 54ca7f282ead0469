"""Chinese, data side: reading, sentences, tokenizer and the task builders on the real Chinese law corpus.

A handful of real files from ../shared/data/chinese-laws-lawrefbook (one Markdown document per law), read the
way a run reads them, so every check below is on real Chinese text.
"""

from __future__ import annotations

import collections
import math
import re
import unicodedata
from pathlib import Path

import pytest
import torch

from data_builders.corpus import build_documents, detect_format
from data_builders.discourse_relation import ALL_RELATIONS
from data_builders.discourse_relation_zh import CUE_WORDS, find_pairs_zh
from data_builders.language import (
    chinese_sentences,
    detect_language,
    is_entity_tag,
    normalize_chinese,
    segment,
    split_sentences_zh,
    strip_enumeration,
    tagged_spans,
)
from data_builders.markdown import parse_markdown
from data_builders.segments import add_sentence_tokens, tokenize_chinese_sentences
from data_builders.tokenizer import load_tokenizer, save_hf_tokenizer_files, train_chinese_wordpiece
from ernie_cmtl.tasks import BuildContext, SpecialIds
from tests.conftest import SHARED_DATA

LAW = SHARED_DATA / "chinese-laws-lawrefbook"
FILES = [
    "valid/宪法相关法/人民陪审员法(2018-04-27).md",
    "valid/行政法/护照法(2006-04-29).md",
    "valid/经济法/价格法(1997-12-29).md",
    "valid/社会法/家庭教育促进法(2021-10-23).md",
    "valid/民法商法/电子签名法(2019-04-23).md",
    "valid/民法典/侵权责任编.md",
    "valid/行政法规/证券期货行政执法当事人承诺制度实施办法(2021-10-26).md",
    "valid/行政法规/失业保险条例(1999-01-22).md",
    "valid/行政法规/扫除文盲工作条例(1993-08-01).md",
    "valid/行政法规/现金管理暂行条例(2011-01-08).md",
    "valid/行政法规/计算机信息网络国际联网管理暂行规定实施办法(1998-02-13).md",
    "valid/行政法规/大型群众性活动安全管理条例(2007-09-14).md",
    "train/宪法/宪法修正案（2004年）.md",
    "train/行政法规/专利法实施细则(2010-01-09).md",
    "train/经济法/个人所得税法(2018-08-31).md",
    "train/行政法规/海上交通事故调查处理条例(1990-03-03).md",
]
ARTICLE_NUMBER = re.compile(r"^第[零〇一二三四五六七八九十百千万两\d]+条")
CJK = re.compile(r"[\u3400-\u9fff]")

# Real paragraphs (file, opening) and their sentences, checked by hand: 。 and ； end sentences, the closing
# quote stays with its sentence, nothing splits inside “” or (), an ellipsis inside quotes ends nothing,
# and the article number or list enumerator opening the paragraph is gone. Text as the reader gives it
# (NFKC: full-width commas, colons, semicolons and brackets are ASCII).
HAND_CHECKED = [
    ("valid/行政法规/扫除文盲工作条例(1993-08-01).md", "基本扫除文盲的市", [
        "基本扫除文盲的市、县(区),由省、自治区、直辖市人民政府验收;",
        "乡(镇)、城市的街道,由上一级人民政府验收;",
        "企业、事业单位,由所在地人民政府验收。",
        "对符合标准的,发给“基本扫除文盲单位证书”。"]),
    ("train/宪法/宪法修正案（2004年）.md", "第二十四条", [
        "宪法第三十三条增加一款,作为第三款:“国家尊重和保障人权。”",
        "第三款相应地改为第四款。"]),
    ("train/行政法规/专利法实施细则(2010-01-09).md", "发明或者实用新型说明书应当用词规范", [
        "发明或者实用新型说明书应当用词规范、语句清楚,并不得使用“如权利要求......所述的......”一类的引用语,"
        "也不得使用商业性宣传用语。"]),
    ("train/经济法/个人所得税法(2018-08-31).md", "（注：本表所称全年应纳税所得额", [
        "(注:本表所称全年应纳税所得额是指依照本法第六条的规定,以每一纳税年度的收入总额减除成本、费用以及损失后的"
        "余额。)"]),
    ("train/行政法规/海上交通事故调查处理条例(1990-03-03).md", "(六)损害情况", [
        "损害情况(附船舶、设施受损部位简图。难以在规定时间内查清的,应于检验后补报);"]),
    ("valid/民法典/侵权责任编.md", "第一千一百七十六条", [
        "自愿参加具有一定风险的文体活动,因其他参加者的行为受到损害的,受害人不得请求其他参加者承担侵权责任;",
        "但是,其他参加者对损害的发生有故意或者重大过失的除外。"]),
    ("valid/行政法规/证券期货行政执法当事人承诺制度实施办法(2021-10-26).md", "第五条", [
        "当事人自收到国务院证券监督管理机构案件调查法律文书之日至国务院证券监督管理机构作出行政处罚决定前,可以依照"
        "《证券法》等法律和本办法的规定,申请适用行政执法当事人承诺。",
        "国务院证券监督管理机构应当在送达当事人的案件调查法律文书中告知其有权依法申请适用行政执法当事人承诺。"]),
    ("valid/行政法规/现金管理暂行条例(2011-01-08).md", "(二)超出核定", [
        "超出核定的库存现金限额留存现金的。",
        "(2011年1月8日删除)"]),
    ("valid/行政法规/计算机信息网络国际联网管理暂行规定实施办法(1998-02-13).md", "跨省（区）", [
        "跨省(区)、市经营的接入单位应当向经营性互联单位主管部门申请领取国际联网经营许可证。",
        "在本省(区)、市内经营的接入单位应当向经营性互联单位主管部门或者经其授权的省级主管部门申请领取国际联网经营许可证。"]),
]


@pytest.fixture(scope="module")
def law_files() -> list[str]:
    if not (LAW / "valid").is_dir():
        pytest.skip(f"shared Chinese law corpus not found at {LAW} (CI and developer machines have it)")
    return [str(LAW / name) for name in FILES]


@pytest.fixture(scope="module")
def law(law_files: list[str]):
    """The documents (language auto: detected Chinese), a Chinese tokenizer trained on them, the documents
    after the shared tokenization pass, and a build context."""
    documents = build_documents(law_files)
    tokenizer = train_chinese_wordpiece((p for ps in documents["paragraphs"] for p in ps), vocab_size=4000)
    tokenized = add_sentence_tokens(documents, tokenizer)
    return documents, tokenizer, tokenized


def _context(tokenizer, tokenized, tmp_path: Path) -> BuildContext:
    return BuildContext(tokenizer=tokenizer, max_seq_len=128, seed=0, num_proc=1, cache_dir=tmp_path,
                        train_documents=tokenized)


def _row(documents, name: str) -> int:
    """Row of file ``name`` (documents are named by folder and file name, in sorted path order)."""
    path = Path(name)
    return documents["id"].index(f"{path.parent.name}/{path.name}")


def _text(tokenizer, ids: list[int]) -> str:
    """Token ids back to (normalized, lowercased) text: the tokens concatenated, WordPiece's ## removed."""
    tokens = (tokenizer.id_to_token(i) for i in ids)
    return "".join(t[2:] if t.startswith("##") else t for t in tokens if t not in ("[CLS]", "[SEP]", "[PAD]"))


# ---------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------


def test_detect_language_and_normalization():
    assert detect_language(["第一条 为了保护公民的合法权益，制定本法。"]) == "zh"
    assert detect_language(["使用Python和TensorFlow训练模型。"]) == "zh"  # ideographs outnumber words
    assert detect_language(["Beijing (北京) is the capital of the People's Republic of China."]) == "en"
    assert detect_language(["An English paragraph with no CJK at all."]) == "en"
    assert normalize_chinese("（一）第１条，ＡＢＣ；\u3000甲  乙") == "(一)第1条,ABC; 甲 乙"


def test_markdown_reader_titles_and_structure(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("---\ntitle: ignored\n---\n# 总标题\n\n# 第二编\n\n<!-- 注释\n多行 -->\n## 第一章 总则\n\n"
                   "第一条 正文第一段。\n续行。\n\n- 列表项一；\n\n```\ncode\n```\n", encoding="utf-8")
    assert parse_markdown(doc.read_text()) == ("总标题 第二编", ["第一条 正文第一段。续行。", "列表项一；"])
    assert parse_markdown("First line\nsecond line\n\nbody") == ("First line", ["second line", "body"])
    assert detect_format(doc) == "markdown"


def test_law_corpus_reads_one_document_per_file_and_drops_no_real_paragraph(law_files, law):
    documents = law[0]
    assert len(documents) == len(law_files)
    assert set(documents["language"]) == {"zh"}
    dropped = []
    for path in law_files:
        row = _row(documents, path)
        title, paragraphs = documents["title"][row], documents["paragraphs"][row]
        raw = Path(path).read_text(encoding="utf-8")
        assert title.startswith(normalize_chinese(raw.splitlines()[0].lstrip("# ")))  # the first "#" heading
        body = [line.strip() for line in raw.replace("<!-- INFO END -->", "").splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
        expected = [normalize_chinese(line) for line in body if CJK.search(line)]
        kept = set(paragraphs)
        assert kept <= set(expected)  # nothing invented, no heading or comment let through
        for line in expected:
            if line not in kept:
                dropped.append(line)
    # What the character filter drops are labels of a few characters ("附件"), never a sentence: every
    # real line of prose (4+ CJK characters or a sentence end) of these 16 laws is a paragraph.
    assert all(len(CJK.findall(line)) < 4 and not line.endswith(("。", ";", "；")) for line in dropped), dropped
    assert len(dropped) <= 2, dropped
    assert sum(len(p) for doc in documents["paragraphs"] for p in doc) > 50_000


def test_today_english_rules_would_drop_the_whole_law_corpus(law_files):
    # The English paragraph rule alone (data.language: en) keeps no line of Chinese prose: the bug this fixes.
    with pytest.raises(ValueError, match="no usable documents"):
        build_documents(law_files[:3], language="en")


# ---------------------------------------------------------------------------------------------------------
# Sentences
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "opening", "expected"), HAND_CHECKED, ids=[c[1][:6] for c in HAND_CHECKED])
def test_sentence_boundaries_match_the_hand_checked_list(law, name, opening, expected):
    documents = law[0]
    row = _row(documents, name)
    raw = next(line.strip() for line in (LAW / name).read_text(encoding="utf-8").splitlines()
               if line.strip().startswith(opening))
    paragraph = normalize_chinese(raw)
    index = documents["paragraphs"][row].index(paragraph)
    assert documents["sentences"][row][index] == expected  # what the pipeline stores
    # the same boundaries on the raw full-width text: the splitter does not depend on normalization
    assert [normalize_chinese(s) for s in chinese_sentences(raw)] == expected


def test_splitter_rules():
    assert split_sentences_zh("他说：“走吧！”她走了。然后呢？") == ["他说：“走吧！”", "她走了。", "然后呢？"]
    assert split_sentences_zh("为了……，制定本法。") == ["为了……，制定本法。"]
    assert split_sentences_zh("税率为3.5%。下一句") == ["税率为3.5%。", "下一句"]
    assert split_sentences_zh("《关于修改〈某法〉的决定》（一。二）完") == ["《关于修改〈某法〉的决定》（一。二）完"]
    assert split_sentences_zh("没有终止标点") == ["没有终止标点"]
    assert strip_enumeration("第一百零一条之一 内容") == "内容"
    assert strip_enumeration("(三)内容") == "内容" and strip_enumeration("二、内容") == "内容"
    assert strip_enumeration("3.5倍以上") == "3.5倍以上"


def test_no_article_number_opens_any_sentence(law):
    documents = law[0]
    sentences = [s for doc in documents["sentences"] for p in doc for s in p]
    assert len(sentences) > 1500
    assert not [s for s in sentences if ARTICLE_NUMBER.match(s)]
    # ... while the paragraphs still have them (they are stripped from the sentences only)
    assert sum(bool(ARTICLE_NUMBER.match(p)) for doc in documents["paragraphs"] for p in doc) > 300


# ---------------------------------------------------------------------------------------------------------
# Tokenizer and words
# ---------------------------------------------------------------------------------------------------------


def test_chinese_tokenizer_isolates_every_character_and_loads_back_as_bert_chinese(law, tmp_path):
    assert law[1].encode("30厘米×30厘米", add_special_tokens=False).tokens == ["30", "厘", "米", "×", "30", "厘", "米"]
    documents, tokenizer, _ = law
    text = "第一条 依照《中华人民共和国电子签名法》，使用ISO9001标准。"
    encoding = tokenizer.encode(text, add_special_tokens=False)
    for token, (start, end) in zip(encoding.tokens, encoding.offsets, strict=True):
        if CJK.match(text[start]):
            assert end - start == 1, token  # every CJK character its own token
    # full-width text gives the ids of its normalized form
    assert tokenizer.encode("（一）ＡＢＣ，").ids == tokenizer.encode("(一)ABC,").ids
    # as a Chinese vocab.txt, loaded by us and by transformers' own (Python) BERT tokenizer: the same ids
    transformers = pytest.importorskip("transformers")
    save_hf_tokenizer_files(tokenizer, tmp_path)
    ours = load_tokenizer(tmp_path / "vocab.txt")
    reference = transformers.BertTokenizer(str(tmp_path / "vocab.txt"), do_lower_case=True)
    for paragraph in documents["paragraphs"][0][:50]:
        assert ours.encode(paragraph).ids == reference.encode(paragraph), paragraph


def test_latin_runs_inside_chinese_text_get_wordpiece(law, wiki_corpus):
    # Trained on Chinese law text and English Wikipedia text: Latin runs split into WordPiece subwords, each
    # CJK character stays a token of its own.
    english = [p for ps in wiki_corpus[0]["paragraphs"][:100] for p in ps]
    tokenizer = train_chinese_wordpiece([*(p for ps in law[0]["paragraphs"] for p in ps), *english], 6000)
    tokens = tokenizer.encode("依照Constitutionalists的规定", add_special_tokens=False).tokens
    assert tokens[:2] == ["依", "照"] and tokens[-3:] == ["的", "规", "定"]
    latin = tokens[2:-3]
    assert len(latin) > 1 and all(t.startswith("##") for t in latin[1:]), tokens


def test_the_trainer_fed_each_ideograph_once_learns_the_same_vocabulary(law, wiki_corpus, monkeypatch):
    """train_chinese_wordpiece feeds the trainer each text with its ideograph runs as spaces, then every
    distinct ideograph once (5x less CPU on the law corpus); against the texts fed whole: the same alphabet and
    ids without merges, and with merges the same vocabulary up to the trainer's own tie-breaking, which
    differs run to run in either way (measured on the law train split: 2 of 4,247 tokens), as do the ids of
    ``##x`` tokens."""
    import data_builders.tokenizer as tokenizer_module

    english = [p for ps in wiki_corpus[0]["paragraphs"][:100] for p in ps]
    edges = ["中\u0301文", "﨑山の本ＡＢＣ１２３", "大学Ｃｏｎｓｔｉｔｕｔｉｏｎ們", "\u2f00与⼀", "а中б", "x\u3400y"]
    texts = [*(p for ps in law[0]["paragraphs"] for p in ps), *english, *edges]

    def vocab(size: int, fed_whole: bool, seeds: int) -> dict[str, int]:
        with monkeypatch.context() as m:
            if fed_whole:
                m.setattr(tokenizer_module, "_ideographs_once", lambda t: t)
            return train_chinese_wordpiece(iter(texts), size, seed_characters=seeds).get_vocab()

    for seeds in (0, 300):  # no merges: the alphabet, in code point order (the ##x ids follow the trainer's
        a, b = vocab(1, fed_whole=False, seeds=seeds), vocab(1, fed_whole=True, seeds=seeds)  # word order)
        assert set(a) == set(b)
        assert {t: i for t, i in a.items() if not t.startswith("##")} == {t: i for t, i in b.items()
                                                                          if not t.startswith("##")}
    ours, whole = vocab(6000, fed_whole=False, seeds=0), vocab(6000, fed_whole=True, seeds=0)
    single = lambda v: {t for t in v if len(t.removeprefix("##")) == 1}  # noqa: E731
    assert single(ours) == single(whole)
    assert len(set(ours) ^ set(whole)) <= len(whole) // 100, sorted(set(ours) ^ set(whole))


def test_shared_pass_words_are_exactly_the_segmenters_words(law):
    _, tokenizer, tokenized = law
    checked = merged = 0
    for paragraphs, words in zip(tokenized["sentences"], tokenized["sentence_words"], strict=True):
        for sentence, sentence_words in zip((s for p in paragraphs for s in p), words, strict=True):
            expected = [w for w, _ in segment(sentence) if w.strip()]
            merged += sentence_words != expected
            checked += 1
    assert checked > 1500 and merged == 0


def test_a_token_crossing_a_jieba_boundary_merges_the_words():
    from tokenizers import Tokenizer, models, pre_tokenizers

    # A WordPiece token "ab12" over jieba's "ab" + "12"-like split: the units still partition the tokens.
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "中华人民共和国": 1, "刑法": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    sentence = tokenize_chinese_sentences(tok, ["中华人民共和国刑法"])[0]
    assert sentence.ids == [0]  # one [UNK] token over jieba's two words
    assert (sentence.words, sentence.tags, sentence.word_spans) == (["中华人民共和国刑法"], ["x"], [(0, 1)])


def test_chinese_sentences_put_together_from_their_words_are_their_whole_encodings(law):
    """The shared pass encodes each distinct word once and puts sentences together from their words' ids
    (segments._sentences_by_words) where no token can cross a word boundary; that gives exactly the Sentence
    of encoding the sentence whole (ids, word spans, words, tags), and ids equal to tok.encode. Sentences with
    a boundary that a token may cross (a symbol or a letter run next to it, a combining mark) go whole."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    from data_builders.language import segment_many
    from data_builders.segments import _aligned_sentence, _sentences_by_words

    documents, tokenizer, _ = law
    tricky = ["第一条 ABC公司 2019年 ×30厘米", "（一）全角 Ａｂｃ", "™标志①款，㈱公司", "e\u0301中x\u0301国", "  ", "",
              "abcdef中国USB接口3.5毫米", "第二条\t\u3000本法。"]
    sentences = [s for doc in documents["sentences"] for p in doc for s in p] + tricky
    segmented = segment_many(sentences)
    whole = [_aligned_sentence(text, encoding, pairs) for text, encoding, pairs in zip(
        sentences, tokenizer.encode_batch(sentences, add_special_tokens=False), segmented, strict=True)]
    by_words = _sentences_by_words(tokenizer, sentences, segmented)
    assert [b for a, b in zip(whole, by_words, strict=True) if b is not None and a != b] == []
    assert sum(b is not None for b in by_words) > 0.98 * len(sentences)
    assert tokenize_chinese_sentences(tokenizer, sentences) == whole
    assert [s.ids for s in whole] == [e.ids for e in tokenizer.encode_batch(sentences, add_special_tokens=False)]
    # plain BERT pre-tokenization keeps "×30" one token across jieba's "×" / "30": that sentence goes whole
    bert = Tokenizer(models.WordPiece({"[UNK]": 0, "×30": 1, "厘": 2, "米": 3}, unk_token="[UNK]"))
    bert.normalizer = normalizers.BertNormalizer()
    bert.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    assert [w for w, _ in segment_many(["×30厘米"])[0]][:2] == ["×", "30"]
    assert _sentences_by_words(bert, ["×30厘米", "厘米"], segment_many(["×30厘米", "厘米"]))[0] is None
    sentence = tokenize_chinese_sentences(bert, ["×30厘米"])[0]
    assert sentence.ids == [1, 2, 3] and sentence.words[0] == "×30" and sentence.tags[0] == "x"


# ---------------------------------------------------------------------------------------------------------
# Task builders
# ---------------------------------------------------------------------------------------------------------


def _task(name: str, tokenizer, **section):
    from ernie_cmtl.assembly import resolve_task_configs
    from ernie_cmtl.registry import get_task_class

    config = resolve_task_configs({name: section})[name]
    return get_task_class(name)(config, SpecialIds.from_tokenizer(tokenizer))


def test_knowledge_masking_units_are_jieba_words_names_titles_and_phrases(law, tmp_path):
    from data_builders.knowledge_masking import ENTITY, PHRASE, WORD, Lexicon

    documents, tokenizer, tokenized = law
    task = _task("knowledge_masking", tokenizer, phrase_min_count=3)
    examples = task.build(tokenized, _context(tokenizer, tokenized, tmp_path))
    lexicon = Lexicon.load(tmp_path / "lexicon.json")
    assert lexicon.titles and lexicon.phrases
    jieba_words, names = set(), set()
    for doc in documents["sentences"]:
        for sentence in (s for p in doc for s in p):
            for word, tag in segment(sentence):
                jieba_words.add(word.lower())
                if is_entity_tag(tag) and len(word) >= 2:
                    names.add(word.lower())
    titles = {"".join(t) for t in lexicon.titles}
    phrases = {"".join(p) for p in lexicon.phrases}
    counts = collections.Counter()
    unknown = tokenizer.token_to_id("[UNK]")
    for ids, token_unit, levels in zip(examples["input_ids"], examples["token_unit"], examples["unit_level"],
                                       strict=True):
        units = collections.defaultdict(list)
        for token, unit in zip(ids, token_unit, strict=True):
            if unit >= 0:
                units[unit].append(token)
        assert sorted(units) == list(range(len(levels)))  # units partition the non-special tokens
        for unit, tokens in units.items():
            if unknown in tokens or (len(ids) == 128 and unit == len(levels) - 1):
                continue  # an over-long sentence is cut at 128 tokens, maybe inside its last unit
            text, level = _text(tokenizer, tokens), levels[unit]
            counts[level] += 1
            if level == WORD:
                assert text in jieba_words, text  # all characters of one jieba word, no more, no less
            elif level == ENTITY:
                assert text in names or text in titles, text
            else:
                assert level == PHRASE and text in phrases, text
    assert counts[WORD] > 10_000 and counts[ENTITY] > 200 and counts[PHRASE] > 200, counts


@pytest.mark.parametrize("use_entities", [True, False])
def test_knowledge_masking_of_chinese_batches_in_numpy_is_the_sentence_path(law, tmp_path, use_entities):
    """Chinese batches through the numpy path (knowledge_masking_table: titles and tagged names by
    batch_chinese_knowledge_spans) give exactly the examples of the per-sentence path (knowledge_masking_batch:
    find_chinese_entity_spans, then phrases with the entities' words blocked), on the law documents after the
    shared pass, with a lexicon whose titles and phrases both occur."""
    from data_builders.knowledge_masking import (
        build_lexicon,
        knowledge_masking_batch,
        knowledge_masking_table,
    )
    from data_builders.segments import token_columns

    documents, tokenizer, tokenized = law
    lexicon = build_lexicon(documents, tokenizer, phrases=True, titles=True, min_count=3, threshold=0.5,
                            passes=2, max_words=4)
    assert lexicon.titles and lexicon.phrases
    columns = token_columns(tokenized)
    options = {"tokenizer": tokenizer, "lexicon": lexicon, "use_entities": use_entities, "max_seq_len": 128,
               "max_phrase_words": 4, "min_tokens": 8}
    table = knowledge_masking_table(columns.with_format("arrow")[:], **options)
    expected = knowledge_masking_batch(columns[:], **options)
    assert table.to_pydict() == expected
    levels = collections.Counter(level for example in expected["unit_level"] for level in example)
    assert len(expected["input_ids"]) > 100 and levels[1] > 100 and (levels[2] > 100) == use_entities, levels


def test_capitalization_gives_chinese_documents_no_examples(law, tmp_path):
    _, tokenizer, tokenized = law
    task = _task("capitalization", tokenizer)
    with pytest.raises(ValueError, match="16 of them Chinese"):
        task.build(tokenized, _context(tokenizer, tokenized, tmp_path))


def test_capitalization_with_language_zh_is_a_config_error(tmp_path, capsys):
    from ernie_cmtl.cli import main

    code = main(["build-data", "--set", "data.language=zh", "--set", "tasks={capitalization: {}}",
                 "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert "tasks.capitalization" in err and "Chinese has no letter case" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_sentence_reordering_has_no_article_numbers_and_uniform_segment_counts(law, tmp_path):
    from data_builders.sentence_reordering import label_to_permutation

    _, tokenizer, tokenized = law
    examples = _task("sentence_reordering", tokenizer).build(tokenized, _context(tokenizer, tokenized, tmp_path))
    sep = tokenizer.token_to_id("[SEP]")
    checked = 0
    for ids, at_sentences in zip(examples["input_ids"], examples["sentence_cuts"], strict=True):
        segments, current = [], []
        for token in ids[1:]:
            if token == sep:
                segments.append(_text(tokenizer, current))
                current = []
            else:
                current.append(token)
        # Segments cut at sentence boundaries open sentences, and no sentence opens with 第…条 (its article
        # number is stripped). Segments cut inside a sentence may open on a reference ("...依照专利法|第二十四条
        # 第(三)项"), which is content, not the order of articles.
        if at_sentences and len(segments) > 1:
            checked += 1
            assert not [s for s in segments if ARTICLE_NUMBER.match(s)], segments
    assert checked > 100
    # Label balance, stated: n is uniform in 1..3 and the order uniform among n!, so label 0 (n = 1) has
    # 1/3 of the examples, labels 1-2 (n = 2) 1/6 each and labels 3-8 (n = 3) 1/18 each.
    n = len(examples)
    counts = collections.Counter(examples["label"])
    assert n > 1000
    for label in range(9):
        share = {1: 1 / 3, 2: 1 / 6, 3: 1 / 18}[len(label_to_permutation(label))]
        assert abs(counts[label] / n - share) < 4 * (share * (1 - share) / n) ** 0.5 + 0.01, (label, counts)


def test_sentence_distance_is_balanced_on_stripped_sentences(law, tmp_path):
    documents, tokenizer, tokenized = law
    examples = _task("sentence_distance", tokenizer).build(documents, _context(tokenizer, tokenized, tmp_path))
    counts = collections.Counter(examples["label"])
    assert counts[0] == counts[1] == counts[2] > 20  # stated: exactly balanced (6 pairs per document)
    sep = tokenizer.token_to_id("[SEP]")
    for ids in examples["input_ids"]:
        first = ids.index(sep)
        for side in (ids[1:first], ids[first + 1:-1]):
            assert not ARTICLE_NUMBER.match(_text(tokenizer, side))


def test_discourse_pairs_lose_their_connective(law, tmp_path):
    documents, tokenizer, tokenized = law
    sentences = ["第一条 甲方应当按期交付货物。", "但是,因不可抗力不能履行的除外。",
                 "如果当事人协商一致,可以变更合同。", "用人单位应当支付工资,并且不得克扣劳动者的工资。"]
    pairs = list(find_pairs_zh(sentences))
    assert [(r, m) for _, _, r, m in pairs] == [("contrast", "但是"), ("condition", "如果"), ("addition", "并且")]
    assert pairs[0][:2] == ("第一条 甲方应当按期交付货物。", "因不可抗力不能履行的除外。")
    assert pairs[1][:2] == ("当事人协商一致。", "可以变更合同。")
    task = _task("discourse_relation", tokenizer, min_class_examples=1,
                 classes=["contrast", "result", "reason", "addition", "condition", "temporal"])
    assert task.num_labels == len(ALL_RELATIONS) == 7
    examples = task.build(tokenized, _context(tokenizer, tokenized, tmp_path))
    assert len(examples) >= 10
    sep = tokenizer.token_to_id("[SEP]")
    for ids in examples["input_ids"]:
        first = ids.index(sep)
        for side in (_text(tokenizer, ids[1:first]), _text(tokenizer, ids[first + 1:-1])):
            assert not [cue for cue in CUE_WORDS if cue in side], side  # no connective left anywhere
    # Label balance, stated: contrast (但是) is most of the raw pairs of law text; max_class_share caps it
    # at half of the examples.
    counts = collections.Counter(examples["label"])
    assert counts[ALL_RELATIONS.index("contrast")] <= 0.5 * len(examples) + 1
    assert len(counts) >= 2


def test_ir_relevance_uses_jieba_words_and_is_balanced(law, tmp_path):
    from data_builders.ir_relevance import chinese_terms

    documents, tokenizer, tokenized = law
    examples = _task("ir_relevance", tokenizer).build(tokenized, _context(tokenizer, tokenized, tmp_path))
    counts = collections.Counter(examples["label"])
    assert counts[0] == counts[1] == counts[2] >= 10  # stated: one example of each label per document
    assert chinese_terms("中华人民共和国电子签名法的规定") == ["中华人民共和国", "电子签名", "法", "规定"]
    titles = dict(zip(documents["id"], documents["title"], strict=True))
    weak = sharing = 0
    for row in examples:
        assert (row["passage_doc_id"] == row["doc_id"]) == (row["label"] == 0)
        if row["label"] == 1:  # weak: a BM25 hit, so it shares a jieba word with the query (the title)
            sep = row["input_ids"].index(tokenizer.token_to_id("[SEP]"))
            passage = _text(tokenizer, row["input_ids"][sep + 1:-1])
            weak += 1
            sharing += bool(set(chinese_terms(titles[row["doc_id"]])) & set(chinese_terms(passage)))
    assert sharing >= 0.9 * weak  # (re-segmenting the truncated, decoded passage may miss a few)


def test_chinese_passages_are_encoded_word_by_word_as_whole(law):
    """The Chinese tokenizer (NFKC + BERT normalizer, symbols isolated) qualifies for IR relevance's
    word-by-word encoding, and it gives each passage's own ids."""
    from data_builders.ir_relevance import chinese_paragraph_words, collect_passages
    from data_builders.tokenizer import encode_space_joined, splits_at_spaces

    documents, tokenizer, tokenized = law
    passages = collect_passages(documents["paragraphs"][:], 64, 12, chinese_paragraph_words(tokenized)).texts
    assert splits_at_spaces(tokenizer) and len(passages) > 100
    texts = [*passages, "第一条 ABC 公司 2019年 ×30厘米", "（一）全角 Ａｂｃ"]
    assert encode_space_joined(texts, tokenizer, 125) == {
        t: tokenizer.encode(t, add_special_tokens=False).ids[:125] for t in texts}


def test_token_document_relation_labels_jieba_words(law, tmp_path):
    documents, tokenizer, tokenized = law
    examples = _task("token_document_relation", tokenizer).build(tokenized, _context(tokenizer, tokenized, tmp_path))
    counts = collections.Counter(label for labels in examples["labels"] for label in labels if label >= 0)
    # Label balance, stated: law text repeats its terms, so most labelled words recur in another segment;
    # both classes are well represented.
    assert counts[0] > 1000 and counts[1] > 1000, counts


def test_mixed_corpus_is_handled_per_document(law_files, wiki_shards, tmp_path):
    documents = build_documents([wiki_shards[0], *law_files[:2]])
    languages = collections.Counter(documents["language"])
    assert languages["zh"] == 2 and languages["en"] > 50
    english = build_documents([wiki_shards[0]])
    mixed_en = documents.filter(lambda row: row["language"] == "en")
    assert mixed_en["paragraphs"] == english["paragraphs"] and mixed_en["sentences"] == english["sentences"]


def test_ernie2_zh_debug_config_has_the_five_chinese_tasks():
    from ernie_cmtl.assembly import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "ernie2_zh_debug.yaml")
    assert config.data.language == "zh" and config.data.format == "markdown"
    assert list(config.tasks) == ["knowledge_masking", "sentence_reordering", "sentence_distance",
                                  "discourse_relation", "ir_relevance"]
    assert unicodedata.normalize("NFKC", "，") == ","  # the reader's normalization, relied on above


def _zh_debug_config(tmp_path: Path, run_dir: Path):
    """configs/ernie2_zh_debug.yaml shrunk for a test: a 64-wide encoder, 40 steps per task, the 65 laws of the
    valid split."""
    from ernie_cmtl import api

    repo = Path(__file__).resolve().parents[1]
    return api.configure(repo / "configs" / "ernie2_zh_debug.yaml", [
        "model.hidden_size=64", "model.num_heads=2", "model.intermediate_size=256", "train.batch_size=16",
        "tokenizer.vocab_size=4000", "data.valid_fraction=0.1", "schedule.steps_per_task=40",
        "train.eval_every=25", "train.eval_batches=2", "train.lr=2e-3", "train.warmup_steps=10",
        "tasks.discourse_relation.min_class_examples=5", f"data.cache_dir={tmp_path / 'cache'}"],
        [str(LAW / "valid")], run_dir)


@pytest.fixture(scope="module")
def zh_pretrained(law_files, tmp_path_factory: pytest.TempPathFactory):
    """The shrunk zh debug run, pretrained once for the tests below: (its TrainResult, the tmp folder)."""
    from ernie_cmtl import api

    tmp_path = tmp_path_factory.mktemp("zh_pretrain")
    return api.pretrain(_zh_debug_config(tmp_path, tmp_path / "run"), progress=False), tmp_path


@pytest.mark.slow
def test_pretrain_ernie2_zh_debug_held_out_knowledge_masking_loss_falls(zh_pretrained):
    result, _ = zh_pretrained
    assert result.step == 200
    losses = [e["knowledge_masking"]["loss"] for e in result.eval_history]
    # From the first evaluation (step 25, already far below chance: ln 4000 = 8.29) the held-out loss keeps
    # falling; 200 steps of a 64-wide encoder take it to about the characters' unigram level (~6.4), not below.
    assert len(losses) >= 4 and losses[-1] < losses[0] - 0.1 and losses[-1] < math.log(4000) - 1.5, losses
    tasks = {task for _, task, _ in result.losses}
    assert tasks == {"knowledge_masking", "sentence_reordering", "sentence_distance", "discourse_relation",
                     "ir_relevance"}


CHNSENTICORP = SHARED_DATA / "chnsenticorp"


@pytest.mark.slow
def test_the_pretrained_zh_debug_encoder_fine_tunes_above_the_majority_class_on_chnsenticorp(zh_pretrained):
    """The law-pretrained encoder (its law-trained tokenizer included) fine-tuned on ChnSentiCorp through
    ``ernie-cmtl finetune``; and ``pretrain(stop_at=0)``, the untrained control of bench/chinese_downstream.py,
    writes the initialization as a step-0 checkpoint of the same run layout."""
    from downstream.finetune import load_finetune_config
    from ernie_cmtl import api
    from ernie_cmtl.run_checkpoint import load_run_checkpoint

    if not (CHNSENTICORP / "dev.tsv").is_file():
        pytest.skip(f"ChnSentiCorp not found: {CHNSENTICORP / 'dev.tsv'}")
    result, tmp_path = zh_pretrained
    config = load_finetune_config(None, [f"chnsenticorp_dir={CHNSENTICORP}", f"run_dir={tmp_path / 'ft'}",
                                         "max_seq_len=48", "max_train_examples=2000", "max_eval_examples=400",
                                         "max_steps=500", "lr=1e-3"])
    scores = api.finetune(result.run_dir, ["chnsenticorp"], config, progress=False)
    baseline, dev = scores["baseline"]["chnsenticorp"]["accuracy"], scores["dev"]["chnsenticorp"]["accuracy"]
    assert baseline == pytest.approx(191 / 400)  # majority class (negative) on the 400 dev reviews picked
    # Measured over fine-tuning seeds 0-9 on one pretrained encoder: 0.7125-0.79 (seed 0: 0.7125). At lr 2e-3
    # and 300 steps (this test before session 11) seed 3 collapsed to one class (0.4775; seeds 0-2: 0.755-0.79),
    # and so did a full-suite run at seed 0; 300 steps at 1e-3 had not left the majority class yet (0.5225).
    # The law-trained vocabulary lacks some everyday characters of the reviews (什, 么, 孩, 她, ！ are [UNK]:
    # 8.5% of the dev tokens), which the pretraining cannot teach.
    assert dev > baseline + 0.15, scores["dev"]

    initial = api.pretrain(_zh_debug_config(tmp_path, tmp_path / "init"), stop_at=0, progress=False)
    assert initial.step == 0 and initial.checkpoint.name == "step_00000000"
    start, trained = load_run_checkpoint(initial.run_dir), load_run_checkpoint(result.run_dir)
    assert start.tokenizer.get_vocab() == trained.tokenizer.get_vocab()  # same data cache, same tokenizer
    assert not torch.equal(start.encoder_state["embeddings.word.weight"],
                           trained.encoder_state["embeddings.word.weight"])


# ---------------------------------------------------------------------------------------------------------
# Segmenters (rjieba, jieba) and the seeded vocabulary
# ---------------------------------------------------------------------------------------------------------


def test_rjieba_cuts_law_text_exactly_as_jieba_and_tags_it_as_jieba_posseg_nearly(law):
    """rjieba's words are jieba's own cut (``jieba.lcut``, HMM on) on every sentence. ``jieba.posseg`` (the
    ``jieba`` segmenter) runs a joint word-and-tag HMM over runs of single characters and so cuts some of them
    differently ("另有" -> "另" "有"): the agreement with it is stated, not exact."""
    import jieba

    from data_builders.language import segment_many

    sentences = [s for doc in law[0]["sentences"] for p in doc for s in p]
    fast, reference = segment_many(sentences, "rjieba"), segment_many(sentences, "jieba")
    words = same_span = same_tag = 0
    for sentence, ours, theirs in zip(sentences, fast, reference, strict=True):
        assert [w for w, _ in ours] == jieba.lcut(sentence)  # concatenating back to the sentence
        a, b = tagged_spans(theirs), tagged_spans(ours)
        shared = a.keys() & b.keys()
        words, same_span, same_tag = words + len(a), same_span + len(shared), same_tag + sum(a[k] == b[k]
                                                                                          for k in shared)
    assert len(sentences) > 1500
    assert same_span / words >= 0.98, same_span / words  # 0.988 here: identical word boundaries
    assert same_tag / same_span >= 0.95, same_tag / same_span  # identical tags where the words are identical


def test_an_unknown_segmenter_is_a_one_line_config_error():
    from ernie_cmtl.config import ConfigError, read_config

    with pytest.raises(ConfigError, match=r"^data.zh_segmenter: expected one of 'rjieba', 'jieba', got 'pkuseg'$"):
        read_config(None, ["data.zh_segmenter=pkuseg"])


def test_the_segmenter_is_part_of_the_cache_fingerprint(law_files, law, tmp_path):
    """The same corpus, tokenizer and cache built with jieba, then rjieba, then jieba again: rjieba gets its own
    shared pass and examples (never jieba's), and jieba's second build reuses its first."""
    from data_builders.language import DEFAULT_SEGMENTER, use_segmenter
    from data_builders.tokenizer import save_tokenizer
    from ernie_cmtl import api

    tokenizer_file = save_tokenizer(law[1], tmp_path / "tokenizer.json")
    cache = tmp_path / "cache"

    def build(segmenter: str, run: str) -> None:
        api.build_data(api.configure(None, [
            "tasks={knowledge_masking: {}}", "schedule.stages=[knowledge_masking]", "data.language=zh",
            "data.format=markdown", f"data.zh_segmenter={segmenter}", f"tokenizer.path={tokenizer_file}",
            f"data.cache_dir={cache}"], law_files[:4], tmp_path / run), progress=False)

    try:
        build("jieba", "a")
        build("rjieba", "b")
        passes = sorted(p.name for p in (cache / "sentence_tokens").iterdir())
        examples = sorted(p.name for p in (cache / "examples" / "knowledge_masking").iterdir())
        assert len(passes) == 2 and len(examples) == 2
        build("jieba", "c")
    finally:
        use_segmenter(DEFAULT_SEGMENTER)  # the build made its segmenter the process's default
    assert sorted(p.name for p in (cache / "sentence_tokens").iterdir()) == passes
    assert sorted(p.name for p in (cache / "examples" / "knowledge_masking").iterdir()) == examples


def test_the_seeded_vocabulary_reads_everyday_chinese(law):
    documents, tokenizer, _ = law  # trained on 16 laws with the default seed
    unseeded = train_chinese_wordpiece((p for ps in documents["paragraphs"] for p in ps), vocab_size=4000,
                                       seed_characters=0)
    everyday = "什么孩她！？ vista USB"  # Latin words spell out in letters and ##letters
    unknown = tokenizer.token_to_id("[UNK]")
    assert unknown not in tokenizer.encode(everyday, add_special_tokens=False).ids
    assert unseeded.encode(everyday, add_special_tokens=False).ids.count(unseeded.token_to_id("[UNK]")) >= 5
    assert all(tokenizer.token_to_id(c) is not None for c in "什么孩她!?")  # ！？ are ! ? after NFKC


def test_builders_read_the_shared_segmentation_and_segment_only_titles(law, tmp_path):
    """After the shared pass, the five Chinese builders (corpus statistics included) segment no sentence again:
    only titles (knowledge masking's gazetteer, IR relevance's queries), a small share of a pass."""
    from data_builders.language import segmented_characters

    documents, tokenizer, tokenized = law
    sections = {"knowledge_masking": {"phrase_min_count": 3}, "sentence_reordering": {},
                "sentence_distance": {}, "discourse_relation": {"min_class_examples": 1},
                "ir_relevance": {}}
    before = segmented_characters()
    for name, section in sections.items():
        task = _task(name, tokenizer, **section)
        assert len(task.build(tokenized, _context(tokenizer, tokenized, tmp_path / name))) > 0, name
    segmented = segmented_characters() - before
    corpus = sum(len(s) for doc in documents["sentences"] for p in doc for s in p)
    titles = sum(len(t) for t in documents["title"])
    assert segmented <= 2 * titles and segmented < 0.01 * corpus, (segmented, titles, corpus)
