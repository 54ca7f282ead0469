"""Data-building throughput and memory of the seven task builders, and masking speed against HF.

    python bench/build_throughput.py [--corpus ../shared/data/wikipedia-en-2018-sample/train] [--factors 1 4 16]
                                     [--num-proc 1 2] [--json OUT]
    python bench/build_throughput.py --corpus ../shared/data/chinese-laws-lawrefbook/train --factors 1 \
        --tasks knowledge_masking,sentence_reordering,sentence_distance,discourse_relation,ir_relevance \
        --no-masking       # the Chinese path: jieba segmentation is part of the shared tokenization line

1. Throughput: each builder runs in one process (``num_proc=1``) over the whole corpus; prints MB of raw text
   (the corpus files' bytes) per minute per core, per builder and for all seven together (the shared
   tokenization pass that knowledge masking, capitalization, token-document relation and sentence reordering
   read is its own line, and counts in the total). Target >= 20.
   The build's cost in tokenization passes (all builders incl. the shared pass / the shared pass) is its own
   line (target <= 2.5).
2. Growth: the whole pipeline (documents, tokenizer, all seven builders) runs in a fresh subprocess at 1x, 4x
   and 16x the corpus (real copies of the files, document ids made unique per copy); prints time and peak
   anonymous memory per stage at each size and their ratios (target: time linear within 15%, anonymous
   memory flat within 15%), and each run's peak RSS.
3. Workers: the 1x build with ``data.num_proc`` 1 and 2 (wall time of the shared pass and builders, speed-up,
   peak anonymous memory of the main process and of each worker; target >= 1.7x at 2).
4. Masking: our vectorized knowledge-masking collate against HF whole-word masking
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
    """Peak anonymous memory (``RssAnon``: heap, Python objects, tokenizer/BM25 state), sampled every 20 ms,
    of this process and (separately) of its worker processes (``data.num_proc`` > 1), overall and per stage
    (:meth:`stage` starts a new one). Peak RSS also counts the pages of memory-mapped Arrow files the process
    has read, which grow with the corpus but are page cache the kernel can drop; RssAnon is the memory that
    cannot be. ``pid`` watches another process (a ``build-data`` subprocess) instead of this one; its file-backed
    RSS (``RssFile``) peak is kept too, in ``file_peak_mb``."""

    def __init__(self, pid: int | None = None) -> None:
        super().__init__(daemon=True)
        self.pid: int | str = "self" if pid is None else pid
        self.peak_mb = 0.0
        self.file_peak_mb = 0.0
        self.worker_peak_mb = 0.0
        self.stage_peaks: dict[str, float] = {}
        self._stage: str | None = None
        self._stop_event = threading.Event()

    @staticmethod
    def _rss_mb(pid: int | str) -> tuple[float, float]:
        """(RssAnon, RssFile) of ``pid`` in MB, from one read of its status; zeros for a process that ended."""
        anon = file = 0.0
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    anon = int(line.split()[1]) / 1024
                elif line.startswith("RssFile:"):
                    file = int(line.split()[1]) / 1024
        except OSError:  # a worker that just ended
            pass
        return anon, file

    def stage(self, name: str) -> None:
        self._stage = name
        self.stage_peaks[name] = self._rss_mb("self")[0]

    def run(self) -> None:
        import psutil

        try:
            me = psutil.Process(None if self.pid == "self" else int(self.pid))
        except psutil.Error:  # the watched process has already ended
            return
        while not self._stop_event.is_set():
            mine, file = self._rss_mb(self.pid)
            self.peak_mb = max(self.peak_mb, mine)
            self.file_peak_mb = max(self.file_peak_mb, file)
            if self._stage is not None:
                self.stage_peaks[self._stage] = max(self.stage_peaks[self._stage], mine)
            try:
                children = me.children(recursive=True)
            except psutil.Error:  # a worker ended while its parent's children were listed
                children = []
            for child in children:
                self.worker_peak_mb = max(self.worker_peak_mb, self._rss_mb(child.pid)[0])
            self._stop_event.wait(0.02)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def build_all(files: list[str], work: Path, tasks: list[str], num_proc: int = 1) -> dict:
    """Documents -> tokenizer -> every task's examples, timed per stage, as ``prepare_data`` builds them
    (document-local tasks in blocks of ``data.block_documents``, IR relevance's blocks through its config,
    intermediates on disk). Runs in the calling process."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets

    datasets.disable_progress_bars()
    datasets.disable_caching()
    from data_builders.corpus import build_documents
    from data_builders.tokenizer import iter_paragraphs, train_chinese_wordpiece, train_wordpiece
    from ernie_cmtl.assembly import load_config
    from ernie_cmtl.build.examples import (
        TaskJob,
        build_task,
        build_tasks,
        make_tasks,
        sentence_tokens_in_blocks,
    )
    from ernie_cmtl.build.prepare import statistics_sample
    from ernie_cmtl.tasks import BuildContext, SpecialIds

    timings, peaks, cpu = {}, {}, {}  # cpu: process CPU seconds, what a stage costs on a machine others share
    sampler = AnonymousMemorySampler()
    sampler.start()

    def peak_mb() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    sampler.stage("documents")
    start, cpu_start = time.perf_counter(), time.process_time()
    documents = build_documents(files, output_dir=work / "documents")
    timings["documents"] = time.perf_counter() - start
    cpu["documents"] = time.process_time() - cpu_start
    peaks["documents"] = peak_mb()
    config = load_config(None, ["tasks={" + ", ".join(f"{t}: {{}}" for t in tasks) + "}"])
    stats = statistics_sample(documents, config.data.statistics_documents)
    sampler.stage("tokenizer")
    start, cpu_start = time.perf_counter(), time.process_time()
    chinese = "zh" in set(documents["language"])  # as prepare_data decides it
    train = train_chinese_wordpiece if chinese else train_wordpiece
    tokenizer = train(iter_paragraphs(stats), vocab_size=8000)
    timings["tokenizer"] = time.perf_counter() - start
    cpu["tokenizer"] = time.process_time() - cpu_start  # the trainer's Rust threads count here too
    peaks["tokenizer"] = peak_mb()
    task_objects = make_tasks(config, SpecialIds.from_tokenizer(tokenizer))
    counts = {}
    tokenized = None
    if any(task.reads_sentence_tokens for task in task_objects.values()):
        sampler.stage("shared_tokenization")
        start, cpu_start = time.perf_counter(), time.process_time()  # the shared pass, as prepare_data does it
        tokenized = sentence_tokens_in_blocks(documents, tokenizer, config.data.block_documents, num_proc,
                                              work / "scratch" / "tokens")
        timings["shared_tokenization"] = time.perf_counter() - start
        cpu["shared_tokenization"] = time.process_time() - cpu_start
        peaks["shared_tokenization"] = peak_mb()
    jobs = [TaskJob(name, task, BuildContext(
        tokenizer=tokenizer, max_seq_len=128, seed=0, num_proc=num_proc, cache_dir=work / "cache" / name,
        train_documents=tokenized if chinese and task.reads_sentence_tokens else stats,
        work_dir=work / "scratch" / name), [("train", tokenized if task.reads_sentence_tokens else documents)],
        None if num_proc == 1 else work / "examples" / name) for name, task in task_objects.items()]
    if num_proc == 1:  # one stage per task: its time and memory alone
        for job in jobs:
            sampler.stage(job.name)
            result = build_task(job, config.data.block_documents)
            timings[job.name], cpu[job.name] = result.seconds, result.cpu_seconds
            peaks[job.name] = peak_mb()
            counts[job.name] = len(result.examples["train"])
            del result
    else:  # as prepare_data runs them: whole tasks in a pool of forked workers (per-task figures: the worker's)
        sampler.stage("builders")
        start = time.perf_counter()
        for job, result in zip(jobs, build_tasks(jobs, config.data.block_documents, num_proc), strict=True):
            timings[job.name], cpu[job.name] = result.seconds, result.cpu_seconds
            counts[job.name] = len(result.examples["train"])
        timings["builders"] = time.perf_counter() - start
    sampler.stop()
    return {"timings": timings, "cpu_seconds": cpu, "counts": counts, "documents": len(documents), "peaks_mb": peaks,
            "peak_rss_mb": peak_mb(), "peak_anon_mb": sampler.peak_mb, "stage_anon_mb": sampler.stage_peaks,
            "worker_peak_anon_mb": sampler.worker_peak_mb, "num_proc": num_proc}


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


def run_child(files: list[str], work: Path, tasks: list[str] = TASKS, num_proc: int = 1) -> dict:
    """``build_all`` in a fresh interpreter, so its peak RSS is the pipeline's own."""
    code = (f"import json, sys; sys.path.insert(0, {str(REPO)!r}); from bench.build_throughput import build_all; "
            f"from pathlib import Path; print(json.dumps(build_all({files!r}, Path({str(work)!r}), {tasks!r}, "
            f"{num_proc})))")
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
    from ernie_cmtl.tasks import BuildContext, SpecialIds
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


def growth_lines(results: dict, factors: list[int], stages: list[str], clock: str = "cpu_seconds") -> list[str]:
    """Per stage: seconds (``clock``: process CPU seconds, which other load on the machine does not inflate,
    or wall ``timings``) and peak anonymous MB at each corpus factor, and the ratios against the first factor
    (time / factor, so linear growth reads 1.00; anonymous memory as is, so flat reads 1.00)."""
    base = results["runs"][factors[0]]
    head = "".join(f"{f'{f}x s':>9}{f'{f}x MB':>9}" for f in factors)
    ratios = "".join(f"{f'{f}x t/lin':>10}{f'{f}x mem':>9}" for f in factors[1:])
    lines = [f"{'stage':<26}{head}{ratios}"]
    for stage in stages:
        if stage not in base[clock]:
            continue
        cells = "".join(f"{results['runs'][f][clock][stage]:>9.1f}"
                        f"{results['runs'][f]['stage_anon_mb'].get(stage, 0):>9.0f}" for f in factors)
        growth = ""
        for f in factors[1:]:
            run = results["runs"][f]
            t = run[clock][stage] / (base[clock][stage] * f / factors[0]) if base[clock][stage] else 0
            m = run["stage_anon_mb"].get(stage, 0) / base["stage_anon_mb"][stage] if base["stage_anon_mb"].get(stage) \
                else 0
            growth += f"{t:>10.2f}{m:>9.2f}"
        lines.append(f"{stage:<26}{cells}{growth}")
    total = {f: sum(results["runs"][f][clock].values()) for f in factors}
    lines.append(f"{'all stages':<26}" + "".join(f"{total[f]:>9.1f}{results['runs'][f]['peak_anon_mb']:>9.0f}"
                                                 for f in factors)
                 + "".join(f"{total[f] / (total[factors[0]] * f / factors[0]):>10.2f}"
                           f"{results['runs'][f]['peak_anon_mb'] / base['peak_anon_mb']:>9.2f}" for f in factors[1:]))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, nargs="+", default=[DEFAULT_CORPUS],
                        help="the 1x corpus: folders or files (default: the whole Wikipedia sample's train/)")
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--num-proc", type=int, nargs="+", default=[1, 2],
                        help="data.num_proc values compared at the first factor (the first one is the main run)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--tasks", type=lambda text: text.split(","), default=TASKS,
                        help="comma-separated task names (default: all seven)")
    parser.add_argument("--no-masking", action="store_true", help="skip the masking comparison with HF")
    args = parser.parse_args()
    from data_builders.corpus import resolve_corpus_files

    # The corpus reader's own file listing (skips PROVENANCE.md, README*, hidden files; recurses into folders).
    files = resolve_corpus_files([str(c) for c in args.corpus])
    raw_mb = sum(f.stat().st_size for f in files) / 1e6
    work = Path(tempfile.mkdtemp(prefix="ernie-bench-"))
    results: dict = {"corpus": [str(c) for c in args.corpus], "raw_mb": raw_mb, "runs": {}, "num_proc": {}}
    started = time.perf_counter()
    try:
        for factor in args.factors:
            copies = replicate(files, factor, work / f"corpus_x{factor}")
            results["runs"][factor] = run_child(copies, work / f"run_x{factor}", args.tasks, args.num_proc[0])
            shutil.rmtree(work / f"run_x{factor}", ignore_errors=True)
            print(f"{factor}x done ({(time.perf_counter() - started) / 60:.1f} min)", file=sys.stderr, flush=True)
        results["num_proc"][args.num_proc[0]] = results["runs"][args.factors[0]]
        for num_proc in args.num_proc[1:]:
            copies = replicate(files, args.factors[0], work / f"corpus_x{args.factors[0]}")
            results["num_proc"][num_proc] = run_child(copies, work / f"run_np{num_proc}", args.tasks, num_proc)
            shutil.rmtree(work / f"run_np{num_proc}", ignore_errors=True)
        try:
            results["masking"] = ({"error": "skipped (--no-masking)"} if args.no_masking
                                  else bench_masking([str(f) for f in files]))
        except Exception as err:  # noqa: BLE001 - the comparison must not cost the throughput numbers
            results["masking"] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = results["runs"][args.factors[0]]
    print(f"corpus: {' '.join(results['corpus'])} ({raw_mb:.1f} MB raw, {base['documents']} documents); "
          f"num_proc {base['num_proc']}")
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
    if cpu.get("shared_tokenization"):
        print(f"build cost in tokenization passes: {builder_cpu / cpu['shared_tokenization']:.2f} (CPU), "
              f"{builder_seconds / base['timings']['shared_tokenization']:.2f} (wall); target <= 2.5")
    if len(args.factors) > 1:
        print("growth with the corpus (process CPU seconds and peak anonymous MB per stage; t/lin = time / "
              "(factor x 1x time), mem = peak anonymous / 1x):")
        for text in growth_lines(results, args.factors, ["documents", "tokenizer", "shared_tokenization",
                                                          *args.tasks]):
            print("  " + text)
    for factor in args.factors:
        run = results["runs"][factor]
        total = sum(run["timings"].values())
        print(f"{factor}x corpus ({factor * raw_mb:.0f} MB, {run['documents']} documents): {total:.0f} s in all "
              f"stages, peak RSS {run['peak_rss_mb']:.0f} MB, peak anonymous {run['peak_anon_mb']:.0f} MB")
    if len(args.factors) > 1:
        first, last = (results["runs"][f] for f in (args.factors[0], args.factors[-1]))
        ratio = sum(last["timings"].values()) / sum(first["timings"].values())
        print(f"{args.factors[-1]}x / {args.factors[0]}x: time {ratio:.2f} (linear: "
              f"{args.factors[-1] / args.factors[0]:.0f}), peak RSS {last['peak_rss_mb'] / first['peak_rss_mb']:.2f}, "
              f"peak anonymous {last['peak_anon_mb'] / first['peak_anon_mb']:.2f}")
    if len(results["num_proc"]) > 1:
        runs = results["num_proc"]
        one = runs[args.num_proc[0]]
        tasks = [k for k in one["timings"] if k not in ("documents", "tokenizer", "shared_tokenization")]

        def wall(run: dict) -> tuple[float, float]:  # (shared pass, builders): a pool's builders run at once
            builders = run["timings"].get("builders", sum(run["timings"][k] for k in tasks))
            return run["timings"].get("shared_tokenization", 0.0), builders

        for num_proc, run in runs.items():
            (shared, builders), (shared_one, builders_one) = wall(run), wall(one)
            print(f"num_proc {num_proc}: shared pass + builders {shared + builders:.1f} s wall "
                  f"({(shared_one + builders_one) / (shared + builders):.2f}x num_proc {args.num_proc[0]}; shared "
                  f"pass {shared_one / max(shared, 1e-9):.2f}x, builders {builders_one / builders:.2f}x), main "
                  f"process peak anonymous {run['peak_anon_mb']:.0f} MB, per worker "
                  f"{run['worker_peak_anon_mb']:.0f} MB; each task's own time in its worker against one process: "
                  + ", ".join(f"{k} {one['timings'][k] / run['timings'][k]:.2f}x" for k in tasks))
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
