"""Run reports: ``ernie-cmtl report RUN_DIR`` turns ``metrics.jsonl`` into PNG plots and a ``summary.md``.

Reads the record kinds :mod:`ernie_cmtl.monitor` writes (``train``, ``valid``, ``stage``, ``affinity``) and
the run's ``config.yaml`` (the strategy; the planned stages, for runs that stopped early or lack stage
records), and writes into ``RUN_DIR/report/``:

- ``loss_per_task.png``: training loss per task against step, stage bands, held-out loss markers;
- ``forgetting.png``: held-out loss (and accuracy) of every task at every evaluation: forgetting curves;
- ``throughput.png``: tokens/s, sequences/s (and MFU when logged) against step;
- ``affinity_stage_<k>.png``: the mean task-gradient cosine matrix of stage k;
- ``summary.md``: stage table, per-task losses and forgetting, throughput, links to the images.

Partial runs are fine: a plot without data is skipped and ``summary.md`` says why.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPORT_DIR = "report"
PERF_KEYS = ("tokens_per_s", "sequences_per_s", "mfu")
GENERATED = ("loss_per_task.png", "forgetting.png", "throughput.png", "retention.png", "affinity_stage_*.png",
             "summary.md")


class ReportError(ValueError):
    """The run directory cannot be reported on (missing or empty ``metrics.jsonl``). One-line message."""


@dataclass
class StageRow:
    """One stage as it ran (from its ``stage`` record) or as planned (from ``config.yaml``)."""

    index: int
    start: int
    end: int
    steps: dict[str, int]
    new_tasks: list[str]
    source: str
    """"record" or "plan"."""


@dataclass
class RunRecords:
    """The records of a ``metrics.jsonl``, split by kind (duplicates left by a resume removed)."""

    train: list[dict[str, Any]] = field(default_factory=list)
    valid: list[dict[str, Any]] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)
    affinity: list[dict[str, Any]] = field(default_factory=list)
    retention: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: int = 0
    """Lines that were not JSON objects with a known ``kind`` (e.g. a line cut off by a killed run)."""

    @property
    def last_step(self) -> int:
        return max((r["step"] for r in [*self.train, *self.valid, *self.affinity]), default=0)


def _well_formed(record: Any) -> bool:
    """Whether a parsed line is a record of a known kind carrying the keys the report reads."""
    if not isinstance(record, dict) or not isinstance(record.get("step"), int):
        return False
    kind = record.get("kind")
    if kind in ("train", "valid"):
        return isinstance(record.get("task"), str)
    if kind == "retention":
        return True
    if kind == "stage":
        steps = record.get("steps")
        return isinstance(record.get("stage"), int) and isinstance(steps, dict) and all(
            isinstance(v, int) for v in steps.values())
    if kind == "affinity":
        tasks, matrix = record.get("tasks"), record.get("matrix")
        return (isinstance(record.get("stage"), int) and isinstance(tasks, list) and isinstance(matrix, list)
                and len(matrix) == len(tasks) and all(isinstance(row, list) and len(row) == len(tasks)
                                                      for row in matrix))
    return False


def read_metrics(path: Path) -> RunRecords:
    """Parse ``metrics.jsonl``; raises :class:`ReportError` if it is missing or holds no usable record."""
    if not path.is_file():
        raise ReportError(f"{path.parent}: no metrics.jsonl (is it a run directory? pretrain writes one)")
    records = RunRecords()
    by_kind: dict[str, dict[Any, dict[str, Any]]] = {"train": {}, "valid": {}, "stage": {}, "affinity": {},
                                                     "retention": {}}
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            records.bad_lines += 1
            continue
        if not _well_formed(record):
            records.bad_lines += 1
            continue
        kind = record["kind"]
        key = {"train": record["step"], "valid": (record["step"], record.get("task")),
               "stage": record.get("stage"), "affinity": record["step"], "retention": record["step"]}[kind]
        by_kind[kind][key] = record  # a resumed run may repeat a record: the last one wins
    records.train = sorted(by_kind["train"].values(), key=lambda r: r["step"])
    records.valid = sorted(by_kind["valid"].values(), key=lambda r: r["step"])
    records.stages = sorted(by_kind["stage"].values(), key=lambda r: r["step"])
    records.affinity = sorted(by_kind["affinity"].values(), key=lambda r: r["step"])
    records.retention = sorted(by_kind["retention"].values(), key=lambda r: r["step"])
    if not (records.train or records.valid or records.stages or records.affinity):
        raise ReportError(f"{path}: no records to report on" +
                          (f" ({records.bad_lines} unreadable lines)" if records.bad_lines else ""))
    return records


def _load_plan(run_dir: Path, notes: list[str]) -> tuple[str, Any]:
    """(strategy, plan) from ``config.yaml``; ("unknown", None) with a note when it cannot be read."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        notes.append("No `config.yaml` in the run directory: the strategy is unknown and the stage table "
                     "comes from the `stage` records alone.")
        return "unknown", None
    try:
        from ernie_cmtl.assembly import load_config
        from ernie_cmtl.scheduler import build_plan

        config = load_config(path)
        plan = build_plan(config.schedule, list(config.tasks), config.train.max_steps, config.seed)
    except Exception as err:  # noqa: BLE001 - a report should still come out of an odd config
        notes.append(f"`config.yaml` could not be turned into a plan ({type(err).__name__}: {err}); the "
                     "stage table comes from the `stage` records alone.")
        return "unknown", None
    strategy = plan.strategy
    if plan.strategy == "cmtl":
        strategy += f" (allocation {config.schedule.allocation}, sampling {plan.sampling})"
    return strategy, plan


def stage_rows(records: RunRecords, plan: Any) -> list[StageRow]:
    """The stages that ran (``stage`` records), followed by the planned ones the run has not reached."""
    rows = [StageRow(int(r["stage"]), int(r["step"]), int(r["step"]) + sum(r["steps"].values()),
                     dict(r["steps"]), list(r.get("new_tasks", [])), "record") for r in records.stages]
    if plan is not None:
        seen = {row.index for row in rows}
        rows += [StageRow(s.index, s.start, s.end, dict(s.steps), list(s.new_tasks), "plan")
                 for s in plan.stages if s.index not in seen]
    return sorted(rows, key=lambda row: row.start)


def _introductions(rows: list[StageRow]) -> dict[str, tuple[int, int]]:
    """Task -> (stage index, start step) of the stage that first trains it."""
    intro: dict[str, tuple[int, int]] = {}
    for row in rows:
        for task, steps in row.steps.items():
            if steps > 0 and task not in intro:
                intro[task] = (row.index, row.start)
    return intro


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _series(records: list[dict[str, Any]], key: str) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        if _finite(r.get(key)):
            out.setdefault(r["task"], []).append((r["step"], float(r[key])))
    return out


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _mean_matrix(group: list[dict[str, Any]]) -> list[list[float]]:
    n = len(group[0]["matrix"])
    return [[statistics.fmean(r["matrix"][i][j] for r in group) for j in range(n)] for i in range(n)]


def write_report(run_dir: Path) -> list[Path]:
    """Write ``RUN_DIR/report/`` (PNGs and ``summary.md``) from the run's ``metrics.jsonl`` and
    ``config.yaml``; returns the files written, ``summary.md`` last. Raises :class:`ReportError` when there is
    nothing to report."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: not a directory")
    records = read_metrics(run_dir / "metrics.jsonl")

    from ernie_cmtl import plots

    out = run_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    for pattern in GENERATED:  # an earlier report's files must not linger (e.g. affinity of other stages)
        for old in out.glob(pattern):
            old.unlink()

    notes: list[str] = []
    if records.bad_lines:
        notes.append(f"{records.bad_lines} line(s) of `metrics.jsonl` were unreadable and skipped (a run "
                     "killed mid-write leaves a cut-off last line).")
    strategy, plan = _load_plan(run_dir, notes)
    rows = stage_rows(records, plan)
    last = records.last_step
    spans = [(row.start, min(row.end, last)) for row in rows if min(row.end, last) > row.start]
    intro = _introductions(rows)
    tasks = list(dict.fromkeys([*intro, *(r["task"] for r in [*records.train, *records.valid])]))
    colors = plots.task_colors(tasks)
    name = run_dir.resolve().name

    train_loss = _series(records.train, "loss")
    valid_loss = _series(records.valid, "loss")
    valid_acc = _series(records.valid, "accuracy")
    forgetting = {task: [p for p in points if p[0] > intro.get(task, (0, 0))[1]]
                  for task, points in _series(records.valid, "forgetting").items()}
    written: list[Path] = []
    images: list[tuple[str, str]] = []  # (file name, what it shows)

    if train_loss or valid_loss:
        valid_after = {t: [p for p in pts if p[0] > intro.get(t, (0, 0))[1]] for t, pts in valid_loss.items()}
        written.append(plots.plot_task_losses(
            train_loss, valid_after, spans, colors, out / "loss_per_task.png",
            f"{name}: training loss per task (held-out loss: open circles)"))
        images.append(("loss_per_task.png", "training loss per task, stage bands, held-out loss markers"))
    else:
        notes.append("No loss values in `metrics.jsonl`: no `loss_per_task.png`.")

    if valid_loss:
        written.append(plots.plot_forgetting(
            valid_loss, valid_acc, forgetting, {t: s for t, (_, s) in intro.items()}, spans, colors,
            out / "forgetting.png", f"{name}: held-out metrics of every task at every evaluation"))
        what = "held-out loss" + (" and accuracy" if valid_acc else "")
        images.append(("forgetting.png",
                       f"forgetting curves: {what} of every task, and loss minus its best so far"))
        if not valid_acc:
            notes.append("No held-out accuracy was logged (no task reports one): `forgetting.png` has no "
                         "accuracy panel.")
    else:
        notes.append("No `valid` records (the run stopped before its first evaluation): no `forgetting.png`.")
    if len(spans) <= 1:
        notes.append("The run has a single stage" + (" so far" if len(rows) > 1 else "") + ": no stage "
                     "boundaries, so the curves show held-out progress, not forgetting across stages.")

    perf = [(r["step"], r["task"], {k: r[k] for k in PERF_KEYS if _finite(r.get(k))}) for r in records.train]
    perf = [p for p in perf if p[2]]
    if perf:
        written.append(plots.plot_throughput(perf, spans, colors, out / "throughput.png",
                                             f"{name}: training throughput per logged window"))
        images.append(("throughput.png", "tokens/s and sequences/s" +
                       (" and MFU" if any("mfu" in p[2] for p in perf) else "") + " against step"))
    else:
        notes.append("No throughput in the `train` records: no `throughput.png`.")

    retention_lines = _retention(records, spans, out / "retention.png", name, written, images)

    affinity_lines = []
    by_stage: dict[int, list[dict[str, Any]]] = {}
    for r in records.affinity:
        by_stage.setdefault(int(r["stage"]), []).append(r)
    for k, group in sorted(by_stage.items()):
        group = [r for r in group if r["tasks"] == group[-1]["tasks"]]
        names, matrix = group[-1]["tasks"], _mean_matrix(group)
        first, final = group[0]["step"], group[-1]["step"]
        steps = f"step {first}" if len(group) == 1 else f"steps {first}–{final}"
        probes = f"{len(group)} probe{'s' if len(group) > 1 else ''}"
        fig = plots.affinity_figure(names, matrix,
                                    f"stage {k}: task-gradient cosine\nmean of {probes}, {steps}")
        path = out / f"affinity_stage_{k}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plots.plt.close(fig)
        written.append(path)
        images.append((path.name, f"stage {k}: mean task-gradient cosine matrix ({probes}, {steps})"))
        pairs = ", ".join(f"{names[i]} × {names[j]} {matrix[i][j]:+.3f}"
                          for i in range(len(names)) for j in range(i + 1, len(names)))
        affinity_lines.append(f"- stage {k} ({probes}, {steps}): {pairs}")
    if not records.affinity:
        notes.append("No `affinity` records (`monitor.affinity_every` is 0, or no stage trained two tasks): "
                     "no affinity plots.")

    summary = out / "summary.md"
    summary.write_text(_summary(run_dir, strategy, rows, last, plan, records, tasks, intro, train_loss,
                                valid_loss, valid_acc, forgetting, affinity_lines, images, notes, retention_lines))
    written.append(summary)
    return written


def _retention(records: RunRecords, spans: list[tuple[int, int]], path: Path, name: str, written: list[Path],
               images: list[tuple[str, str]]) -> list[str]:
    """``retention.png`` and the summary's lines for the ``retention`` records of a run with
    ``model.init_from`` (none: no plot, no lines)."""
    if not records.retention:
        return []
    from ernie_cmtl import plots

    written.append(plots.plot_retention(records.retention, spans, path,
                                        f"{name}: what the encoder still knows of its source"))
    images.append((path.name, "drift of the mean-pooled states from the source (cosine, linear CKA) and "
                   "zero-shot similarity against the source's, at every evaluation"))
    first, last = records.retention[0], records.retention[-1]
    lines = ["## Retention of the source model", "", "| | step " + f"{first['step']} | step {last['step']} |",
             "|---|---|---|"]
    for key, label in (("drift_cosine", "mean cosine to source"), ("drift_cka", "linear CKA to source"),
                       ("similarity_spearman", "zero-shot similarity (Spearman)")):
        if key in last:
            lines.append(f"| {label} | {_fmt(first.get(key))} | {_fmt(last.get(key))} |")
    return [*lines, ""]


def _summary(run_dir: Path, strategy: str, rows: list[StageRow], last: int, plan: Any, records: RunRecords,
             tasks: list[str], intro: dict[str, tuple[int, int]], train_loss: dict, valid_loss: dict,
             valid_acc: dict, forgetting: dict, affinity_lines: list[str], images: list[tuple[str, str]],
             notes: list[str], retention_lines: list[str] | None = None) -> str:
    planned = plan.total_steps if plan is not None else (rows[-1].end if rows else last)
    lines = [f"# Run report: {run_dir.resolve().name}", "",
             f"- Run directory: `{run_dir.resolve()}`",
             f"- Strategy: {strategy}",
             f"- Steps: {last} of {planned} planned" + (" (partial run)" if last < planned else ""),
             f"- Tasks: {', '.join(tasks)}", ""]

    lines += ["## Stages", "", "| stage | steps | tasks: steps (* = introduced) | status |",
              "|---|---|---|---|"]
    for row in rows:
        status = ("done" if last >= row.end else f"partial (to step {last})" if last > row.start
                  else "not reached")
        split = ", ".join(f"{t} {n}{'*' if t in row.new_tasks else ''}" for t, n in row.steps.items())
        lines.append(f"| {row.index} | {row.start}–{row.end} | {split} | {status} |")
    if not rows:
        lines.append("| – | – | no stage records and no plan | – |")
    lines.append("")

    lines += ["## Tasks", "",
              "| task | introduced | first train loss | last train loss | final held-out loss "
              "| final held-out accuracy | max forgetting |", "|---|---|---|---|---|---|---|"]
    for task in tasks:
        train = train_loss.get(task, [])
        valid = valid_loss.get(task, [])
        acc = valid_acc.get(task, [])
        forget = forgetting.get(task, [])
        where = f"stage {intro[task][0]} (step {intro[task][1]})" if task in intro else "–"
        worst = max(forget, key=lambda p: p[1], default=None)
        lines.append(" | ".join([
            f"| {task}", where, _fmt(train[0][1] if train else None), _fmt(train[-1][1] if train else None),
            _fmt(valid[-1][1] if valid else None), _fmt(acc[-1][1] if acc else None),
            "–" if worst is None else f"{worst[1]:.4f} (step {worst[0]})" if worst[1] > 0 else "0"]) + " |")
    lines += ["", "Max forgetting: the largest held-out loss minus that task's best so far, over evaluations "
              "after the task's introduction.", ""]

    lines += ["## Throughput", ""]
    for key, label in (("tokens_per_s", "tokens/s"), ("sequences_per_s", "sequences/s"), ("mfu", "MFU")):
        values = [r[key] for r in records.train if _finite(r.get(key))]
        if values:
            median = statistics.median(values)
            shown = f"{median:.2%}" if key == "mfu" else f"{median:,.1f}"
            lines.append(f"- median {label}: {shown} (over {len(values)} logged windows)")
    if not any(_finite(r.get("tokens_per_s")) for r in records.train):
        lines.append("- no throughput logged")
    lines.append("")

    lines += retention_lines or []
    if affinity_lines:
        lines += ["## Task-gradient affinity (mean off-diagonal cosines per stage)", "", *affinity_lines, ""]

    lines += ["## Plots", ""]
    for file_name, what in images:
        lines += [f"### {file_name}", "", what + ".", "", f"![{file_name}]({file_name})", ""]
    if not images:
        lines += ["No plots (see the notes).", ""]
    if notes:
        lines += ["## Notes", "", *[f"- {note}" for note in notes], ""]
    return "\n".join(lines)
