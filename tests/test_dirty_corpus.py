"""Dirty corpora (issue 14): bad parts skipped and counted exactly, long lines cut, tiny corpora, tasks without
examples, and the CLI's exit codes. Every corpus is made here from real prose: the standard library's
docstrings, present on every machine."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from data_builders import corpus
from data_builders.corpus import (
    CorpusError,
    CorpusReport,
    build_documents,
    cut_paragraph,
    decoding,
    iter_stdlib_documents,
    load_documents_with_report,
)
from ernie_cmtl.cli import main
from ernie_cmtl.config import DataConfig

LATIN1 = "Un paragraphe en Latin-1 : café crème à la française, très bien écrit.".encode("latin-1")
# Valid UTF-8 but binary: an image header's NUL-ridden bytes below 0x80 (bytes above would be invalid UTF-8).
BINARY = b"\x00\x01\x02PNG\x00\x00\x1a IHDR \x00\x00\x03\x00\x08\x06\x00"


@pytest.fixture(scope="module")
def prose() -> list[list[str]]:
    """Documents of real English prose (each >= 5 paragraphs, >= 1500 characters), as lists of paragraphs."""
    docs = [d["paragraphs"] for d in iter_stdlib_documents(6)
            if len(d["paragraphs"]) >= 5 and sum(map(len, d["paragraphs"])) >= 1500]
    assert len(docs) >= 40
    return docs


def text_file(path: Path, docs: list[list[str]], extra: dict[tuple[int, int], bytes] | None = None) -> dict:
    """Write ``docs`` as plain text (a paragraph a line, a blank line between documents); ``extra[(d, p)]`` is a
    raw line written after paragraph ``p`` of document ``d``. Returns {(d, p): line number of that extra}."""
    extra = extra or {}
    where, lineno = {}, 0
    with path.open("wb") as fh:
        for d, paragraphs in enumerate(docs):
            for p, paragraph in enumerate(paragraphs):
                fh.write(paragraph.encode() + b"\n")
                lineno += 1
                if (d, p) in extra:
                    fh.write(extra[(d, p)] + b"\n")
                    lineno += 1
                    where[(d, p)] = lineno
            fh.write(b"\n")
            lineno += 1
    return where


def wiki_doc(doc_id: int, title: str, paragraphs: list[str], close: bool = True) -> str:
    body = "\n".join(paragraphs)
    return f'<doc id="{doc_id}" url="?curid={doc_id}" title="{title}">\n{title}\n\n{body}\n' + \
        ("</doc>\n" if close else "")


def build(paths: list[Path], **options) -> tuple[list[dict], CorpusReport]:
    report = CorpusReport()
    ds = build_documents([str(p) for p in paths], report=report, **options)
    return ds.to_list(), report


# ---------------------------------------------------------------------------------------------------------
# Each kind of bad part: skipped and counted exactly, or one line naming file:line
# ---------------------------------------------------------------------------------------------------------


def test_a_line_that_is_not_utf8_drops_only_that_line(tmp_path, prose):
    path = tmp_path / "crawl.txt"
    where = text_file(path, prose[:4], {(1, 2): LATIN1})
    # Named UTF-8: under data.encoding auto an ASCII file with Latin-1 lines is read as cp1252 (test_encodings).
    docs, report = build([path], encoding="utf-8")
    assert [d["paragraphs"] for d in docs] == prose[:4]  # every good paragraph kept, the Latin-1 line gone
    entry = report.totals()["skipped"]["invalid_utf8"]
    assert (entry["count"], entry["bytes"]) == (1, len(LATIN1) + 1)
    assert entry["first"][0].startswith(f"{path.resolve()}:{where[(1, 2)]}: not UTF-8 text")
    assert report.totals()["bytes_skipped"] == len(LATIN1) + 1

    with pytest.raises(CorpusError) as info:
        build([path], on_bad_input="error", encoding="utf-8")
    message = str(info.value)
    assert message.startswith(f"{path.resolve()}:{where[(1, 2)]}: not UTF-8 text") and "\n" not in message


def test_a_malformed_jsonl_record_drops_only_that_record(tmp_path, prose):
    path = tmp_path / "dump.jsonl"
    lines = [json.dumps({"title": f"t{i}", "text": "\n".join(doc)}) for i, doc in enumerate(prose[:6])]
    lines.insert(2, '{"title": "cut off", "text": "the record ends')
    lines.insert(5, json.dumps(["not", "an", "object"]))
    lines.insert(7, json.dumps({"title": "no text"}))
    path.write_text("\n".join(lines) + "\n")
    docs, report = build([path])
    assert [d["title"] for d in docs] == [f"t{i}" for i in range(6)]
    entry = report.totals()["skipped"]["malformed_jsonl"]
    assert entry["count"] == 3
    assert entry["bytes"] == sum(len(lines[i].encode()) + 1 for i in (2, 5, 7))
    assert [loc.split(": ")[0] for loc in entry["first"]] == [f"{path.resolve()}:{n}" for n in (3, 6, 8)]
    assert "not valid JSON" in entry["first"][0] and "expected a JSON object" in entry["first"][1]

    with pytest.raises(CorpusError, match=re.escape(f"{path.resolve()}:3: not valid JSON")):
        build([path], on_bad_input="error")


def test_an_unterminated_doc_keeps_its_text(tmp_path, prose):
    path = tmp_path / "wiki_07"
    # Doc 2 loses its </doc> before doc 3 starts; doc 4 is cut off by the end of the file (an interrupted run).
    path.write_text(wiki_doc(1, "One", prose[0]) + wiki_doc(2, "Two", prose[1], close=False)
                    + wiki_doc(3, "Three", prose[2]) + wiki_doc(4, "Four", prose[3], close=False))
    docs, report = build([path])
    assert [d["id"] for d in docs] == ["1", "2", "3", "4"]
    assert [d["paragraphs"] for d in docs] == prose[:4]
    entry = report.totals()["skipped"]["unterminated_doc"]
    assert (entry["count"], entry["bytes"]) == (2, 0)  # kept: no byte skipped
    header_lines = [i + 1 for i, line in enumerate(path.read_text().splitlines()) if line.startswith("<doc")]
    assert [loc.split(": ")[0] for loc in entry["first"]] == [f"{path.resolve()}:{header_lines[i]}" for i in (1, 3)]

    with pytest.raises(CorpusError, match=re.escape(f"{path.resolve()}:{header_lines[1]}: malformed WikiExtractor")):
        build([path], on_bad_input="error")


def test_an_unreadable_doc_header_drops_its_block(tmp_path, prose):
    path = tmp_path / "wiki_08"
    broken = '<doc id="x" url="?curid=x">\nNo title attribute\n\n' + "\n".join(prose[1]) + "\n</doc>\n"
    path.write_text(wiki_doc(1, "One", prose[0]) + broken + wiki_doc(3, "Three", prose[2]))
    docs, report = build([path])
    assert [d["id"] for d in docs] == ["1", "3"]
    entry = report.totals()["skipped"]["malformed_doc_header"]
    assert (entry["count"], entry["bytes"]) == (1, len(broken.encode()))


def test_a_binary_stretch_is_dropped(tmp_path, prose):
    path = tmp_path / "mixed.txt"
    where = text_file(path, prose[:3], {(0, 1): BINARY, (2, 0): b"\x00" * 300})
    docs, report = build([path])
    assert [d["paragraphs"] for d in docs] == prose[:3]
    entry = report.totals()["skipped"]["binary"]
    assert (entry["count"], entry["bytes"]) == (2, len(BINARY) + 1 + 301)
    assert [loc.split(": ")[0] for loc in entry["first"]] == [f"{path.resolve()}:{where[k]}" for k in ((0, 1), (2, 0))]


def test_the_account_is_per_file_and_survives_the_cache(tmp_path, prose):
    root = tmp_path / "corpus"
    root.mkdir()
    text_file(root / "a.txt", prose[:3], {(0, 0): LATIN1})
    (root / "b.jsonl").write_text("\n".join([json.dumps({"text": "\n".join(prose[3])}), "{oops"]) + "\n")
    (root / "wiki_00").write_text(wiki_doc(9, "Nine", prose[4], close=False))
    cache = tmp_path / "cache"
    first_ds, first = load_documents_with_report([str(root)], cache_dir=cache, encoding="utf-8")
    again_ds, again = load_documents_with_report([str(root)], cache_dir=cache, encoding="utf-8")  # a cache hit
    assert again.to_dict() == first.to_dict() and len(again_ds) == len(first_ds) == 5
    files = {Path(f["path"]).name: f for f in first.to_dict()["files"]}
    assert {name: (f["format"], f["documents"], f["kept"]) for name, f in files.items()} == {
        "a.txt": ("text", 3, 3), "b.jsonl": ("jsonl", 1, 1), "wiki_00": ("wikiextractor", 1, 1)}
    assert {name: {r: e["count"] for r, e in f["skipped"].items()} for name, f in files.items()} == {
        "a.txt": {"invalid_utf8": 1}, "b.jsonl": {"malformed_jsonl": 1}, "wiki_00": {"unterminated_doc": 1}}
    assert files["a.txt"]["bytes"] == (root / "a.txt").stat().st_size
    assert {name: (f["encoding"], f["encoding_source"]) for name, f in files.items()} == {
        name: ("utf-8", "given") for name in files}
    summary = first.summary()
    assert summary[0].startswith("corpus: 3 input(s)") and "5 kept" in summary[0]
    assert any(line.strip().startswith("invalid_utf8: 1") for line in summary)


def test_nothing_usable_names_what_was_skipped(tmp_path):
    path = tmp_path / "all_bad.txt"
    path.write_bytes(LATIN1 + b"\n" + BINARY + b"\n")
    with pytest.raises(CorpusError) as info:
        build([path], encoding="utf-8")
    message = str(info.value)
    assert "no usable documents" in message and f"{path.resolve()}:1: not UTF-8" in message
    assert "set data.encoding to its codec" in message
    assert "binary: 1" in message and "\n" not in message


# ---------------------------------------------------------------------------------------------------------
# Bounded work: long lines and documents are cut
# ---------------------------------------------------------------------------------------------------------


def test_cut_paragraph_prefers_sentence_ends_then_spaces_then_the_bound():
    sentences = " ".join(f"Sentence number {i} says something plain." for i in range(400))
    pieces = cut_paragraph(sentences, 1000)
    assert "".join(pieces) == sentences
    assert all(len(p) <= 1000 for p in pieces) and all(p.rstrip().endswith(".") for p in pieces)
    words = " ".join(f"word{i}" for i in range(2000))
    pieces = cut_paragraph(words, 1000)
    assert "".join(pieces) == words and all(p.endswith(" ") for p in pieces[:-1])
    assert [len(p) for p in cut_paragraph("x" * 2500, 1000)] == [1000, 1000, 500]
    assert cut_paragraph("short", 1000) == ["short"]
    # CJK text has no spaces; its full stops are the boundaries.
    assert all(p.endswith("。") for p in cut_paragraph("这是一个句子。" * 400, 1000)[:-1])


def test_a_long_line_is_cut_into_paragraphs_and_documents(tmp_path, prose, monkeypatch):
    # Small read pieces so that the line crosses many of them, multi-byte characters split included.
    monkeypatch.setattr(decoding, "PIECE_BYTES", 4099)
    text = " ".join(p for doc in prose for p in doc).replace("e", "é")
    path = tmp_path / "minified.txt"
    path.write_text(text + "\n")
    docs, report = build([path], max_paragraph_chars=2000, max_document_chars=50_000)
    paragraphs = [p for d in docs for p in d["paragraphs"]]
    assert " ".join(paragraphs) == " ".join(text.split())  # nothing lost, nothing doubled
    assert max(map(len, paragraphs)) <= 2000
    assert [d["id"] for d in docs] == ["minified.txt:0"] + [f"minified.txt:0#{i}" for i in range(2, len(docs) + 1)]
    assert all(sum(map(len, d["paragraphs"])) <= 50_000 + 2000 for d in docs)
    totals = report.totals()
    assert totals["skipped"] == {}  # the split multi-byte characters decoded fine
    assert totals["cut"]["paragraphs"]["count"] == 1 and totals["cut"]["paragraphs"]["pieces"] >= len(paragraphs)
    assert totals["cut"]["documents"]["pieces"] == len(docs)


def test_clean_input_is_not_cut(tmp_path, prose):
    path = tmp_path / "clean.txt"
    text_file(path, prose[:10])
    docs, report = build([path])
    assert [d["paragraphs"] for d in docs] == prose[:10] and report.totals()["cut"] == {}


def test_the_default_document_bound_leaves_the_real_corpora_whole(wiki):
    """``data.max_document_chars`` (100,000) bounds the builders' batches; no article of the Wikipedia sample
    and no law of the Chinese corpus (the longest, the Criminal Law, has about 73,000 characters) reaches it,
    so their documents and dataset hashes stay what they were with the old 1,000,000."""
    assert corpus.MAX_DOCUMENT_CHARS == 100_000 == DataConfig().max_document_chars
    law = wiki.parent / "chinese-laws-lawrefbook" / "train" / "刑法"
    paths = [wiki / "train", *([law] if law.is_dir() else [])]
    for path in paths:
        docs, report = build([path])
        assert docs and "documents" not in report.totals()["cut"], path
        assert max(sum(map(len, d["paragraphs"])) for d in docs) < 100_000


# ---------------------------------------------------------------------------------------------------------
# The pipeline and the CLI: tiny corpora, tasks without examples, exit codes
# ---------------------------------------------------------------------------------------------------------

ALL_TASKS = str(Path(__file__).resolve().parents[1] / "configs" / "default.yaml")
SMALL = ["--set", "tokenizer.vocab_size=1000", "--quiet"]


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def error_line(err: str) -> str:
    """The one error line on stderr (warnings logged before it may precede it)."""
    errors = [line for line in err.splitlines() if line.startswith("ernie-cmtl:")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    return errors[0]


def test_build_data_on_a_dirty_corpus_exits_0_with_the_account(tmp_path, prose, capsys, cache_dir):
    root = tmp_path / "corpus"
    root.mkdir()
    where = text_file(root / "a.txt", prose[:30], {(4, 1): LATIN1, (7, 0): BINARY})
    (root / "b.jsonl").write_text("\n".join([json.dumps({"text": "\n".join(doc)}) for doc in prose[30:36]]
                                            + ['{"text": 3}']) + "\n")
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "build-data", "--corpus", str(root), "--run-dir", str(run_dir),
                             "--set", f"data.cache_dir={cache_dir}", "--set", "data.encoding=utf-8", *SMALL)
    assert code == 0, err
    assert "skipped" in out and "invalid_utf8: 1" in out and "binary: 1" in out and "malformed_jsonl: 1" in out
    assert re.search(r"knowledge_masking: \d+ train, \d+ valid examples", out)
    account = json.loads((run_dir / "data_report.json").read_text())
    skipped = account["corpus"]["skipped"]
    assert {reason: entry["count"] for reason, entry in skipped.items()} == \
        {"invalid_utf8": 1, "binary": 1, "malformed_jsonl": 1}
    assert skipped["invalid_utf8"]["first"][0].startswith(f"{(root / 'a.txt').resolve()}:{where[(4, 1)]}:")
    assert account["corpus"]["documents"]["kept"] == 36
    assert account["tasks"]["knowledge_masking"]["train"] > 0 and account["empty_tasks"] == {}
    assert "bad input skipped" in err  # the one warning --quiet still shows

    code, _, err = run_cli(capsys, "build-data", "--corpus", str(root), "--run-dir", str(tmp_path / "strict"),
                           "--set", f"data.cache_dir={cache_dir}", "--set", "data.on_bad_input=error",
                           "--set", "data.encoding=utf-8", *SMALL)
    assert code == 2
    assert error_line(err).startswith(f"ernie-cmtl: error: {(root / 'a.txt').resolve()}:{where[(4, 1)]}: not UTF-8")


def test_one_document_builds_with_its_last_paragraphs_held_out(tmp_path, prose, capsys, cache_dir):
    path = tmp_path / "one.txt"
    text_file(path, [[p for doc in prose[:6] for p in doc]])
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "build-data", "--corpus", str(path), "--run-dir", str(run_dir),
                             "--set", f"data.cache_dir={cache_dir}", *SMALL)
    assert code == 0, err
    assert "split: 1 train, 1 valid documents (one document: its last paragraphs held out)" in out
    assert json.loads((run_dir / "data_report.json").read_text())["split"]["one_document_split"]


def test_one_paragraph_is_too_little_and_says_what_is_needed(tmp_path, prose, capsys, cache_dir):
    path = tmp_path / "one_paragraph.txt"
    path.write_text(" ".join(prose[0]) + "\n")
    code, _, err = run_cli(capsys, "build-data", "--corpus", str(path), "--run-dir", str(tmp_path / "run"),
                           "--set", f"data.cache_dir={cache_dir}", *SMALL)
    assert code == 2
    assert "1 usable document of 1 paragraph" in error_line(err) and "at least 2 documents" in err


def test_tasks_without_examples_are_reported_and_pretrain_needs_consent(tmp_path, prose, capsys, cache_dir):
    # Documents of one paragraph without any sentence punctuation: one "sentence" each, so no sentence pairs.
    flat = [[re.sub(r"[.!?;:]", "", " ".join(doc))[:6000]] for doc in prose[:40]]  # below the paragraph cut
    path = tmp_path / "unpunctuated.txt"
    text_file(path, flat)
    common = ["--config", ALL_TASKS, "--corpus", str(path), "--set", f"data.cache_dir={cache_dir}", *SMALL]
    code, out, err = run_cli(capsys, "build-data", "--run-dir", str(tmp_path / "data"), *common)
    assert code == 0, err
    account = json.loads((tmp_path / "data" / "data_report.json").read_text())
    empty = account["empty_tasks"]
    assert "sentences" in empty["sentence_distance"]
    assert "knowledge_masking" not in empty and account["tasks"]["knowledge_masking"]["train"] > 0
    assert set(account["tasks"]) == {"knowledge_masking", "capitalization", "token_document_relation",
                                     "sentence_reordering", "sentence_distance", "discourse_relation",
                                     "ir_relevance"}  # every task was tried
    for name, reason in empty.items():
        assert f"{name}: no examples from this corpus: {reason}" in out

    code, _, err = run_cli(capsys, "pretrain", "--run-dir", str(tmp_path / "refused"), *common)
    assert code == 2
    message = error_line(err)
    assert all(name in message for name in empty) and "data.skip_empty_tasks=true" in message
    assert not (tmp_path / "refused" / "checkpoints").exists()

    code, out, err = run_cli(capsys, "pretrain", "--run-dir", str(tmp_path / "allowed"), *common,
                             "--set", "data.skip_empty_tasks=true", "--max-steps", "2",
                             "--set", "train.batch_size=4", "--set", "train.eval_batches=1")
    assert code == 0, err
    assert "done: step 2" in out
    assert all(name in err for name in empty)  # each dropped task is named in a warning


def test_exit_codes(tmp_path, capsys, cache_dir, monkeypatch):
    code, _, err = run_cli(capsys, "pretrain", "--set", "train.lrr=1")
    assert code == 2 and "train.lrr" in error_line(err)
    code, _, err = run_cli(capsys, "build-data", "--corpus", str(tmp_path / "missing.txt"), "--quiet")
    assert code == 2 and "missing.txt" in error_line(err)
    code, _, err = run_cli(capsys, "pretrain", "--resume", "--run-dir", str(tmp_path / "empty"), "--quiet",
                           "--set", f"data.cache_dir={cache_dir}", "--set", "data.max_documents=40")
    assert code == 2 and "no checkpoint" in error_line(err)

    from ernie_cmtl import api

    def broken(*args, **kwargs):
        return {}["a key that is not there"]  # a genuine bug: KeyError deep in the code

    monkeypatch.setattr(api, "build_data", broken)
    code, _, err = run_cli(capsys, "build-data", "--quiet")
    assert code == 1 and "internal error" in error_line(err) and "KeyError" in err
    crash_file = Path(re.search(r"report it with (\S+)\)", err).group(1))
    assert "Traceback" in crash_file.read_text()
    crash_file.unlink()
