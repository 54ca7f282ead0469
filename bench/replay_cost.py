"""What replay (``preserve.replay_corpus``, ``preserve.replay_fraction``) costs: build time and step time.

    python bench/replay_cost.py [--documents 1500] [--fraction 0.2] [--steps 80] [--rounds 2]

The run's corpus is the Wikipedia sample's train/ split (the first ``--documents`` substantive articles), the
replay corpus its valid/ split; the default config (knowledge masking, the debug model). First
``ernie-cmtl build-data`` without and with replay, each into a fresh cache (wall time of the whole command);
then ``ernie-cmtl pretrain`` for ``--steps`` steps from those caches, the two arms alternating for ``--rounds``
rounds, each arm's median ``sequences_per_s`` over its logging windows (the first one, warm-up, left out).
Prints both and their ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WIKI = REPO.parent / "shared" / "data" / "wikipedia-en-2018-sample"


def cli(*args: str) -> float:
    """Run ``ernie-cmtl ARGS`` (offline, quiet); its wall time in seconds."""
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
           "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ernie_cmtl.cli", *args, "--quiet"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"ernie-cmtl {args[0]} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=1500, help="data.max_documents of both corpora")
    parser.add_argument("--fraction", type=float, default=0.2, help="preserve.replay_fraction")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="replay_cost_"))
    arms = {"plain": [], "replay": [f"preserve.replay_corpus=[{WIKI / 'valid'}]",
                                    f"preserve.replay_fraction={args.fraction}"]}

    def sets(arm: str, *extra: str) -> list[str]:
        overrides = [f"data.cache_dir={work / ('cache_' + arm)}", f"data.max_documents={args.documents}",
                     *arms[arm], *extra]
        return [a for o in overrides for a in ("--set", o)]

    build = {arm: cli("build-data", "--corpus", str(WIKI / "train"), "--run-dir", str(work / f"build_{arm}"),
                      *sets(arm)) for arm in arms}
    report = json.loads((work / "build_replay" / "data_report.json").read_text())["replay"]
    print(f"build-data, {args.documents} documents, fresh cache: without replay {build['plain']:.1f} s, with "
          f"{build['replay']:.1f} s (+{build['replay'] - build['plain']:.1f} s, x{build['replay'] / build['plain']:.2f}"
          f"); {report['added']} of the replay corpus's {report['replay_examples']} examples joined "
          f"{report['own_examples']}")
    speed: dict[str, list[float]] = {arm: [] for arm in arms}
    for round_ in range(args.rounds):
        for arm in arms:
            run_dir = work / f"pretrain_{arm}_{round_}"
            cli("pretrain", "--corpus", str(WIKI / "train"), "--run-dir", str(run_dir),
                *sets(arm, f"train.max_steps={args.steps}", "train.log_every=10", "train.eval_every=100000"))
            records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
            windows = [r["sequences_per_s"] for r in records if r["kind"] == "train"][1:]
            speed[arm].append(statistics.median(windows))
            print(f"  round {round_ + 1} {arm:7s} {speed[arm][-1]:.1f} sequences/s (median of {len(windows)} windows)")
    plain, replay = statistics.mean(speed["plain"]), statistics.mean(speed["replay"])
    print(f"pretrain, {args.steps} steps x {args.rounds} rounds: without replay {plain:.1f} sequences/s, with "
          f"{replay:.1f} (x{replay / plain:.3f})")


if __name__ == "__main__":
    main()
