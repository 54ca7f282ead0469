"""Chinese at English speed: segmenters, the seeded vocabulary, and the Chinese build against the English one.

    PYTHONPATH=. nice python bench/chinese_build.py [--only segmenters,vocabulary,build] [--work DIR]
        [--parallel] [--no-compare]

1. Segmenters: ``jieba.posseg`` against ``rjieba`` (jieba-rs) on every sentence of the law corpus's train split
   as the shared pass sees them (documents read as ``configs/ernie2_zh_debug.yaml`` reads them): characters per
   CPU second, and agreement with jieba: the share of jieba's words whose span rjieba also cuts (identical word
   boundaries), of those the share with the same POS tag, and the sentences whose words, and whose (word, tag)
   sequences, are identical; the first disagreements as examples. Then rjieba in 1 and 2 threads (it releases
   the GIL): wall and CPU seconds.
2. Vocabulary: the tokenizer ``configs/ernie2_zh_debug.yaml`` trains on the law train split, unseeded
   (``tokenizer.chinese_seed_characters=0``, the old behaviour) and seeded (the default), and its ``[UNK]``
   share of the tokens of ChnSentiCorp dev and OCNLI dev, with the most frequent unknown characters.
3. Build: ``ernie-cmtl build-data`` in fresh subprocesses, each with its own cache, CPU seconds of the child
   (user + system): English (``configs/default.yaml`` on the Wikipedia sample's train split), Chinese with
   ``jieba`` unseeded (today's examples), Chinese with the defaults (``rjieba``, seeded), and ``rjieba``
   unseeded reading the jieba arm's tokenizer (the same token ids, so the examples of the two segmenters
   compare one to one: counted per task, and the share of the rjieba arm's examples the jieba arm also built).
   MB of input (the corpus files' bytes) per CPU second, and the ratios, from this one run. ``--parallel``
   runs the first three arms at once (each child's CPU seconds are still its own, from ``os.wait4``);
   ``--no-compare`` leaves out the fourth arm and the comparison of examples. ``--baseline-tree DIR`` adds
   today's code as an arm of its own: DIR is a checkout of the commit before the Chinese-speed work (e.g.
   ``git worktree add /tmp/base 0b0f9f7``), whose ``build-data`` builds the law corpus with its own
   ``configs/ernie2_zh_debug.yaml`` (jieba, unseeded); the "x today's" ratio is then taken against it.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
LAW = DATA / "chinese-laws-lawrefbook" / "train"
WIKI = DATA / "wikipedia-en-2018-sample" / "train"
ZH_CONFIG = REPO / "configs" / "ernie2_zh_debug.yaml"
COMPARED = ("knowledge_masking", "discourse_relation", "ir_relevance")


def law_documents(work: Path):
    """The law train split's documents, read as the Chinese debug config reads them."""
    from data_builders.corpus import build_documents

    return build_documents([str(LAW)], format="markdown", language="zh", output_dir=work / "documents")


def law_sentences(work: Path) -> list[str]:
    return [s for doc in law_documents(work)["sentences"] for paragraph in doc for s in paragraph]


def agreement(reference: list[list[tuple[str, str]]], other: list[list[tuple[str, str]]]) -> dict:
    """How far ``other``'s segmentation agrees with ``reference``'s, sentence by sentence (spaces ignored)."""
    from data_builders.language import tagged_spans

    words = same_span = same_tag = same_words = same_pairs = 0
    examples = []
    for ref, oth in zip(reference, other, strict=True):
        a, b = tagged_spans(ref), tagged_spans(oth)
        words += len(a)
        shared = a.keys() & b.keys()
        same_span += len(shared)
        same_tag += sum(a[s] == b[s] for s in shared)
        same_words += a.keys() == b.keys()
        same_pairs += a == b
        if a.keys() != b.keys() and len(examples) < 5:
            examples.append(([w for w, _ in ref if w.strip()], [w for w, _ in oth if w.strip()]))
    n = max(len(reference), 1)
    return {"jieba_words": words, "identical_boundaries": same_span / max(words, 1),
            "identical_tags_of_those": same_tag / max(same_span, 1), "sentences": len(reference),
            "sentences_identical_words": same_words / n, "sentences_identical_word_tag": same_pairs / n,
            "examples": examples}


def _timed(function, *args):
    wall, cpu = time.perf_counter(), time.process_time()
    out = function(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def bench_segmenters(work: Path) -> dict:
    from data_builders.language import segment_many

    sentences = law_sentences(work)
    chars = sum(map(len, sentences))
    out: dict = {"sentences": len(sentences), "characters": chars}
    results = {}
    for name in ("jieba", "rjieba"):
        segment_many(["预热一下"], name)  # the dictionary loads outside the timing
        results[name], wall, cpu = _timed(segment_many, sentences, name)
        out[name] = {"wall_s": wall, "cpu_s": cpu, "chars_per_cpu_s": chars / cpu}
        print(f"{name:8s} {cpu:7.1f} CPU s {wall:7.1f} wall s {chars / cpu:12,.0f} characters/CPU s", flush=True)
    out["speedup_cpu"] = out["jieba"]["cpu_s"] / out["rjieba"]["cpu_s"]
    out["agreement"] = agreement(results["jieba"], results["rjieba"])
    print(f"rjieba / jieba: {out['speedup_cpu']:.1f}x characters per CPU second")
    print(json.dumps({k: v for k, v in out["agreement"].items() if k != "examples"}, indent=1))
    for ref, oth in out["agreement"]["examples"]:
        print("  jieba :", "/".join(ref), "\n  rjieba:", "/".join(oth))
    out["threads"] = bench_threads(sentences, chars)
    return out


def bench_threads(sentences: list[str], chars: int) -> dict:
    """rjieba over the sentences in 1 and 2 threads, one ``rjieba.Jieba`` per thread."""
    import rjieba

    taggers = [rjieba.Jieba(), rjieba.Jieba()]
    out = {}
    for threads in (1, 2):
        parts = [sentences[i::threads] for i in range(threads)]

        def run(k: int, parts=parts) -> list:
            return [taggers[k].tag(s) for s in parts[k]]

        with ThreadPoolExecutor(threads) as pool:
            _, wall, cpu = _timed(lambda pool=pool, threads=threads: list(pool.map(run, range(threads))))
        out[threads] = {"wall_s": wall, "cpu_s": cpu}
        print(f"rjieba, {threads} thread(s): {wall:.2f} wall s, {cpu:.2f} CPU s, "
              f"{chars / wall:,.0f} characters/wall s (load {os.getloadavg()[0]:.1f})", flush=True)
    return out


def _dev_texts() -> dict[str, list[str]]:
    chnsenticorp = [line.split("\t", 2)[2] for line in
                    (DATA / "chnsenticorp" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    ocnli = []
    for line in (DATA / "ocnli" / "dev.json").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        ocnli += [record["sentence1"], record["sentence2"]]
    return {"chnsenticorp_dev": chnsenticorp, "ocnli_dev": ocnli}


def unknown_rate(tokenizer, texts: list[str]) -> tuple[float, list[tuple[str, int]]]:
    """[UNK] share of the tokens of ``texts`` and the most frequent characters behind an [UNK]."""
    unk = tokenizer.token_to_id("[UNK]")
    total = unknown = 0
    missing: collections.Counter = collections.Counter()
    for text, encoding in zip(texts, tokenizer.encode_batch(texts, add_special_tokens=False), strict=True):
        total += len(encoding.ids)
        for token, (start, end) in zip(encoding.ids, encoding.offsets, strict=True):
            if token == unk:
                unknown += 1
                missing[text[start:end]] += 1
    return unknown / max(total, 1), missing.most_common(12)


def bench_vocabulary(work: Path) -> dict:
    from data_builders.tokenizer import iter_paragraphs, train_chinese_wordpiece
    from ernie_cmtl.config import read_config

    config = read_config(ZH_CONFIG)
    documents = law_documents(work)
    texts = _dev_texts()
    out = {}
    for seeds in (0, config.tokenizer.chinese_seed_characters):
        tokenizer = train_chinese_wordpiece(iter_paragraphs(documents), config.tokenizer.vocab_size,
                                            config.tokenizer.min_frequency, config.tokenizer.lowercase, seeds)
        row = {"vocabulary": tokenizer.get_vocab_size()}
        for name, dev in texts.items():
            rate, missing = unknown_rate(tokenizer, dev)
            row[name] = rate
            row[f"{name}_top_unknown"] = missing
        out[seeds] = row
        print(f"seed characters {seeds}: vocabulary {row['vocabulary']}, [UNK] ChnSentiCorp dev "
              f"{row['chnsenticorp_dev']:.2%}, OCNLI dev {row['ocnli_dev']:.2%}", flush=True)
        print(f"  most frequent unknown (ChnSentiCorp): {row['chnsenticorp_dev_top_unknown']}")
    return out


def build_data(name: str, work: Path, config: Path, corpus: Path, overrides: list[str],
               tree: Path = REPO) -> dict:
    """One ``ernie-cmtl build-data`` in a fresh subprocess with its own cache: CPU and wall seconds. ``tree``:
    the checkout whose code builds (another commit's runs on this checkout's environment, its own code first
    on the path)."""
    run_dir, cache = work / name / "run", work / name / "cache"
    command = [sys.executable, "-c", "from ernie_cmtl.cli import main; main()", "build-data",
               "--config", str(config), "--corpus", str(corpus), "--run-dir", str(run_dir), "--quiet",
               "--set", f"data.cache_dir={cache}", *[a for o in overrides for a in ("--set", o)]]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    wall = time.perf_counter()
    child = subprocess.Popen(command, cwd=tree, env=env)
    _, status, usage = os.wait4(child.pid, 0)  # this child's own CPU, also while other arms run beside it
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - wall
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, command)
    cpu = usage.ru_utime + usage.ru_stime
    mb = sum(f.stat().st_size for f in corpus.rglob("*") if f.is_file()) / 1e6
    report = json.loads((run_dir / "data_report.json").read_text())
    counts = {task: entry.get("train", 0) for task, entry in report["tasks"].items()}
    print(f"{name:22s} {mb:6.1f} MB {cpu:7.1f} CPU s {wall:7.1f} wall s {mb / cpu:6.3f} MB/CPU s "
          f"{counts}", flush=True)
    return {"mb": mb, "cpu_s": cpu, "wall_s": wall, "mb_per_cpu_s": mb / cpu, "train_examples": counts,
            "cache": str(cache), "run_dir": str(run_dir)}


def _example_hashes(cache: str, task: str) -> collections.Counter:
    from datasets import load_from_disk

    hashes: collections.Counter = collections.Counter()
    for train in sorted(Path(cache, "examples", task).glob("*/train")):
        for row in load_from_disk(str(train)).iter(batch_size=1):
            hashes[hashlib.sha1(json.dumps(row, sort_keys=True).encode()).hexdigest()] += 1
    return hashes


def bench_build(work: Path, parallel: bool = False, compare: bool = True, baseline: Path | None = None) -> dict:
    """The build arms, one after another, or (``parallel``) all at once, each its own process (CPU seconds are
    each child's own either way; on a machine other jobs load, running them side by side takes a fraction of
    the wall time). ``compare``: also the rjieba arm on the jieba arm's tokenizer and the examples compared.
    ``baseline``: a checkout of today's code, built as the arm ``today``."""
    arms = {"english": ("english", work, REPO / "configs" / "default.yaml", WIKI, []),
            "jieba": ("zh_jieba_unseeded", work, ZH_CONFIG, LAW,
                      ["data.zh_segmenter=jieba", "tokenizer.chinese_seed_characters=0"]),
            "rjieba": ("zh_rjieba_default", work, ZH_CONFIG, LAW, [])}
    if baseline is not None:
        arms["today"] = ("zh_today", work, baseline / "configs" / "ernie2_zh_debug.yaml", LAW, [], baseline)
    with ThreadPoolExecutor(len(arms) if parallel else 1) as pool:
        futures = {name: pool.submit(build_data, *args) for name, args in arms.items()}
        out = {name: future.result() for name, future in futures.items()}
    _print_ratios(out)
    if compare:
        out |= compare_segmenters(work, out)
    return out


def _print_ratios(out: dict) -> None:
    ratio_jieba = out["rjieba"]["mb_per_cpu_s"] / out["jieba"]["mb_per_cpu_s"]
    ratio_english = out["rjieba"]["mb_per_cpu_s"] / out["english"]["mb_per_cpu_s"]
    out["ratios"] = {"rjieba_over_jieba": ratio_jieba, "rjieba_over_english": ratio_english,
                     "jieba_over_english": out["jieba"]["mb_per_cpu_s"] / out["english"]["mb_per_cpu_s"]}
    print(f"Chinese build (rjieba, seeded) / this code with jieba, unseeded: {ratio_jieba:.2f}x")
    if "today" in out:
        out["ratios"]["rjieba_over_today"] = ratio_today = out["rjieba"]["mb_per_cpu_s"] / out["today"]["mb_per_cpu_s"]
        out["ratios"]["today_over_english"] = out["today"]["mb_per_cpu_s"] / out["english"]["mb_per_cpu_s"]
        print(f"Chinese build (rjieba, seeded) / today's code (the baseline tree): {ratio_today:.2f}x (target >= 3); "
              f"today's / English: {out['ratios']['today_over_english']:.2f}x")
    print(f"Chinese build (rjieba, seeded) / English build: {ratio_english:.2f}x (target >= 0.8); "
          f"jieba / English: {out['ratios']['jieba_over_english']:.2f}x", flush=True)


def compare_segmenters(work: Path, out: dict) -> dict:
    """rjieba unseeded reading the jieba arm's tokenizer, and the examples of the two segmenters compared."""
    out = dict(out)
    jieba_tokenizer = Path(out["jieba"]["run_dir"]) / "tokenizer.json"
    out["rjieba_same_tokenizer"] = build_data(
        "zh_rjieba_jieba_tokenizer", work, ZH_CONFIG, LAW,
        ["data.zh_segmenter=rjieba", "tokenizer.chinese_seed_characters=0", f"tokenizer.path={jieba_tokenizer}"])
    out["compared"] = {}
    for task in COMPARED:
        a = _example_hashes(out["jieba"]["cache"], task)
        b = _example_hashes(out["rjieba_same_tokenizer"]["cache"], task)
        common = sum((a & b).values())
        out["compared"][task] = {"jieba": sum(a.values()), "rjieba": sum(b.values()), "identical": common}
        print(f"{task:20s} examples jieba {sum(a.values()):7d}  rjieba {sum(b.values()):7d}  identical "
              f"{common:7d} ({common / max(sum(b.values()), 1):.1%} of rjieba's)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="segmenters,vocabulary,build")
    parser.add_argument("--work", type=Path, help="scratch directory (default: a new temporary one)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--parallel", action="store_true", help="build: the arms at once")
    parser.add_argument("--baseline-tree", type=Path,
                        help="build: a checkout of today's code (the commit before the Chinese-speed work), an arm")
    parser.add_argument("--no-compare", action="store_true",
                        help="build: without the fourth arm and the examples compared per segmenter")
    args = parser.parse_args()
    os.environ.update(TOKENIZERS_PARALLELISM="false", HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    import datasets

    datasets.disable_progress_bars()
    work = args.work or Path(tempfile.mkdtemp(prefix="chinese_build_"))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()}, work {work}",
          flush=True)
    sections = {"segmenters": bench_segmenters, "vocabulary": bench_vocabulary,
                "build": lambda work: bench_build(work, args.parallel, not args.no_compare, args.baseline_tree)}
    results = {}
    for name in args.only.split(","):
        print(f"\n== {name} ==", flush=True)
        results[name] = sections[name](work)
    print(f"\nload at the end {os.getloadavg()}; active threads {threading.active_count()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
