"""Replay on a narrow domain: continued masked-LM pretraining of all-MiniLM-L6-v2 on movie-review text, with and
without general text (Wikipedia) replayed into the stream.

    python bench/replay_domain.py [--steps 300] [--arms domain replay0.5] [--work runs/replay_domain]

The domain corpus is SST-2's training sentences (GLUE, movie-review phrases), 20 consecutive lines a document,
written once to ``--work``. Every arm is ``configs/continue_hf.yaml`` with knowledge masking alone (as the
``mlm_only`` arm of bench/continue_pretraining.py) for ``--steps`` steps, retention monitored against MiniLM
(zero-shot STS-B dev, drift). Arms: ``domain`` (no retention method), ``replayF`` (``preserve.replay_fraction=F``
of the Wikipedia sample's train/ split), ``distillM`` (distillation from MiniLM at weight M), or both joined by
``_`` (``replay0.5_distill0.1``). Runs are reused by name and resume, so one invocation per arm can run beside
the others. Prints, per arm, at the end: the held-out masked-LM loss on the domain (what it gained) and on general text
(held-out Wikipedia documents, ``--general-batches`` batches: what replay is meant to keep), zero-shot STS-B and
the mean-pooled drift cosine (what it kept of MiniLM: 86.72 and 1.0).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from compare_strategies import strategy_overrides
from continue_pretraining import REPO, SHARED, STSB_DEV, WIKI, finished_checkpoint, minilm

SST2 = SHARED / "glue" / "SST-2" / "train.tsv"
LINES_PER_DOCUMENT = 20


def domain_corpus(work: Path) -> Path:
    """SST-2's training sentences as JSON Lines documents of 20 lines each (written once)."""
    path = work / "sst2_docs.jsonl"
    if not path.is_file():
        with SST2.open(encoding="utf-8") as fh:
            sentences = [row["sentence"].strip() for row in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]
        work.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as out:
            for i in range(0, len(sentences), LINES_PER_DOCUMENT):
                text = "\n".join(sentences[i:i + LINES_PER_DOCUMENT])
                out.write(json.dumps({"id": f"sst2-{i}", "text": text}) + "\n")
        tmp.replace(path)
    return path


def arm_overrides(arm: str) -> list[str]:
    """``domain``: no retention method; else ``_``-joined methods: ``replayF`` (``preserve.replay_fraction=F`` of
    the Wikipedia sample's train/ split), ``distillM`` (``preserve.distill_weight=M``)."""
    if arm == "domain":
        return []
    out = []
    for method in arm.split("_"):
        if method.startswith("replay"):
            out += [f"preserve.replay_corpus=[{WIKI}]", f"preserve.replay_fraction={float(method[6:])}"]
        elif method.startswith("distill"):
            out.append(f"preserve.distill_weight={float(method[7:])}")
        else:
            raise SystemExit(f"unknown arm {arm!r}: domain, or replayF / distillM joined by _")
    return out


def run(arm: str, args: argparse.Namespace, corpus: Path, source: Path) -> Path:
    from ernie_cmtl import api

    run_dir = args.work / arm
    if not finished_checkpoint(run_dir, args.steps):
        config = api.configure(REPO / "configs" / "continue_hf.yaml",
                               [f"model.init_from={source}", f"data.max_documents={args.max_documents}",
                                "train.save_every=60", f"monitor.retention.pairs={STSB_DEV}",
                                *strategy_overrides("mlm_only", args.steps), *arm_overrides(arm)],
                               [str(corpus)], run_dir)
        resume = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").glob("step_*"))
        api.pretrain(config, resume=resume, progress=False)
    return run_dir


def general_loss(run_dir: Path, steps: int, batches: int) -> float:
    """The arm's final masked-LM loss on held-out general text: the Wikipedia sample's held-out documents
    (the split the run's config draws), ``batches`` fixed batches, as the forgetting monitor computes it."""
    from ernie_cmtl.assembly import load_config, settle_run
    from ernie_cmtl.build.prepare import prepare_data
    from ernie_cmtl.checkpoint import read_state
    from ernie_cmtl.trainer import Trainer

    checkpoint = finished_checkpoint(run_dir, steps)
    config = load_config(run_dir / "config.yaml", [f"data.corpus=[{WIKI}]", "preserve.replay_corpus=[]",
                                                   "preserve.replay_fraction=0", "preserve.distill_weight=0",
                                                   f"train.eval_batches={batches}"])
    eval_dir = run_dir / "general_eval"
    eval_dir.mkdir(exist_ok=True)
    data = prepare_data(config, eval_dir, progress=False)
    config, plan = settle_run(config, data)
    trainer = Trainer(config, data, eval_dir, plan, task_ids=read_state(checkpoint)["task_ids"])
    trainer.resume(checkpoint)
    return trainer.evaluate()["knowledge_masking"]["loss"]


def summary(run_dir: Path) -> dict[str, float]:
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["kind"] == "valid" and r["task"] == "knowledge_masking"]
    retention = [r for r in records if r["kind"] == "retention"]
    report = json.loads((run_dir / "data_report.json").read_text()).get("replay", {})
    return {"domain_loss": valid[-1]["loss"], "zero_shot": 100 * retention[-1]["similarity_spearman"],
            "drift_cosine": retention[-1]["drift_cosine"], "replayed": report.get("added", 0),
            "own": report.get("own_examples", 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--arms", nargs="+", default=["domain", "replay0.5"])
    parser.add_argument("--max-documents", type=int, default=3000, help="data.max_documents of both corpora")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "replay_domain")
    parser.add_argument("--report-only", action="store_true", help="print the finished arms, train nothing")
    parser.add_argument("--general-batches", type=int, default=16,
                        help="batches of held-out Wikipedia text for the general masked-LM loss")
    args = parser.parse_args()
    args.work = args.work.resolve()
    if not args.report_only:
        corpus, source = domain_corpus(args.work), minilm(args.work)
        for arm in args.arms:
            run(arm, args, corpus, source)
    print("| arm | held-out masked-LM loss: domain | general (Wikipedia) | zero-shot STS-B | drift cosine | "
          "replayed examples |")
    print("|---|---|---|---|---|---|")
    for arm in args.arms:
        if finished_checkpoint(args.work / arm, args.steps):
            s = summary(args.work / arm)
            general = general_loss(args.work / arm, args.steps, args.general_batches)
            print(f"| {arm} | {s['domain_loss']:.4f} | {general:.4f} | {s['zero_shot']:.2f} | {s['drift_cosine']:.3f} | "
                  f"{s['replayed']} (beside {s['own']})" + " |")


if __name__ == "__main__":
    main()
