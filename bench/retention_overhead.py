"""Overhead of the retention monitor (``retention/*``) on a ``configs/continue_hf.yaml`` run: seconds per
evaluation with and without it, measured interleaved in one warm process on the same trainer.

    python bench/retention_overhead.py --max-documents 1500 --repeats 3

The evaluation's cost does not depend on the corpus size (``train.eval_batches`` batches per task), nor does
the monitor's (``monitor.retention.drift_sequences`` held-out sequences, the pair set), so a part of the
Wikipedia sample gives the per-evaluation figures of the whole run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init-from", default=str(ROOT.parent / "coord" / "models" / "all-MiniLM-L6-v2"))
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "data" / "wikipedia-en-2018-sample" / "train"))
    parser.add_argument("--max-documents", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run-dir", default="/tmp/retention_overhead")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    args = parser.parse_args()

    from ernie_cmtl import api
    from ernie_cmtl.assembly import settle_run
    from ernie_cmtl.hf import load_hf_model
    from ernie_cmtl.trainer import Trainer

    config = api.configure(ROOT / "configs" / "continue_hf.yaml",
                           [f"model.init_from={args.init_from}", f"data.max_documents={args.max_documents}",
                            f"monitor.retention.pairs={ROOT.parent / 'shared/data/glue/STS-B/dev.tsv'}",
                            *args.overrides], [args.corpus], args.run_dir)
    data = api.build_data(config, progress=False)
    config, plan = settle_run(config, data)
    trainer = Trainer(config, data, Path(args.run_dir), plan, init_model=load_hf_model(args.init_from))
    start = time.perf_counter()
    probe = trainer._retention_probe()
    assert probe is not None
    setup = time.perf_counter() - start
    encoder = trainer.engine.module.encoder
    evaluation, retention = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        trainer.evaluate()
        evaluation.append(time.perf_counter() - start)
        start = time.perf_counter()
        values = probe.measure(encoder)
        retention.append(time.perf_counter() - start)
    e, r = statistics.median(evaluation), statistics.median(retention)
    cfg = config.monitor.retention
    print(f"tasks {len(trainer.task_names)}, eval_batches {config.train.eval_batches} x batch "
          f"{config.train.batch_size}; retention: {len(probe.held_out)} held-out sequences, "
          f"{len(probe.pairs.scores) if probe.pairs else 0} pairs (drift_sequences {cfg.drift_sequences})")
    print(f"source states (once): {setup:.2f}s")
    print(f"evaluation without retention: median {e:.2f}s {[round(x, 2) for x in evaluation]}")
    print(f"retention measurement:        median {r:.2f}s {[round(x, 2) for x in retention]}")
    print(f"overhead per evaluation: +{r / e:.0%}; values at step 0: {values}")


if __name__ == "__main__":
    main()
