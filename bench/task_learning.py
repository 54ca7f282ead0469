"""Does each pretraining task learn? Short single-task runs on the real Wikipedia sample, loss against chance.

    python bench/task_learning.py [--tasks knowledge_masking capitalization ...] [--steps 400]
                                  [--documents 400] [--json OUT]

Each task trains alone, from scratch, on the same small encoder (2 layers x 128, 4 heads, FFN 512, batch 16,
peak lr 1e-3) over the first ``--documents`` substantive articles of the sample (90% train / 10% held out by
document). Printed per task: its chance loss (ln of the number of classes present, or for knowledge masking
ln of the vocabulary), the label prior's entropy (the best loss without looking at the input), the mean
training loss over the first and the last 10% of steps, the final held-out loss, and
whether training loss ended clearly below chance (below 0.9 x chance). Held-out loss is the honest figure:
on a few hundred documents, a training loss below chance can also mean memorised examples.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WIKI = REPO.parent / "shared" / "data" / "wikipedia-en-2018-sample" / "train"
TASKS = ["knowledge_masking", "capitalization", "token_document_relation", "sentence_reordering",
         "sentence_distance", "discourse_relation", "ir_relevance"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=TASKS, choices=TASKS)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--documents", type=int, default=400)
    parser.add_argument("--corpus", nargs="+", default=[str(WIKI)])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")

    from ernie_cmtl import api

    work = Path(tempfile.mkdtemp(prefix="ernie-tasklearn-"))
    rows = []
    for name in args.tasks:
        # discourse markers are rare: the small sample keeps classes with >= 5 examples
        extra = ["tasks.discourse_relation.min_class_examples=5"] if name == "discourse_relation" else []
        task_section = "{" + name + ": {}}"
        config = api.configure(None, [
            "model.hidden_size=128", "model.num_heads=4", "model.intermediate_size=512", "model.num_layers=2",
            "train.batch_size=16", "train.lr=1e-3", "train.warmup_steps=20", f"train.max_steps={args.steps}",
            f"train.eval_every={args.steps}", "train.eval_batches=16", "train.save_every=1000000",
            "tokenizer.vocab_size=8000", f"data.max_documents={args.documents}", "data.valid_fraction=0.1",
            f"data.cache_dir={work / 'cache'}", "monitor.wandb.enabled=false", f"tasks={task_section}",
            *extra],
            args.corpus, work / name)
        data = api.build_data(config, progress=False)  # cached: pretrain below loads it again
        task = data.tasks[name]
        if name == "knowledge_masking":
            chance, prior = math.log(task.num_labels), None  # uniform over the vocabulary
        else:
            counts = [c for c in task.label_counts(data.train[name]).values() if c > 0]
            total = sum(counts)
            chance = math.log(len(counts))  # uniform over the classes present
            prior = -sum(c / total * math.log(c / total) for c in counts)  # the best input-blind loss
        started = time.perf_counter()
        result = api.pretrain(config, progress=False)
        seconds = time.perf_counter() - started
        losses = [loss for _, _, loss in result.losses]
        tenth = max(1, len(losses) // 10)
        final = result.eval_history[-1][name]
        row = {"task": name, "chance": chance, "prior_entropy": prior,
               "train_first": statistics.mean(losses[:tenth]),
               "train_last": statistics.mean(losses[-tenth:]), "valid": final["loss"],
               "valid_accuracy": final.get("accuracy"), "steps": len(losses), "seconds": seconds}
        rows.append(row)
        print(json.dumps(row), flush=True)

    print(f"\n{args.documents} documents, {args.steps} steps each, encoder 2 x 128")
    print(f"{'task':<26}{'chance':>8}{'prior':>7}{'train first':>13}{'train last':>12}{'held-out':>10}"
          f"{'acc':>7}  train < 0.9 chance")
    for r in rows:
        accuracy = f"{r['valid_accuracy']:.3f}" if r["valid_accuracy"] is not None else "–"
        prior = f"{r['prior_entropy']:.3f}" if r["prior_entropy"] is not None else "–"
        verdict = "yes" if r["train_last"] < 0.9 * r["chance"] else "NO"
        print(f"{r['task']:<26}{r['chance']:>8.3f}{prior:>7}{r['train_first']:>13.3f}{r['train_last']:>12.3f}"
              f"{r['valid']:>10.3f}{accuracy:>7}  {verdict}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
