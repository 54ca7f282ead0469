"""Corpora that are one very long line (minified dumps): build time against size, 5 MB and 50 MB.

    PYTHONPATH=. python bench/long_lines.py [--sizes-mb 5 50] [--corpus DIR] [--json OUT]

Each corpus is one line of real prose and nothing else: the paragraphs of the shared Wikipedia sample
(``--corpus``; the standard library's docstrings when it is absent) joined by spaces and repeated until the
size is reached. For each size two things are timed:

1. ``build_documents`` alone, in a fresh subprocess: reading in 1 MiB pieces, cutting the line at sentence ends
   into paragraphs of at most ``data.max_paragraph_chars``, documents into parts of ``data.max_document_chars``,
   and the sentence split: the stage a long line could make superlinear, or make hold the whole line. Time and
   the subprocess's peak RSS.
2. ``ernie-cmtl build-data`` with the default config (documents, WordPiece training, the shared tokenization
   pass, knowledge masking) in a fresh subprocess with its own cache: wall time, CPU time and peak RSS.

Then the ratio of each time (and of peak RSS) between the largest and the smallest size, next to the size
ratio: linear time gives a time ratio near the size ratio. For reference, the same text of the smallest size
is also built as ordinary lines (one paragraph per line), the cost of the same bytes in their usual shape;
``--reference-mb`` picks other sizes for that reference (``build_documents`` only beyond the smallest, unless
``--build-data-reference``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "wikipedia-en-2018-sample" / "train"
MB = 1_000_000


def source_paragraphs(corpus: Path) -> list[str]:
    """Real prose: the Wikipedia sample's paragraphs, or the standard library's docstrings without it."""
    from data_builders.corpus import iter_stdlib_documents, read_wikiextractor, resolve_corpus_files

    docs: Iterator[dict] = (
        doc for path in resolve_corpus_files([str(corpus)]) for doc in read_wikiextractor(path, 6)
    ) if corpus.is_dir() else iter_stdlib_documents(6)
    return [p for doc in docs for p in doc["paragraphs"]]


def write_corpus(path: Path, paragraphs: list[str], size: int, one_line: bool) -> None:
    """``size`` bytes of ``paragraphs`` (cycled): one line joined by spaces, or one paragraph per line with a
    blank line every 20 paragraphs (documents)."""
    written, i = 0, 0
    with path.open("w", encoding="utf-8") as fh:
        while written < size:
            text = paragraphs[i % len(paragraphs)]
            i += 1
            sep = " " if one_line else ("\n\n" if i % 20 == 0 else "\n")
            piece = (text + sep)[: size - written]
            fh.write(piece)
            written += len(piece.encode())
        fh.write("\n")


def documents_only(path: Path) -> None:
    """The child side of :func:`time_build_documents`: build, print the measurements as JSON."""
    import resource

    from data_builders.corpus import CorpusReport, build_documents

    report = CorpusReport()
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        ds = build_documents([str(path)], output_dir=out, report=report)
        seconds = time.perf_counter() - start
        documents = len(ds)  # reading the rows back would count the memory-mapped file's pages in the RSS
        del ds
    cut = report.totals()["cut"].get("paragraphs", {"pieces": 0})
    print(json.dumps({"seconds": seconds, "documents": documents, "pieces": cut["pieces"],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def time_build_documents(path: Path) -> dict[str, float]:
    """``build_documents`` on ``path`` in a fresh process (so its peak RSS is its own)."""
    proc = subprocess.run([sys.executable, __file__, "--documents-only", str(path)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"build_documents on {path} failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def time_build_data(path: Path, work: Path) -> dict[str, float]:
    """``ernie-cmtl build-data`` in a fresh process: wall, CPU (user + system) and peak RSS of that process, and
    its peak anonymous and file-backed RSS sampled from ``/proc`` (file-backed pages are the memory-mapped Arrow
    files it has read: page cache the kernel can drop, which grows with the corpus whatever its shape)."""
    sys.path.insert(0, str(REPO))
    from bench.build_throughput import AnonymousMemorySampler

    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "ernie_cmtl.cli", "build-data", "--config", str(REPO / "configs" / "default.yaml"),
           "--corpus", str(path), "--run-dir", str(work / "run"), "--set", f"data.cache_dir={work / 'cache'}",
           "--quiet"]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        sampler = AnonymousMemorySampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        sampler.stop()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"build-data on {path} exited {code}: {stderr.strip()[-2000:]}")
    examples = next((line for line in stdout.splitlines() if line.startswith("knowledge_masking:")), "")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024,
            "peak_anon_mb": sampler.peak_mb, "peak_file_mb": sampler.file_peak_mb,
            "exit_code": code, "knowledge_masking": examples.split(";")[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[5, 50])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--reference-mb", type=float, nargs="*", help="sizes of the ordinary-lines reference "
                        "(default: the smallest size; none: no reference)")
    parser.add_argument("--no-build-data", action="store_true", help="time build_documents only")
    parser.add_argument("--build-data-reference", action="store_true", help="also run build-data on every "
                        "reference size (default: on the smallest only)")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    parser.add_argument("--documents-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.documents_only:
        documents_only(args.documents_only)
        return
    references = [min(args.sizes_mb)] if args.reference_mb is None else args.reference_mb

    paragraphs = source_paragraphs(args.corpus)
    print(f"source: {args.corpus if args.corpus.is_dir() else 'standard-library docstrings'}, "
          f"{len(paragraphs)} paragraphs; python {sys.version.split()[0]}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="ernie-cmtl-long-lines-") as tmp:
        root = Path(tmp)
        shapes = [(size, True) for size in args.sizes_mb] + [(size, False) for size in references]
        for size_mb, one_line in shapes:
            name = f"{size_mb:g}MB {'one line' if one_line else 'ordinary lines'}"
            path = root / f"{size_mb:g}mb_{'line' if one_line else 'lines'}.txt"
            write_corpus(path, paragraphs, int(size_mb * MB), one_line)
            docs = time_build_documents(path)
            print(f"{name}: build_documents {docs['seconds']:.2f}s, peak RSS {docs['peak_rss_mb']:.0f} MB "
                  f"({docs['documents']} documents, {docs['pieces']} cut pieces)", flush=True)
            results[name] = {"size_mb": size_mb, "one_line": one_line, "build_documents": docs}
            if not args.no_build_data and (one_line or args.build_data_reference or size_mb == min(args.sizes_mb)):
                full = time_build_data(path, root / f"work_{len(results)}")
                print(f"{name}: build-data wall {full['wall_s']:.1f}s, cpu {full['cpu_s']:.1f}s, peak RSS "
                      f"{full['peak_rss_mb']:.0f} MB (anonymous {full['peak_anon_mb']:.0f} MB, file-backed "
                      f"{full['peak_file_mb']:.0f} MB; {full['knowledge_masking']})", flush=True)
                results[name]["build_data"] = full
            path.unlink()

    lines = [r for r in results.values() if r["one_line"]]
    small, large = min(lines, key=lambda r: r["size_mb"]), max(lines, key=lambda r: r["size_mb"])
    if large is not small:
        size_ratio = large["size_mb"] / small["size_mb"]
        ratios = {
            "build_documents s": large["build_documents"]["seconds"] / small["build_documents"]["seconds"],
            "build_documents peak RSS": large["build_documents"]["peak_rss_mb"] / small["build_documents"]["peak_rss_mb"],
        }
        if "build_data" in large:
            ratios.update({
                "build-data cpu s": large["build_data"]["cpu_s"] / small["build_data"]["cpu_s"],
                "build-data wall s": large["build_data"]["wall_s"] / small["build_data"]["wall_s"],
                "build-data peak RSS": large["build_data"]["peak_rss_mb"] / small["build_data"]["peak_rss_mb"],
                "build-data peak anonymous": large["build_data"]["peak_anon_mb"] / small["build_data"]["peak_anon_mb"],
            })
        print(f"\n{large['size_mb']:g} MB / {small['size_mb']:g} MB: size ratio {size_ratio:.1f}")
        for key, value in ratios.items():
            print(f"  {key}: ratio {value:.2f}")
        results["ratios"] = {"size": size_ratio, **ratios}
    shape = {}
    for line in lines:  # the same bytes as one line and as ordinary lines: what the line's shape costs
        reference = results.get(f"{line['size_mb']:g}MB ordinary lines")
        if reference and "build_data" in line and "build_data" in reference:
            one, many = line["build_data"], reference["build_data"]
            size = f"{line['size_mb']:g}MB"
            shape[size] = {key: one[key] / many[key] for key in
                           ("cpu_s", "peak_rss_mb", "peak_anon_mb", "peak_file_mb")}
            print(f"{size}, one line / ordinary lines: build-data cpu {shape[size]['cpu_s']:.2f}x, "
                  f"peak RSS {one['peak_rss_mb']:.0f} / "
                  f"{many['peak_rss_mb']:.0f} MB, anonymous {one['peak_anon_mb']:.0f} / {many['peak_anon_mb']:.0f} "
                  f"MB, file-backed {one['peak_file_mb']:.0f} / {many['peak_file_mb']:.0f} MB")
    results["one_line_over_ordinary"] = shape
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
