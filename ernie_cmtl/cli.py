"""The ``ernie-cmtl`` command line: a thin layer over :mod:`ernie_cmtl.api`."""

from __future__ import annotations

import argparse
import json
import os
import sys

EXAMPLES = """examples:
  ernie-cmtl pretrain --config configs/default.yaml
  ernie-cmtl pretrain --config configs/default.yaml --corpus ../shared/data/wikipedia-en-2018-sample/train
  ernie-cmtl pretrain --config configs/default.yaml --set model.hidden_size=256 --set train.lr=1e-3
  ernie-cmtl pretrain --config configs/default.yaml --run-dir runs/x --resume
  ernie-cmtl pretrain --config configs/default.yaml --wandb --wandb-project my-project   # log to wandb
  ernie-cmtl build-data --config configs/default.yaml
  ernie-cmtl plan --config configs/cmtl_paper_table.yaml
  ernie-cmtl tasks
  ernie-cmtl export runs/default hf/my-ernie      # a transformers model directory
"""


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="YAML", help="run config (default: built-in defaults, the same as "
                        "configs/default.yaml)")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                        help="override one config value by its dotted key, e.g. --set train.batch_size=16 "
                        "(repeatable; values are read as YAML)")
    parser.add_argument("--corpus", metavar="PATH", nargs="+", help="corpus files, directories or globs "
                        "(plain text, JSON Lines, WikiExtractor <doc> files, HF datasets saved to disk); "
                        "overrides data.corpus. No corpus: the Python standard library's docstrings")
    parser.add_argument("--run-dir", metavar="DIR", help="run directory: resolved config, tokenizer, logs, "
                        "metrics.jsonl, checkpoints (overrides run_dir)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")


WANDB_HELP = """Both flags are sugar for --set monitor.wandb.enabled=true and --set monitor.wandb.project=NAME;
wandb writes its files into RUN_DIR/wandb/. The mode comes from the environment:
WANDB_MODE=online streams to wandb.ai, WANDB_MODE=offline writes RUN_DIR/wandb/offline-run-* to upload later
with `wandb sync`, WANDB_MODE=disabled logs nothing. Without WANDB_MODE: online after `wandb login` (or with
WANDB_API_KEY set), offline otherwise. An explicit monitor.wandb.mode in the config wins over all of these."""


def _add_wandb_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Weights & Biases", WANDB_HELP)
    group.add_argument("--wandb", action="store_true", help="log the run to wandb (= --set "
                       "monitor.wandb.enabled=true); online or offline as WANDB_MODE says, see above")
    group.add_argument("--wandb-project", metavar="NAME", help="the wandb project (= --set "
                       "monitor.wandb.project=NAME; default ernie-cmtl); implies --wandb")


def wandb_overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides that ``--wandb`` / ``--wandb-project`` stand for, so that they go through the
    same config validation as every other override. The project is quoted, so that a name YAML would read as
    a number or a boolean (``2024``, ``yes``) stays a string."""
    overrides = []
    if args.wandb or args.wandb_project is not None:
        overrides.append("monitor.wandb.enabled=true")
    if args.wandb_project is not None:
        overrides.append(f"monitor.wandb.project={json.dumps(args.wandb_project)}")
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ernie-cmtl",
        description="ERNIE 2.0-style continual multi-task pretraining of Transformer encoders.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("pretrain", help="pretrain an encoder (builds missing data first)",
                       description="Pretrain an encoder on the configured tasks. Data are built first if not "
                       "cached. Writes config.yaml, tokenizer.json, train.log, metrics.jsonl and checkpoints/ "
                       "into the run directory.", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_run_args(p)
    p.add_argument("--max-steps", type=int, metavar="N", help="stop after step N (a checkpoint is written; "
                   "0 on a new run: the initialization, as step_00000000, an untrained control to fine-tune); "
                   "the learning-rate schedule still follows train.max_steps, so the run can be resumed")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in the run "
                   "directory (same tokenizer, data order, RNG and optimizer state)")
    p.add_argument("--allow-plan-change", action="store_true", help="with --resume: accept a checkpoint "
                   "written under a different schedule (new tasks get fresh heads; the step sequence follows "
                   "the new plan)")
    _add_wandb_args(p)

    p = sub.add_parser("plan", help="print the stage x task schedule and write its timeline PNG",
                       description="Print the continual multi-task plan (steps of each task in each stage, "
                       "start and end step of each stage) and write a PNG timeline, before any compute is "
                       "spent.")
    _add_run_args(p)
    p.add_argument("--png", metavar="FILE", help="timeline image (default: RUN_DIR/plan.png)")

    p = sub.add_parser("build-data", help="build and cache documents, tokenizer and task examples",
                       description="Read the corpus, train (or load) the tokenizer and build every configured "
                       "task's examples into the Arrow cache (data.cache_dir), one progress line per task. "
                       "Prints per-task counts. On N nodes: run --statistics-only once, then --shard K/N on "
                       "node K (0..N-1) with the same config and cache; a later pretrain reads the N shards "
                       "as one dataset per task (docs/DISTRIBUTED.md).")
    _add_run_args(p)
    p.add_argument("--shard", metavar="K/N", help="build only the examples of the K-th (0-based) of N disjoint "
                   "parts of the corpus, split by document id (the held-out split is the same for any N); "
                   "the tokenizer and corpus statistics are the whole corpus's, shared by all shards")
    p.add_argument("--statistics-only", action="store_true", help="train the tokenizer and compute every "
                   "task's corpus statistics (phrase lexicon, frequent words, class counts) into the cache, "
                   "build no examples: run once before the shards so that they reuse one copy")

    sub.add_parser("tasks", help="list the registered pretraining tasks",
                   description="List every task registered in the 'ernie_cmtl.tasks' entry-point group, with "
                   "its package, level and label count.")

    p = sub.add_parser("report", help="plots and summary.md of a run, from its metrics.jsonl",
                       description="Write RUN_DIR/report/: loss_per_task.png (training and held-out loss per "
                       "task, stage bands), forgetting.png (held-out metrics of every task at every "
                       "evaluation), throughput.png, affinity_stage_<k>.png (task-gradient cosines) and "
                       "summary.md (stage table, per-task losses, forgetting, throughput, image links). "
                       "Works on partial runs; plots without data are skipped and summary.md says so.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (holds metrics.jsonl and config.yaml)")

    p = sub.add_parser("finetune", help="fine-tune a pretrained encoder (GLUE, Chinese; MT-DNN style)",
                       description="Multi-task fine-tuning of a pretrained checkpoint on GLUE tasks (SST-2, CoLA, "
                       "MRPC, RTE, STS-B, MNLI, QQP, QNLI, WNLI), the Chinese ChnSentiCorp, OCNLI and C3, and the "
                       "Wikipedia query-passage ranking task (wikiqp), then optional per-task fine-tuning. Prints "
                       "the dev metrics and writes config.yaml, metrics.jsonl, train.log and results.json into the "
                       "run directory. See docs/FINETUNING.md.",
                       epilog="examples:\n  ernie-cmtl finetune --checkpoint runs/default --tasks sst2,cola,mrpc,"
                       "rte,stsb --run-dir runs/glue\n  ernie-cmtl finetune --checkpoint runs/zh --tasks "
                       "chnsenticorp,ocnli,c3 --run-dir runs/clue\n  ernie-cmtl finetune --checkpoint runs/default "
                       "--tasks sst2,cola --wandb --wandb-project my-glue   # log to wandb",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", metavar="PATH", required=True, help="a pretraining run directory (its latest "
                   "checkpoint is used) or one RUN_DIR/checkpoints/step_N directory")
    p.add_argument("--tasks", metavar="LIST", help="comma-separated, case-insensitive: sst2,cola,mrpc,rte,stsb,"
                   "mnli,qqp,qnli,wnli,wikiqp,chnsenticorp,ocnli,c3 (default: the config's tasks)")
    p.add_argument("--config", metavar="YAML", help="fine-tuning config (default: built-in defaults, the same "
                   "as configs/finetune_glue.yaml)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="override one config value, e.g. --set lr=1e-4 (repeatable; values are read as YAML)")
    p.add_argument("--max-steps", type=int, metavar="N", help="multi-task fine-tuning steps (overrides max_steps)")
    p.add_argument("--per-task-steps", type=int, metavar="N", help="then fine-tune a copy on each task alone for "
                   "N steps (overrides per_task_steps; 0 = off)")
    p.add_argument("--run-dir", metavar="DIR", help="output directory (overrides run_dir)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    _add_wandb_args(p)

    p = sub.add_parser("export", help="write a checkpoint as a Hugging Face model directory",
                       description="Write a pretraining checkpoint as a directory that transformers loads "
                       "offline (AutoModel / AutoTokenizer.from_pretrained): config.json, model.safetensors, "
                       "tokenizer.json, tokenizer_config.json, vocab.txt and a README.md model card. "
                       "See docs/HUGGINGFACE.md.",
                       epilog="examples:\n  ernie-cmtl export runs/default hf/ernie-debug\n"
                       "  ernie-cmtl export runs/default/checkpoints/step_00000560 hf/bert-km --format bert "
                       "--task knowledge_masking", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a run directory (its latest checkpoint) or one "
                   "RUN_DIR/checkpoints/step_N directory")
    p.add_argument("out_dir", metavar="OUT_DIR", help="the model directory to write (replaced if it exists)")
    p.add_argument("--format", choices=["ernie", "bert"], default="ernie", help="ernie (default): "
                   "ErnieForPreTraining with use_task_id, our task embeddings and the task-name -> id map in "
                   "config.json; bert: a plain BertForMaskedLM with --task's embedding folded into the position "
                   "embeddings")
    p.add_argument("--task", metavar="NAME", help="with --format bert: the task whose embedding is folded in")

    p = sub.add_parser("probe", help="frozen-encoder evaluation: zero-shot similarity and linear probes",
                       description="Evaluate an encoder without fine-tuning it: Spearman of the cosine of "
                       "mean-pooled embeddings on STS-B dev (and --pairs files), and linear probes (scikit-learn "
                       "logistic regression / ridge on frozen mean-pooled features, regularization chosen by "
                       "cross-validation on train) scored on dev: SST-2, CoLA, MRPC, RTE, STS-B for English, "
                       "ChnSentiCorp and OCNLI for Chinese. Prints one table and writes probe.json.",
                       epilog="examples:\n  ernie-cmtl probe models/all-MiniLM-L6-v2 --out runs/minilm_probe.json\n"
                       "  ernie-cmtl probe runs/continue_hf\n  ernie-cmtl probe runs/continue_hf/checkpoints/"
                       "step_00000420 --tasks stsb --max-train-examples 0",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT_OR_HF_DIR", help="a run directory (its latest checkpoint), "
                   "one RUN_DIR/checkpoints/step_N directory, or a Hugging Face BERT / ERNIE model directory")
    p.add_argument("--tasks", metavar="LIST", help="comma-separated linear-probe tasks: sst2,cola,mrpc,rte,stsb,"
                   "mnli,qqp,qnli,wnli,chnsenticorp,ocnli ('' for none; default: by --language)")
    p.add_argument("--language", choices=["auto", "en", "zh"], default="auto", help="default task set: en "
                   "(GLUE five + STS-B zero-shot) or zh (ChnSentiCorp, OCNLI); auto: by the vocabulary's CJK share")
    p.add_argument("--pairs", metavar="TSV", action="append", default=[], help="more zero-shot similarity sets: "
                   "a TSV with sentence1, sentence2 and score columns (by header name, else the first three); "
                   "repeatable")
    p.add_argument("--max-train-examples", type=int, default=2000, metavar="N", help="per task, a seeded random "
                   "subset of N training examples (default 2000; 0 = all)")
    p.add_argument("--max-dev-examples", type=int, default=0, metavar="N", help="per task and zero-shot set, a "
                   "seeded random subset of N dev examples (default 0 = all; for quick checks)")
    p.add_argument("--max-seq-len", type=int, default=128, metavar="N", help="tokens per sentence (default 128)")
    p.add_argument("--batch-size", type=int, default=64, metavar="N")
    p.add_argument("--task-embedding-id", type=int, default=0, metavar="ID", help="task-embedding row added to "
                   "every input (default 0, the first pretraining task; -1: none)")
    p.add_argument("--glue-dir", default="../shared/data/glue", metavar="DIR")
    p.add_argument("--chnsenticorp-dir", default="../shared/data/chnsenticorp", metavar="DIR")
    p.add_argument("--ocnli-dir", default="../shared/data/ocnli", metavar="DIR")
    p.add_argument("--seed", type=int, default=0, help="subsampling and cross-validation folds")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, auto ...")
    p.add_argument("--out", metavar="PATH", help="where probe.json goes (default: CHECKPOINT_OR_HF_DIR/probe.json)")
    p.add_argument("--quiet", action="store_true", help="only the table")

    p = sub.add_parser("evaluate", help="held-out loss and accuracy of every pretraining task at a checkpoint",
                       description="Each task of a run, on its valid split, as the forgetting monitor computes it "
                       "(fixed batches and masks), beside the task's chance loss and its majority-label accuracy: "
                       "which tasks the encoder actually learned. Reads the run's config.yaml and cached data.",
                       epilog="examples:\n  ernie-cmtl evaluate runs/continue_hf\n  ernie-cmtl evaluate "
                       "runs/continue_hf/checkpoints/step_00000420 --batches 8 --json heldout.json",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a run directory (its newest verified checkpoint) or "
                   "one RUN_DIR/checkpoints/step_N directory")
    p.add_argument("--batches", type=int, default=0, metavar="N", help="batches of train.batch_size per task "
                   "(default 0: the whole valid split)")
    p.add_argument("--json", metavar="PATH", help="also write the results here")
    return parser


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ernie_cmtl import api

    results = api.evaluate(args.checkpoint, batches=args.batches)
    print(f"{'task':26s} {'examples':>8s} {'loss':>8s} {'chance':>8s} {'accuracy':>9s} {'majority':>9s}")
    for name, v in results.items():
        accuracy, majority = v.get("accuracy"), v.get("majority_accuracy")
        cells = ["" if x is None else f"{x:.4f}" for x in (accuracy, majority)]
        print(f"{name:26s} {v['examples']:8d} {v['loss']:8.4f} {v['chance_loss']:8.4f} {cells[0]:>9s} {cells[1]:>9s}")
    if args.json:
        with open(args.json, "w") as out:
            out.write(json.dumps(results, indent=2) + "\n")
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from downstream.probe import ProbeSettings, format_table
    from ernie_cmtl import api

    tasks = None if args.tasks is None else [t for t in args.tasks.split(",") if t.strip()]
    settings = ProbeSettings(tasks=tasks, language=args.language, pairs=args.pairs, glue_dir=args.glue_dir,
                             chnsenticorp_dir=args.chnsenticorp_dir, ocnli_dir=args.ocnli_dir,
                             max_train_examples=args.max_train_examples,
                             max_dev_examples=args.max_dev_examples, max_seq_len=args.max_seq_len,
                             batch_size=args.batch_size, task_embedding_id=args.task_embedding_id, seed=args.seed,
                             device=args.device)
    say = None if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    result = api.probe(args.checkpoint, settings, args.out, progress=say)
    print(format_table(result))
    sampled = [f"{name} {v['train_examples']} of {v['train_available']}" for name, v in result["probes"].items()
               if v["train_examples"] < v["train_available"]]
    if sampled:
        print(f"train sets subsampled (seed {args.seed}): {', '.join(sampled)}")
    print(f"{result['seconds']['total']:.0f}s ({result['seconds']['sentences']} sentences encoded in "
          f"{result['seconds']['encode']:.0f}s); results: {result['written_to']}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from ernie_cmtl import api

    out = api.export(args.checkpoint, args.out_dir, args.format, args.task)
    print(f"exported ({args.format}): {out}")
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from ernie_cmtl import api

    config = api.configure(args.config, [*args.overrides, *wandb_overrides(args)], args.corpus, args.run_dir)
    args.run_dir = config.run_dir  # where a crash's traceback goes (RUN_DIR/error.log)
    api.setup_logging(verbose=not args.quiet)
    try:
        result = api.pretrain(config, resume=args.resume, stop_at=args.max_steps, progress=not args.quiet,
                              allow_plan_change=args.allow_plan_change)
    finally:
        api.shutdown_distributed()
    if result.stopped_by is not None:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"stopped by {result.stopped_by} after step {result.step}; checkpoint {result.checkpoint} "
                  "verified; continue with --resume", file=sys.stderr)
        return EXIT_STOPPED
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    last = result.eval_history[-1] if result.eval_history else {}
    summary = ", ".join(f"{task} loss {v['loss']:.4f}" for task, v in last.items() if isinstance(v, dict))
    print(f"done: step {result.step}; valid {summary}; checkpoint {result.checkpoint}")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ernie_cmtl import api

    config = api.configure(args.config, args.overrides, args.corpus, args.run_dir)
    png = Path(args.png) if args.png else Path(config.run_dir) / "plan.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    schedule_plan = api.plan(config, png)
    print(schedule_plan.table())
    print(f"timeline: {png}")
    return 0


def _cmd_build_data(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ernie_cmtl import api
    from ernie_cmtl.build.shards import parse_shard
    from ernie_cmtl.config import ConfigError

    try:
        shard = parse_shard(args.shard) if args.shard else None
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if shard is not None and args.statistics_only:
        raise ConfigError("--shard and --statistics-only exclude each other: compute the statistics once, "
                          "then build each shard")
    config = api.configure(args.config, args.overrides, args.corpus, args.run_dir)
    args.run_dir = config.run_dir  # where a crash's traceback goes (RUN_DIR/error.log)
    api.setup_logging(verbose=not args.quiet)
    data = api.build_data(config, progress=not args.quiet, shard=shard, statistics_only=args.statistics_only)
    from data_builders.corpus import CorpusReport

    for line in CorpusReport.from_dict(data.report["corpus"]).summary():
        print(line)
    split = data.report["split"]
    where = f" in shard {shard[0]}/{shard[1]}" if shard else ""
    print(f"split: {split['train_documents']} train, {split['valid_documents']} valid documents{where}"
          + (" (one document: its last paragraphs held out)" if split["one_document_split"] else ""))
    if args.statistics_only:
        print(f"tokenizer: {Path(config.run_dir) / 'tokenizer.json'} (vocabulary {data.tokenizer.get_vocab_size()})")
        for name in data.tasks:
            reason = data.empty_tasks.get(name)
            print(f"{name}: corpus statistics ready" + (f" (cannot be built: {reason})" if reason else ""))
        return 0
    for name, task in data.tasks.items():
        histogram = task.label_counts(data.train[name])
        shown = histogram if len(histogram) <= 40 else f"{len(histogram)} distinct labels"
        print(f"{name}: {len(data.train[name])} train, {len(data.valid[name])} valid examples; "
              f"{data.build_seconds[name]:.1f}s; train labels {shown}")
    for name, reason in data.empty_tasks.items():
        print(f"{name}: no examples from this corpus: {reason}")
    if "replay" in data.report:
        replay = data.report["replay"]
        print(f"replay: {replay['task']}'s train examples include {replay['added']} of the "
              f"{replay['replay_examples']} from {', '.join(replay['corpus'])} ({replay['fraction']:.0%})")
    print(f"account: {Path(config.run_dir) / 'data_report.json'}")
    return 0


def _cmd_tasks(args: argparse.Namespace) -> int:
    from ernie_cmtl.registry import available_tasks, get_task_class, task_package

    rows = [("task", "package", "level", "labels", "description")]
    for name in available_tasks():
        cls = get_task_class(name)
        first_line = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        rows.append((name, task_package(name), cls.level, cls.label_summary, first_line))
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ernie_cmtl import api

    for path in api.report(args.run_dir):
        print(path)
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from downstream.finetune import load_finetune_config
    from ernie_cmtl import api

    steps = [f"{key}={value}" for key, value in (("max_steps", args.max_steps),
                                                 ("per_task_steps", args.per_task_steps)) if value is not None]
    config = load_finetune_config(args.config, [*args.overrides, *steps, *wandb_overrides(args)])
    if args.run_dir is not None:
        config.run_dir = args.run_dir
    api.setup_logging(verbose=not args.quiet)
    results = api.finetune(args.checkpoint, args.tasks, config, progress=not args.quiet)
    for task, values in results["dev"].items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in values.items() if k != "score")
        base = ", ".join(f"{k} {v:.4f}" for k, v in results["baseline"][task].items() if k != "score")
        print(f"{task}: {shown}  (input-blind baseline: {base})")
    if "glue_score" in results:
        print(f"GLUE score (mean of task scores): {results['glue_score']:.4f}")
    print(f"results: {Path(config.run_dir) / 'results.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ernie-cmtl`` console script. Returns the exit code."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    from data_builders.corpus import CorpusError
    from data_builders.tokenizer import TokenizerError
    from ernie_cmtl.build import DataBuildError
    from ernie_cmtl.checkpoint import CheckpointError
    from ernie_cmtl.config import ConfigError
    from ernie_cmtl.faults import NonFiniteStepsError
    from ernie_cmtl.hf import HFCheckpointError
    from ernie_cmtl.registry import TaskRegistryError
    from ernie_cmtl.report import ReportError

    handlers = {"pretrain": _cmd_pretrain, "build-data": _cmd_build_data, "tasks": _cmd_tasks, "plan": _cmd_plan}
    handlers["report"] = _cmd_report
    handlers["finetune"] = _cmd_finetune
    handlers["export"] = _cmd_export
    handlers["probe"] = _cmd_probe
    handlers["evaluate"] = _cmd_evaluate
    try:
        return handlers[args.command](args)
    except ConfigError as err:
        print(f"ernie-cmtl: config error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except NonFiniteStepsError as err:
        print(f"ernie-cmtl: non-finite steps: {_one_line(err)}", file=sys.stderr)
        return EXIT_NONFINITE
    except (HFCheckpointError, CorpusError, TokenizerError, CheckpointError, TaskRegistryError, DataBuildError,
            ReportError) as err:
        print(f"ernie-cmtl: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as err:  # a path that cannot be read or written: the user can fix it
        print(f"ernie-cmtl: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("ernie-cmtl: interrupted (the last complete checkpoint is intact)", file=sys.stderr)
        return 130
    except Exception as err:  # anything else is a bug in ernie-cmtl: one line here, the traceback in a file
        return _report_bug(err, getattr(args, "run_dir", None))


EXIT_USER_ERROR = 2
"""Exit code for every input the user can fix (config, corpus, tokenizer, checkpoint, paths, a checkpoint that
cannot be written: full disk, I/O error, permission); 1 is a bug."""
EXIT_STOPPED = 3
"""A stop signal (``train.stop_signals``) ended the run after a verified checkpoint: requeue and ``--resume``."""
EXIT_NONFINITE = 4
"""``train.max_bad_steps`` steps in a row had a non-finite loss or gradient norm (none reached the weights)."""


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _report_bug(err: Exception, run_dir: str | None = None) -> int:
    """A bug: its traceback to ``RUN_DIR/error.log`` (``error.rank<R>.log`` on other ranks) when the command
    has a run directory that exists, else to a temporary file; one line on stderr naming the file; exit 1."""
    import tempfile
    import traceback
    from pathlib import Path

    rank = int(os.environ.get("RANK", "0"))
    path = Path(run_dir) / ("error.log" if rank == 0 else f"error.rank{rank}.log") if run_dir else None
    try:
        if path is None or not path.parent.is_dir():
            raise OSError
        with path.open("w") as fh:
            traceback.print_exception(err, file=fh)
    except OSError:
        with tempfile.NamedTemporaryFile("w", prefix="ernie-cmtl-crash-", suffix=".txt", delete=False) as fh:
            traceback.print_exception(err, file=fh)
        path = Path(fh.name)
    print(f"ernie-cmtl: internal error (a bug; please report it with {path}): {type(err).__name__}: "
          f"{_one_line(err)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
