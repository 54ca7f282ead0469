"""Is there a signal to learn? Lexical baselines for the pair tasks of a run, on its own built examples.

    python bench/task_signal.py RUN_DIR [--max-train 20000]

For sentence distance (adjacent / same document / other document), IR relevance (a title query against a passage
of its own document / a BM25-retrieved passage of another / a random one) and discourse relation (the first
segment against the second, connective removed), the features are what any bag-of-words model sees: the two
segments' lengths, their shared tokens (count, Jaccard, share of each side) and the same over tokens rarer than
the median document frequency. A scikit-learn logistic regression fit on the train split, scored on the valid
split, against the majority label. A task whose lexical baseline is well above its majority has labels that
carry signal, so an encoder at chance on it has not learned it yet (too few steps), rather than facing noise;
one whose baseline sits at the majority gives no such evidence either way.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

TASKS = ("sentence_distance", "ir_relevance", "discourse_relation")


def pair_features(rows: dict[str, list], document_frequency: Counter, rare_below: int) -> np.ndarray:
    """One row of lexical features per example: segment 0 against segment 1 of its ``input_ids``."""
    out = []
    for ids, segments in zip(rows["input_ids"], rows["segment_ids"], strict=True):
        a = {t for t, s in zip(ids[1:-1], segments[1:-1], strict=True) if s == 0}
        b = {t for t, s in zip(ids[1:-1], segments[1:-1], strict=True) if s == 1}
        shared = a & b
        rare_a = {t for t in a if document_frequency[t] < rare_below}
        rare_b = {t for t in b if document_frequency[t] < rare_below}
        rare = rare_a & rare_b
        out.append([len(a), len(b), len(shared), len(shared) / max(len(a | b), 1), len(shared) / max(len(a), 1),
                    len(shared) / max(len(b), 1), len(rare), len(rare) / max(len(rare_a | rare_b), 1)])
    return np.log1p(np.asarray(out, dtype=np.float64))


def signal(train: dict[str, list], valid: dict[str, list]) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frequency: Counter = Counter(t for ids in train["input_ids"] for t in set(ids))
    rare_below = int(np.median(list(frequency.values())))
    x_train, x_valid = (pair_features(rows, frequency, rare_below) for rows in (train, valid))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(x_train, train["label"])
    counts = Counter(valid["label"])
    return {"train": len(x_train), "valid": len(x_valid),
            "lexical_accuracy": float(model.score(x_valid, valid["label"])),
            "majority_accuracy": max(counts.values()) / len(valid["label"]), "classes": len(counts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a pretraining run directory (its config.yaml and cached data)")
    parser.add_argument("--max-train", type=int, default=20000, help="train examples per task (the first N)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from ernie_cmtl import api
    from ernie_cmtl.build.prepare import prepare_data

    config = api.configure(args.run_dir / "config.yaml")
    data = prepare_data(config, args.run_dir, progress=False)
    results = {}
    print(f"{'task':22s} {'train':>7s} {'valid':>6s} {'lexical':>8s} {'majority':>9s}")
    for task in TASKS:
        if task not in data.train:
            continue
        train = data.train[task].select(range(min(args.max_train, len(data.train[task]))))
        columns = ["input_ids", "segment_ids", "label"]
        results[task] = r = signal(train.select_columns(columns)[:], data.valid[task].select_columns(columns)[:])
        print(f"{task:22s} {r['train']:7d} {r['valid']:6d} {100 * r['lexical_accuracy']:8.1f} "
              f"{100 * r['majority_accuracy']:9.1f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
