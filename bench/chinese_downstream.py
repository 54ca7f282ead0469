"""Chinese end to end: pretrain the debug encoder on the law corpus, fine-tune it on ChnSentiCorp, OCNLI and C3.

    python bench/chinese_downstream.py [--steps-per-task 200] [--finetune-steps 400] [--seeds 0 1]
                                       [--out docs/RESULTS.md]

1. ``configs/ernie2_zh_debug.yaml`` as it is (the five Chinese ERNIE 2.0 tasks in three stages over the law
   corpus's train split, debug encoder 2 x 128, batch 32, sequence 128), ``--steps-per-task`` steps per task.
2. The control: the same run stopped at step 0 (``pretrain(stop_at=0)``: the initialization, same tokenizer,
   same seed), so the table shows what the pretraining itself is worth.
3. Each encoder fine-tuned on each of the three Chinese sets alone through the same ``ernie-cmtl finetune``
   code, one run per task and seed; dev accuracy against the majority-class (ChnSentiCorp, OCNLI) and
   most-common-answer-position (C3) baselines. (Multi-task over the three, 600 steps at lr 1e-3, left
   ChnSentiCorp at its majority class: about 200 steps of it, and this encoder needs ~300 to take off.)

The table goes to ``--out`` (its section replaced in place); runs and results.json stay under ``--work``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from sections import finished, publish, spread

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
LAW = DATA / "chinese-laws-lawrefbook" / "train"
TASKS = ["chnsenticorp", "ocnli", "c3"]
NAMES = {"chnsenticorp": "ChnSentiCorp", "ocnli": "OCNLI", "c3": "C3"}
SECTION = "## Chinese: the law-pretrained debug encoder on ChnSentiCorp, OCNLI and C3"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps-per-task", type=int, default=200, help="pretraining steps per task (5 tasks)")
    parser.add_argument("--finetune-steps", type=int, default=400, help="per task")
    parser.add_argument("--finetune-batch", type=int, default=32)
    parser.add_argument("--finetune-seq-len", type=int, default=128)
    parser.add_argument("--finetune-lr", type=float, default=1e-3,
                        help="peak lr (2e-3, the session-6 protocol, leaves this encoder at the majority class on "
                             "some seeds, with either vocabulary: docs/RESULTS.md)")
    parser.add_argument("--max-train-examples", type=int, default=8000, help="per task (seeded subset)")
    parser.add_argument("--max-eval-examples", type=int, default=1000, help="per task (seeded dev subset)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="fine-tuning seeds")
    parser.add_argument("--encoders", nargs="+", default=["pretrained", "initialization"],
                        choices=["pretrained", "initialization"], help="which encoders to pretrain and fine-tune")
    parser.add_argument("--tasks", nargs="+", default=TASKS, choices=TASKS, help="which Chinese sets to fine-tune on")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "chinese_downstream")
    parser.add_argument("--cache-dir", type=Path, default=REPO / "runs" / "chinese_downstream" / "cache",
                        help="data.cache_dir: the built examples, reused by reruns")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a pretraining config override, repeatable (e.g. tokenizer.chinese_seed_characters=0 "
                             "for a vocabulary of the law corpus's own characters only)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "RESULTS.md")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")

    from downstream.finetune import load_finetune_config
    from ernie_cmtl import api
    from ernie_cmtl.checkpoint import resolve_checkpoint

    started = time.perf_counter()
    config_file = REPO / "configs" / "ernie2_zh_debug.yaml"
    overrides = [f"schedule.steps_per_task={args.steps_per_task}", f"data.cache_dir={args.cache_dir}",
                 *args.override]
    encoders = {name: args.work / name for name in args.encoders}
    timings: dict[str, float] = {}
    km_loss: list[float] = []
    for name, run_dir in encoders.items():
        t0 = time.perf_counter()
        if not (run_dir / "checkpoints").is_dir():
            config = api.configure(config_file, overrides, [str(LAW)], run_dir)
            result = api.pretrain(config, stop_at=0 if name == "initialization" else None, progress=False)
            if name == "pretrained":
                km_loss = [e["knowledge_masking"]["loss"] for e in result.eval_history]
        timings[f"{name} pretraining"] = (time.perf_counter() - t0) / 60
        print(f"{name}: ready ({timings[f'{name} pretraining']:.1f} min)", file=sys.stderr, flush=True)

    rows: dict[str, dict[str, list[float]]] = {}
    baselines: dict[str, float] = {}
    for name, run_dir in encoders.items():
        rows[name] = {t: [] for t in TASKS}
        t0 = time.perf_counter()
        for task in args.tasks:
            for seed in args.seeds:
                ft = load_finetune_config(None, [
                    f"tasks=[{task}]", f"seed={seed}", f"max_steps={args.finetune_steps}", f"lr={args.finetune_lr}",
                    f"batch_size={args.finetune_batch}", f"max_seq_len={args.finetune_seq_len}", "eval_every=0",
                    f"max_train_examples={args.max_train_examples}", f"max_eval_examples={args.max_eval_examples}",
                    f"run_dir={args.work / f'{name}_{task}_ft{seed}'}", f"chnsenticorp_dir={DATA / 'chnsenticorp'}",
                    f"ocnli_dir={DATA / 'ocnli'}", f"c3_dir={DATA / 'c3'}"])
                checkpoint = resolve_checkpoint(run_dir.resolve())[0]  # as results.json names it
                result = (finished(Path(ft.run_dir), checkpoint, ft)
                          or api.finetune(checkpoint, [task], ft, progress=False))
                rows[name][task].append(result["dev"][task]["accuracy"])
                baselines[task] = result["baseline"][task]["accuracy"]
                print(f"{name} {task} seed {seed}: {result['dev'][task]['accuracy']:.3f} "
                      f"(baseline {baselines[task]:.3f})", file=sys.stderr, flush=True)
        timings[f"{name} fine-tuning"] = (time.perf_counter() - t0) / 60

    elapsed = (time.perf_counter() - started) / 60
    command = "python bench/chinese_downstream.py " + " ".join(sys.argv[1:])
    lines = [SECTION, "",
             f"Reproduce: `{command.strip()}` ({elapsed:.0f} min on this machine, 2 cores; "
             + "; ".join(f"{k} {v:.1f} min" for k, v in timings.items()) + ").", "",
             f"Pretraining: `configs/ernie2_zh_debug.yaml` (debug encoder 2 x 128, WordPiece 8,000 with every CJK "
             f"character its own token, the five Chinese ERNIE 2.0 tasks in three stages, "
             f"{args.steps_per_task} steps per task at batch 32, sequence 128) on the law corpus's train split"
             + (f", with {', '.join(f'`{o}`' for o in args.override)}" if args.override else "") + ". "
             "Initialization: the same run stopped at step 0 (same tokenizer and seed, no training). "
             f"Fine-tuning: each set alone, {args.finetune_steps} steps, batch {args.finetune_batch}, peak lr "
             f"{args.finetune_lr:g}, sequence length {args.finetune_seq_len}, <= {args.max_train_examples} train "
             f"examples (OCNLI from its train.10k file), a seeded subset of <= {args.max_eval_examples} dev "
             f"examples, seeds {args.seeds}. Dev accuracy x100 (mean ± standard deviation over the seeds).", "",
             "| encoder | " + " | ".join(NAMES[t] for t in args.tasks) + " |", "|---|" + "---|" * len(args.tasks)]
    for name, scores in rows.items():
        label = "law-pretrained debug encoder" if name == "pretrained" else "its initialization (step 0)"
        lines.append(f"| {label} | " + " | ".join(spread(scores[t]) for t in args.tasks) + " |")
    lines.append("| majority class / answer position | "
                 + " | ".join(f"{100 * baselines[t]:.1f}" for t in args.tasks) + " |")
    lines += ["", "Per seed (" + " / ".join(str(s) for s in args.seeds) + "): " + "; ".join(
        f"{name} {NAMES[t]} " + " / ".join(f"{100 * v:.1f}" for v in scores[t])
        for name, scores in rows.items() for t in args.tasks) + "."]
    if km_loss:
        lines += ["", "Held-out knowledge-masking loss during pretraining: "
                  + " → ".join(f"{v:.2f}" for v in (km_loss[0], km_loss[-1])) + "."]
    publish(lines, args.out, args.work, {"rows": rows, "baseline": baselines, "timings": timings,
                                         "km_loss": km_loss})


if __name__ == "__main__":
    main()
