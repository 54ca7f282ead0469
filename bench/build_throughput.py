"""Data-building throughput and memory of the seven task builders, and masking speed against HF.

    python bench/build_throughput.py [--corpus ../shared/data/wikipedia-en-2018-sample/train] [--json OUT]
    python bench/build_throughput.py --corpus ../shared/data/chinese-laws-lawrefbook/train --factors 1 \
        --tasks knowledge_masking,sentence_reordering,sentence_distance,discourse_relation,ir_relevance \
        --no-masking       # the Chinese path: jieba segmentation is part of the shared tokenization line

1. Throughput: each builder runs in one process (``num_proc=1``) over the whole corpus; prints MB of raw text
   (the corpus files' bytes) per minute per core, per builder and for all seven together (the shared
   tokenization pass that knowledge masking, capitalization, token-document relation and sentence reordering
   read is its own line, and counts in the total). Target >= 20.
2. Peak memory: the whole pipeline (documents, tokenizer, all seven builders) runs in a fresh subprocess at 1x
   and at 4x the corpus (real copies of the files, document ids made unique per copy); prints each peak RSS.
   Target: flat.
3. Masking: our vectorized knowledge-masking collate against HF whole-word masking
   (``DataCollatorForWholeWordMask`` before transformers 5, ``DataCollatorForLanguageModeling(whole_word_mask=True)``
   since) on the same tokenized batches, HF's words laid onto our masking units; interleaved, median per batch.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "wikipedia-en-2018-sample" / "train"
TASKS = ["knowledge_masking", "capitalization", "token_document_relation", "sentence_reordering",
         "sentence_distance", "discourse_relation", "ir_relevance"]


class AnonymousMemorySampler(threading.Thread):
    """Peak anonymous memory (``RssAnon``: heap, Python objects, tokenizer/BM25 state), sampled every 20 ms.
    Peak RSS also counts the pages of memory-mapped Arrow files the process has read, which grow with the
    corpus but are page cache the kernel can drop; RssAnon is the memory that cannot be."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_mb = 0.0
        self._stop_event = threading.Event()

    def run(self) -> None:
        status = Path("/proc/self/status")
        while not self._stop_event.is_set():
            for line in status.read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.peak_mb = max(self.peak_mb, int(line.split()[1]) / 1024)
            self._stop_event.wait(0.02)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def build_all(files: list[str], work: Path, tasks: list[str]) -> dict:
    """Documents -> tokenizer -> every task's examples, timed per stage. Runs in the calling process."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets

    datasets.disable_progress_bars()
    from data_builders.corpus import build_documents
    from data_builders.segments import add_sentence_tokens
    from data_builders.tokenizer import iter_paragraphs, train_chinese_wordpiece, train_wordpiece
    from ernie_cmtl.assembly import load_config
    from ernie_cmtl.data import make_tasks
    from pretrain_tasks.base import BuildContext, SpecialIds

    timings, peaks, cpu = {}, {}, {}  # cpu: process CPU seconds, what a stage costs on a machine others share
    sampler = AnonymousMemorySampler()
    sampler.start()

    def peak_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    start = time.perf_counter()
    documents = build_documents(files, output_dir=work / "documents")
    timings["documents"] = time.perf_counter() - start
    peaks["documents"] = peak_mb()
    start = time.perf_counter()
    chinese = "zh" in set(documents["language"])  # as prepare_data decides it
    train = train_chinese_wordpiece if chinese else train_wordpiece
    tokenizer = train(iter_paragraphs(documents), vocab_size=8000)
    timings["tokenizer"] = time.perf_counter() - start
    peaks["tokenizer"] = peak_mb()
    config = load_config(None, ["tasks={" + ", ".join(f"{t}: {{}}" for t in tasks) + "}"])
    task_objects = make_tasks(config, SpecialIds.from_tokenizer(tokenizer))
    counts = {}
    tokenized = None
    if any(task.reads_sentence_tokens for task in task_objects.values()):
        start, cpu_start = time.perf_counter(), time.process_time()  # the shared pass, as prepare_data does it
        tokenized = add_sentence_tokens(documents, tokenizer)
        timings["shared_tokenization"] = time.perf_counter() - start
        cpu["shared_tokenization"] = time.process_time() - cpu_start
        peaks["shared_tokenization"] = peak_mb()
    for name, task in task_objects.items():
        ctx = BuildContext(tokenizer=tokenizer, max_seq_len=128, seed=0, num_proc=1,
                           cache_dir=work / "cache" / name,
                           train_documents=tokenized if chinese and task.reads_sentence_tokens else documents)
        start, cpu_start = time.perf_counter(), time.process_time()
        examples = task.build(tokenized if task.reads_sentence_tokens else documents, ctx)
        timings[name] = time.perf_counter() - start
        cpu[name] = time.process_time() - cpu_start
        peaks[name] = peak_mb()
        counts[name] = len(examples)
        del examples
    sampler.stop()
    return {"timings": timings, "cpu_seconds": cpu, "counts": counts, "documents": len(documents), "peaks_mb": peaks,
            "peak_rss_mb": peak_mb(), "peak_anon_mb": sampler.peak_mb}


def replicate(files: list[Path], factor: int, into: Path) -> list[str]:
    """``factor`` real copies of the corpus files (the corpus reader resolves symlinks and takes a file once),
    with WikiExtractor document ids made unique per copy, so the pipeline sees ``factor`` times the documents.
    A Markdown file keeps its folder and suffix (its document id is ``folder/name``, its format read from it)."""
    into.mkdir(parents=True, exist_ok=True)
    out = []
    for copy in range(factor):
        for f in files:
            if f.suffix == ".md":
                (into / f.parent.name).mkdir(exist_ok=True)
                target = into / f.parent.name / f"{f.stem}.copy{copy}{f.suffix}"
            else:
                target = into / f"{f.name}.copy{copy}"
            if not target.exists():
                text = f.read_text(encoding="utf-8")
                target.write_text(text.replace('<doc id="', f'<doc id="{copy + 1}0'), encoding="utf-8")
            out.append(str(target))
    return out


def run_child(files: list[str], work: Path, tasks: list[str] = TASKS) -> dict:
    """``build_all`` in a fresh interpreter, so its peak RSS is the pipeline's own."""
    code = (f"import json, sys; sys.path.insert(0, {str(REPO)!r}); from bench.build_throughput import build_all; "
            f"from pathlib import Path; print(json.dumps(build_all({files!r}, Path({str(work)!r}), {tasks!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def hf_features(input_ids: list[int], token_unit: list[int]) -> dict[str, list]:
    """One example as HF's whole-word collator wants it. transformers 5 finds words from ``offset_mapping``
    (a token whose start is not the previous token's end starts a new word) and ``special_tokens_mask``;
    here the offsets are laid out so that HF's "words" are exactly our masking units, so both collators mask
    the same units of the same token ids."""
    offsets, special, position, previous = [], [], 0, None
    for unit in token_unit:
        if unit < 0:
            offsets.append((0, 0))
            special.append(1)
            previous = None
            continue
        if unit != previous:
            position += 1  # a gap: a new unit begins
        offsets.append((position, position + 1))
        position += 1
        special.append(0)
        previous = unit
    return {"input_ids": input_ids, "offset_mapping": offsets, "special_tokens_mask": special}


def pad_features(features: list[dict[str, list]], pad_id: int) -> list[dict[str, list]]:
    """Pad a batch to its longest example, as a tokenizer call with ``padding=True`` returns it: HF's collator
    pads ``input_ids`` itself but not ``offset_mapping``. Done outside the timed region (it is tokenization's
    part of the work; our collate pads inside its timing)."""
    longest = max(len(f["input_ids"]) for f in features)
    out = []
    for f in features:
        extra = longest - len(f["input_ids"])
        out.append({"input_ids": f["input_ids"] + [pad_id] * extra,
                    "attention_mask": [1] * len(f["input_ids"]) + [0] * extra,
                    "offset_mapping": f["offset_mapping"] + [(0, 0)] * extra,
                    "special_tokens_mask": f["special_tokens_mask"] + [1] * extra})
    return out


def bench_masking(files: list[str], batches: int = 30, batch_size: int = 32) -> dict:
    """Median time per batch: our knowledge-masking collate vs HF whole-word masking, on the same examples
    (the same token ids, and HF's words laid onto our units, see ``hf_features``)."""
    import torch
    from transformers import PreTrainedTokenizerFast

    try:  # transformers < 5
        from transformers import DataCollatorForWholeWordMask as hf_collator
        hf_name = "DataCollatorForWholeWordMask"
    except ImportError:  # transformers 5: whole-word masking is an option of the language-modeling collator
        from functools import partial

        from transformers import DataCollatorForLanguageModeling

        hf_collator = partial(DataCollatorForLanguageModeling, whole_word_mask=True)
        hf_name = "DataCollatorForLanguageModeling(whole_word_mask=True)"

    from data_builders.corpus import build_documents
    from data_builders.tokenizer import iter_paragraphs, train_wordpiece
    from pretrain_tasks.base import BuildContext, SpecialIds
    from pretrain_tasks.knowledge_masking import KnowledgeMaskingConfig, KnowledgeMaskingTask

    documents = build_documents(files[:2])
    tokenizer = train_wordpiece(iter_paragraphs(documents), vocab_size=8000)
    task = KnowledgeMaskingTask(KnowledgeMaskingConfig(), SpecialIds.from_tokenizer(tokenizer))
    with tempfile.TemporaryDirectory() as tmp:
        examples = task.build(documents, BuildContext(tokenizer, 128, 0, 1, Path(tmp), documents))
        hf_tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                               cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
        hf = hf_collator(hf_tokenizer, mlm_probability=0.15, return_tensors="pt")
        ours_times, hf_times = [], []
        for i in range(batches):
            rows = examples[i * batch_size:(i + 1) * batch_size]
            features = pad_features([hf_features(ids, units)
                                     for ids, units in zip(rows["input_ids"], rows["token_unit"], strict=True)],
                                    tokenizer.token_to_id("[PAD]"))
            start = time.perf_counter()
            task.collate(rows, torch.Generator().manual_seed(i))
            ours_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            hf(features)
            hf_times.append(time.perf_counter() - start)
    ours, theirs = statistics.median(ours_times), statistics.median(hf_times)
    return {"ours_ms": ours * 1000, "hf_ms": theirs * 1000, "speedup": theirs / ours, "batches": batches,
            "batch_size": batch_size, "hf": hf_name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--tasks", type=lambda text: text.split(","), default=TASKS,
                        help="comma-separated task names (default: all seven)")
    parser.add_argument("--no-masking", action="store_true", help="skip the masking comparison with HF")
    args = parser.parse_args()
    from data_builders.corpus import resolve_corpus_files

    # The corpus reader's own file listing (skips PROVENANCE.md, README*, hidden files; recurses into folders).
    files = resolve_corpus_files([str(args.corpus)])
    raw_mb = sum(f.stat().st_size for f in files) / 1e6
    work = Path(tempfile.mkdtemp(prefix="ernie-bench-"))
    results: dict = {"corpus": str(args.corpus), "raw_mb": raw_mb, "runs": {}}
    try:
        for factor in args.factors:
            copies = replicate(files, factor, work / f"corpus_x{factor}")
            results["runs"][factor] = run_child(copies, work / f"run_x{factor}", args.tasks)
        try:
            results["masking"] = ({"error": "skipped (--no-masking)"} if args.no_masking
                                  else bench_masking([str(f) for f in files]))
        except Exception as err:  # noqa: BLE001 - the comparison must not cost the throughput numbers
            results["masking"] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = results["runs"][args.factors[0]]
    print(f"corpus: {args.corpus} ({raw_mb:.1f} MB raw, {base['documents']} documents); one core per builder")
    print(f"{'builder':<26}{'examples':>10}{'seconds':>10}{'MB/min/core':>14}{'cpu s':>9}{'MB/min/cpu':>12}")
    cpu = base.get("cpu_seconds", {})

    def line(label: str, examples: str, seconds: float, cpu_seconds: float) -> None:
        # Wall-clock per core (the figure this bench always reported) and per CPU second of this process:
        # on a machine others share, the second one is what the stage itself costs.
        print(f"{label:<26}{examples:>10}{seconds:>10.1f}{raw_mb / (seconds / 60):>14.1f}"
              f"{cpu_seconds:>9.1f}{raw_mb / (cpu_seconds / 60) if cpu_seconds else 0:>12.1f}")

    builder_seconds = base["timings"].get("shared_tokenization", 0.0)
    builder_cpu = cpu.get("shared_tokenization", 0.0)
    if builder_seconds:
        line("(shared tokenization)", "", builder_seconds, builder_cpu)
    for name in args.tasks:
        seconds = base["timings"][name]
        builder_seconds += seconds
        builder_cpu += cpu.get(name, 0.0)
        line(name, str(base["counts"][name]), seconds, cpu.get(name, 0.0))
    line(f"all {len(args.tasks)} builders", "", builder_seconds, builder_cpu)
    print(f"(reading documents {base['timings']['documents']:.1f}s, tokenizer training "
          f"{base['timings']['tokenizer']:.1f}s, not counted above)")
    for factor in args.factors:
        run = results["runs"][factor]
        print(f"peak RSS at {factor}x corpus ({factor * raw_mb:.0f} MB, {run['documents']} documents): "
              f"{run['peak_rss_mb']:.0f} MB, of which anonymous (not file-backed) at most "
              f"{run['peak_anon_mb']:.0f} MB")
    print("peak RSS (MB) after each stage: " + "; ".join(
        f"{factor}x " + ", ".join(f"{k} {v:.0f}" for k, v in results["runs"][factor]["peaks_mb"].items())
        for factor in args.factors))
    if len(args.factors) > 1:
        first, last = (results["runs"][f]["peak_rss_mb"] for f in (args.factors[0], args.factors[-1]))
        print(f"peak memory ratio {args.factors[-1]}x / {args.factors[0]}x: RSS {last / first:.2f}, anonymous "
              f"{results['runs'][args.factors[-1]]['peak_anon_mb'] / results['runs'][args.factors[0]]['peak_anon_mb']:.2f}")
    m = results["masking"]
    if "error" in m:
        print(f"masking comparison failed: {m['error']}")
    else:
        print(f"masking, {m['batches']} batches of {m['batch_size']}: ours {m['ours_ms']:.2f} ms, "
              f"HF {m['hf']} {m['hf_ms']:.2f} ms per batch -> {m['speedup']:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
