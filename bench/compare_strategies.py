"""Does continual multi-task pretraining pay off downstream? The strategy comparison at equal compute.

    python bench/compare_strategies.py [--pretrain-steps 700] [--finetune-steps 1200] [--seeds 0 1 2]
                                       [--max-documents 3000] [--out docs/RESULTS.md]

The same debug-size encoder is pretrained on the shared Wikipedia sample under five strategies with the same
total number of steps and the same pretraining seed:

  mlm_only          knowledge masking alone
  continual         the seven tasks one stage after another (4 stages), each alone
  multitask         all seven tasks from step 0, mixed
  cmtl              ERNIE 2.0 continual multi-task learning (4 stages, the ERNIE allocation)
  cmtl_mlm_always   cmtl with masked-LM kept in every stage (always_include)

then each encoder is fine-tuned (MT-DNN multi-task, hard sharing) on SST-2, CoLA, MRPC, RTE and STS-B with
every fine-tuning seed, and the table (mean ± spread of each task's dev score and of the GLUE average) goes to
``--out`` together with each strategy's pretraining forgetting (max held-out loss above the task's best, per
task, after the task's introduction). Everything runs on this machine's CPU; the defaults are sized to finish
in under two hours on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from sections import publish, spread

REPO = Path(__file__).resolve().parents[1]
WIKI = REPO.parent / "shared" / "data" / "wikipedia-en-2018-sample" / "train"
GLUE = ["sst2", "cola", "mrpc", "rte", "stsb"]
ALL_TASKS = ["knowledge_masking", "capitalization", "token_document_relation", "sentence_reordering",
             "sentence_distance", "discourse_relation", "ir_relevance"]
STAGES = "[knowledge_masking, [capitalization, token_document_relation], [sentence_reordering, " \
         "sentence_distance], [discourse_relation, ir_relevance]]"


def strategy_overrides(name: str, total: int) -> list[str]:
    """Config overrides of one strategy; every strategy trains exactly ``total`` steps."""
    tasks = "tasks={" + ", ".join(f"{t}: {{}}" for t in ALL_TASKS) + "}"
    if name == "mlm_only":
        return ["tasks={knowledge_masking: {}}", "schedule.strategy=multitask", "schedule.stages=[]",
                f"schedule.total_steps={total}", "schedule.steps_per_task=0"]
    common = [tasks, f"schedule.total_steps={total}", "schedule.steps_per_task=0"]
    if name == "continual":
        return [*common, "schedule.strategy=continual", f"schedule.stages={STAGES}"]
    if name == "multitask":
        return [*common, "schedule.strategy=multitask", "schedule.stages=[]"]
    if name == "cmtl":
        return [*common, "schedule.strategy=cmtl", f"schedule.stages={STAGES}"]
    if name == "cmtl_mlm_always":
        stages = STAGES.replace("[knowledge_masking, ", "[")
        return [*common, "schedule.strategy=cmtl", f"schedule.stages={stages}",
                "schedule.always_include=[knowledge_masking]"]
    raise ValueError(name)


STRATEGIES = ["mlm_only", "continual", "multitask", "cmtl", "cmtl_mlm_always"]


def max_forgetting(run_dir: Path) -> dict[str, float]:
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    introduced: dict[str, int] = {}  # the step of the stage that introduces each task
    for r in records:
        if r["kind"] == "stage":
            for task in r["new_tasks"]:
                introduced.setdefault(task, r["step"])
    out: dict[str, float] = {}
    for r in records:
        if r["kind"] == "valid" and r["task"] in introduced and r["step"] > introduced[r["task"]]:
            out[r["task"]] = max(out.get(r["task"], 0.0), r["forgetting"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain-steps", type=int, default=700)
    parser.add_argument("--finetune-steps", type=int, default=1200)
    parser.add_argument("--finetune-seq-len", type=int, default=64,
                        help="GLUE sentences are short; 64 tokens halves the cost of 128 (RTE pairs are truncated)")
    parser.add_argument("--finetune-lr", type=float, default=5e-4,
                        help="peak fine-tuning learning rate. Chosen on the mlm_only encoder, seed 0, 1200 steps: "
                             "SST-2 dev 0.742 at 5e-4, 0.662 at 1e-3, majority (0.509) at 2e-3")
    parser.add_argument("--pair-head", choices=["match", "cls"], default="match",
                        help="output layer of MRPC, RTE and STS-B (FinetuneConfig.pair_head): [CLS] plus "
                             "soft-match features, or [CLS] alone")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fine-tuning seeds")
    parser.add_argument("--max-documents", type=int, default=3000)
    parser.add_argument("--max-train-examples", type=int, default=8000, help="per GLUE task")
    parser.add_argument("--strategies", nargs="+", default=STRATEGIES, choices=STRATEGIES)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "compare_strategies")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "RESULTS.md")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")

    from downstream.finetune import load_finetune_config
    from ernie_cmtl import api

    started = time.perf_counter()
    rows, forgetting, timings, reused = {}, {}, {}, []
    for name in args.strategies:
        run_dir = args.work / name
        config = api.configure(REPO / "configs" / "default.yaml",
                               [f"data.max_documents={args.max_documents}", "data.valid_fraction=0.05",
                                "tasks.discourse_relation.min_class_examples=50", "train.eval_every=100",
                                "train.save_every=100000", "monitor.affinity_every=0",
                                *strategy_overrides(name, args.pretrain_steps)],
                               [str(WIKI)], run_dir)
        t0 = time.perf_counter()
        if (run_dir / "checkpoints").is_dir():
            reused.append(name)
        else:
            api.pretrain(config, progress=False)
        timings[name] = {"pretrain_s": time.perf_counter() - t0}
        forgetting[name] = max_forgetting(run_dir)
        scores: dict[str, list[float]] = {t: [] for t in [*GLUE, "glue"]}
        t0 = time.perf_counter()
        for seed in args.seeds:
            ft = load_finetune_config(None, [f"seed={seed}", f"max_steps={args.finetune_steps}", f"lr={args.finetune_lr}",
                                             f"pair_head={args.pair_head}",
                                             f"max_seq_len={args.finetune_seq_len}",
                                             f"max_train_examples={args.max_train_examples}",
                                             f"run_dir={args.work / f'{name}_ft{seed}'}",
                                             f"glue_dir={REPO.parent / 'shared' / 'data' / 'glue'}"])
            result = api.finetune(run_dir, GLUE, ft, progress=False)
            for task in GLUE:
                scores[task].append(result["dev"][task]["score"])
            scores["glue"].append(result["glue_score"])
        timings[name]["finetune_s"] = time.perf_counter() - t0
        rows[name] = scores
        print(f"{name}: GLUE {spread(scores['glue'])} ({timings[name]})", file=sys.stderr)

    elapsed = time.perf_counter() - started
    command = "python bench/compare_strategies.py " + " ".join(sys.argv[1:])
    lines = ["# Strategy comparison: downstream GLUE after equal-compute pretraining", "",
             f"Reproduce: `{command.strip()}` ({elapsed / 60:.0f} min on this machine"
             + (f"; the pretraining runs of {', '.join(reused)} were reused from {args.work.name}/ and their "
                "time is not included" if reused else "") + ").", "",
             f"Pretraining: debug encoder (2 x 128), {args.pretrain_steps} steps per strategy, batch 32, seq 128, "
             f"{args.max_documents} Wikipedia documents, seed 0. Fine-tuning: MT-DNN multi-task (hard sharing), "
             f"{args.finetune_steps} steps at peak lr {args.finetune_lr:g}, sequence length {args.finetune_seq_len}, "
             f"pair head `{args.pair_head}`, "
             f"<= {args.max_train_examples} train "
             f"examples per task, seeds "
             f"{args.seeds}. Scores: dev accuracy (SST-2, RTE), Matthews corr. (CoLA), mean of accuracy and F1 "
             "(MRPC), mean of Pearson and Spearman (STS-B); mean ± standard deviation over seeds, x100.", "",
             "| strategy | " + " | ".join(t.upper() for t in GLUE) + " | GLUE avg |",
             "|---|" + "---|" * (len(GLUE) + 1)]
    for name, scores in rows.items():
        lines.append(f"| {name} | " + " | ".join(spread(scores[t]) for t in GLUE) + f" | {spread(scores['glue'])} |")
    lines += ["", "Pretraining forgetting (max held-out loss above the task's best after its introduction):", "",
              "| strategy | " + " | ".join(ALL_TASKS) + " |", "|---|" + "---|" * len(ALL_TASKS)]
    for name, values in forgetting.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[t]:.3f}" if t in values else "–" for t in ALL_TASKS)
                     + " |")
    publish(lines, args.out, args.work, {"rows": rows, "forgetting": forgetting, "timings": timings})


if __name__ == "__main__":
    main()
