"""What monitoring costs per training step, measured side by side in one process.

    python bench/logging_overhead.py [--steps 100] [--rounds 3] [--corpus FILES...]

Three trainers on the same data and model, run in interleaved rounds of ``--steps`` steps each (so machine
noise hits all of them), evaluation and checkpoints pushed out of the window:
  off       metrics.jsonl only at a huge interval, wandb disabled, no affinity  (the floor)
  logging   the default interval (train.log_every=10): metrics.jsonl + wandb offline
  affinity  logging + task-gradient affinity at the default interval (monitor.affinity_every=50)
Prints the median milliseconds per step of each mode, its overhead relative to ``off`` by medians, and the
paired overhead (the median over rounds of each round's ratio to that round's ``off``), which cancels slow
drifts of the machine. The order of the modes rotates from round to round. Target: logging < 3%.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WIKI = REPO.parent / "shared" / "data" / "wikipedia-en-2018-sample" / "train"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--corpus", nargs="+", default=[str(WIKI / "wiki_00"), str(WIKI / "wiki_01")])
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from ernie_cmtl import api
    from ernie_cmtl.assembly import settle_run
    from ernie_cmtl.build.prepare import prepare_data
    from ernie_cmtl.monitor import Monitor
    from ernie_cmtl.trainer import Trainer

    work = Path(tempfile.mkdtemp(prefix="ernie-logbench-"))
    total = args.steps * args.rounds
    base = ["data.max_documents=600", f"data.cache_dir={work / 'cache'}", "train.eval_every=100000",
            "train.eval_batches=1",
            "train.save_every=100000", "schedule.strategy=multitask", "schedule.steps_per_task=0", "schedule.stages=[]",
            f"schedule.total_steps={total}",
            "tasks={knowledge_masking: {}, capitalization: {}, sentence_reordering: {}}"]
    modes = {
        "off": ["train.log_every=100000", "monitor.wandb.enabled=false", "monitor.affinity_every=0"],
        "logging": ["train.log_every=10", "monitor.wandb.enabled=true", "monitor.wandb.mode=offline",
                    "monitor.affinity_every=0"],
        "affinity": ["train.log_every=10", "monitor.wandb.enabled=true", "monitor.wandb.mode=offline",
                     "monitor.affinity_every=50"],
    }
    trainers, monitors = {}, {}
    for name, extra in modes.items():
        config = api.configure(REPO / "configs" / "default.yaml", [*base, *extra], args.corpus, work / name)
        run_dir = Path(config.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        data = prepare_data(config, run_dir, progress=False)
        config, plan = settle_run(config, data)
        trainers[name] = Trainer(config, data, run_dir, plan)
        monitors[name] = Monitor(run_dir, config.monitor, config.to_dict())
    per_step: dict[str, list[float]] = {name: [] for name in modes}
    names = list(modes)
    for round_index in range(args.rounds):
        # rotate the order each round, so no mode always runs first (or right after the heaviest one)
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            trainer = trainers[name]
            end = (round_index + 1) * args.steps
            start = time.perf_counter()
            trainer._train(end, monitors[name], progress=False)
            per_step[name].append((time.perf_counter() - start) / args.steps)
    for monitor in monitors.values():
        monitor.close()
    floor = statistics.median(per_step["off"])
    print(f"{args.rounds} interleaved rounds of {args.steps} steps, debug model, batch 32, 3 tasks")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print(f"{'mode':<10}{'ms/step (median)':>18}{'overhead':>10}{'paired':>9}   rounds (ms/step)")
    for name, values in per_step.items():
        median = statistics.median(values)
        # paired: each round's ratio to the same round's ``off``, then the median over rounds
        paired = statistics.median(v / o for v, o in zip(values, per_step["off"], strict=True))
        print(f"{name:<10}{median * 1000:>18.1f}{(median / floor - 1) * 100:>9.1f}%{(paired - 1) * 100:>8.1f}%   "
              + ", ".join(f"{v * 1000:.1f}" for v in values))


if __name__ == "__main__":
    main()
