"""Figures: the plan timeline (``ernie-cmtl plan``). Matplotlib with the non-interactive Agg backend."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ernie_cmtl.scheduler import Plan  # noqa: E402


def task_colors(tasks: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {task: cmap(i % 10) for i, task in enumerate(tasks)}


def plot_plan(plan: Plan, path: Path) -> Path:
    """One row per task; in each stage a bar whose length is the stage and whose opacity is the task's share
    of the stage's steps; numbers give the steps. Stage boundaries are dashed lines."""
    tasks = plan.tasks
    colors = task_colors(tasks)
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(tasks) + 1.6))
    for row, task in enumerate(tasks):
        for stage in plan.stages:
            steps = stage.steps.get(task, 0)
            if not steps:
                continue
            share = steps / stage.num_steps
            ax.barh(row, stage.num_steps, left=stage.start, color=colors[task], alpha=0.25 + 0.75 * share,
                    edgecolor="black" if task in stage.new_tasks else "none")
            ax.text(stage.start + stage.num_steps / 2, row, f"{steps:,}", ha="center", va="center", fontsize=8)
    for boundary in plan.boundaries()[:-1]:
        ax.axvline(boundary, color="grey", linestyle="--", linewidth=0.8)
    ax.set_yticks(range(len(tasks)), tasks)
    ax.invert_yaxis()
    ax.set_xlim(0, plan.total_steps)
    ax.set_xlabel("step")
    ax.set_title(f"{plan.strategy} plan: {len(plan.stages)} stages, {plan.total_steps:,} steps "
                 "(opacity = share of the stage; outlined = introduced)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def affinity_figure(tasks: list[str], matrix, title: str):
    """Heatmap of a task x task cosine-similarity matrix (values in [-1, 1], diverging colours)."""
    size = 1.2 + 0.9 * len(tasks)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    values = [[float(x) for x in row] for row in matrix]
    image = ax.imshow(values, cmap="RdBu", vmin=-1, vmax=1)
    ax.set_xticks(range(len(tasks)), tasks, rotation=40, ha="right")
    ax.set_yticks(range(len(tasks)), tasks)
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if abs(value) > 0.6 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title(title)
    fig.tight_layout()
    return fig


# -- run report figures (``ernie-cmtl report``) ------------------------------------------------------------

Series = list[tuple[int, float]]
"""(step, value) points, in step order."""


def smooth(values: list[float]) -> list[float]:
    """A light, bias-corrected exponential moving average: none for up to 10 points, then a decay that grows
    with the length (at most 0.9), so that each smoothed point averages about the last tenth of the series."""
    beta = min(0.9, max(0.0, 1.0 - 10.0 / max(len(values), 1)))
    out, avg, weight = [], 0.0, 0.0
    for value in values:
        avg = beta * avg + (1 - beta) * value
        weight = beta * weight + (1 - beta)
        out.append(avg / weight)
    return out


def shade_stages(ax, spans: list[tuple[int, int]], labels: bool = True) -> None:
    """Alternating background bands, one per stage ``(start, end)``, a dashed line at each inner boundary and,
    if ``labels``, "stage k" written just above the axes (in the margin, so never over the data)."""
    if not spans:
        return
    width = max(spans[-1][1] - spans[0][0], 1)
    for k, (start, end) in enumerate(spans):
        if k % 2 == 0:
            ax.axvspan(start, end, color="0.9", zorder=0, linewidth=0)
        if k:
            ax.axvline(start, color="0.55", linestyle="--", linewidth=0.8, zorder=1)
        share = (end - start) / width
        if labels and share >= 0.02:
            ax.text((start + end) / 2, 1.01, f"stage {k}" if share >= 0.08 else str(k), ha="center",
                    va="bottom", fontsize=8, color="0.35", transform=ax.get_xaxis_transform(), clip_on=False)


def _log_scale_if_wide(ax, values: list[float]) -> None:
    positive = [v for v in values if v > 0 and v == v]
    if positive and max(positive) / min(positive) > 8:
        import math

        from matplotlib.ticker import FuncFormatter

        def minor(value: float, _: int) -> str:  # label 2, 3 and 5 of each decade, in plain numbers
            return f"{value:g}" if round(value / 10 ** math.floor(math.log10(value))) in (2, 3, 5) else ""

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 1 and 10 rather than 10⁰, 10¹
        ax.yaxis.set_minor_formatter(FuncFormatter(minor))
        low, high = ax.get_ylim()  # reach a labelled decade when one is close, so both ends carry a number
        above, below = 10 ** math.ceil(math.log10(high)), 10 ** math.floor(math.log10(low))
        ax.set_ylim(below if low / below < 1.5 else low, above if above / high < 1.5 else high)


def _step_limits(ax, spans: list[tuple[int, int]]) -> None:
    """x from 0 to the last step, with a small margin so that points on the last step are not cut."""
    if spans:
        end = spans[-1][1]
        ax.set_xlim(0, end + max(1.0, 0.01 * end))
    else:
        ax.set_xlim(left=0)


def _finish(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _task_legend(ax, colors: dict[str, tuple], styles: list[tuple[str, dict]]) -> None:
    """One legend outside the axes (right): a colour per task, then grey samples of the line styles used."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, linewidth=2, label=t) for t, c in colors.items()]
    handles += [Line2D([], [], color="0.3", label=label, **style) for label, style in styles]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def plot_task_losses(train: dict[str, Series], valid: dict[str, Series], spans: list[tuple[int, int]],
                     colors: dict[str, tuple], path: Path, title: str) -> Path:
    """Training loss per task against step (smoothed line, raw values faint), held-out loss as open circles,
    stage bands in the background. A log scale when the tasks' losses span more than a factor of 8."""
    fig, ax = plt.subplots(figsize=(11, 4.8))
    shade_stages(ax, spans)
    values = []
    for task, points in train.items():
        if not points:
            continue
        steps, losses = [p[0] for p in points], [p[1] for p in points]
        ax.plot(steps, losses, color=colors[task], alpha=0.35, linewidth=0.8, zorder=2)
        ax.plot(steps, smooth(losses), color=colors[task], linewidth=1.8, zorder=3)
        values += losses
    for task, points in valid.items():
        if not points:
            continue
        ax.plot([p[0] for p in points], [p[1] for p in points], linestyle="none", marker="o", markersize=5,
                markerfacecolor="white", markeredgecolor=colors[task], markeredgewidth=1.4, zorder=4)
        values += [p[1] for p in points]
    _log_scale_if_wide(ax, values)
    _step_limits(ax, spans)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title, pad=16)
    ax.grid(True, axis="y", alpha=0.3)
    _task_legend(ax, {t: colors[t] for t in colors if train.get(t) or valid.get(t)},
                 [("train (smoothed)", {"linewidth": 1.8}), ("train (raw)", {"linewidth": 0.8, "alpha": 0.3}),
                  ("held-out", {"linestyle": "none", "marker": "o", "markerfacecolor": "white"})])
    return _finish(fig, path)


def plot_forgetting(loss: dict[str, Series], accuracy: dict[str, Series], forgetting: dict[str, Series],
                    introduced: dict[str, int], spans: list[tuple[int, int]], colors: dict[str, tuple],
                    path: Path, title: str) -> Path:
    """Forgetting curves: held-out loss (and accuracy, when given) of every task at every evaluation, dotted
    before the task's introduction, solid after; a bottom panel with the forgetting measure (held-out loss
    minus the best so far) after introduction. Stage bands and boundaries in every panel."""
    panels = [("held-out loss", loss)]
    if any(accuracy.values()):
        panels.append(("held-out accuracy", accuracy))
    if any(forgetting.values()):
        panels.append(("forgetting\n(loss − best so far)", forgetting))
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 1.2 + 2.9 * len(panels)), sharex=True,
                             squeeze=False)
    axes = [row[0] for row in axes]
    dotted = False
    for i, (ax, (label, series)) in enumerate(zip(axes, panels, strict=True)):
        shade_stages(ax, spans, labels=i == 0)
        values = []
        for task, points in series.items():
            if not points:
                continue
            start = introduced.get(task, 0)
            before = [p for p in points if p[0] <= start]
            after = [p for p in points if p[0] >= start]
            if len(before) > 1 or (before and not after):
                dotted = True
                ax.plot([p[0] for p in before], [p[1] for p in before], color=colors[task], linestyle=":",
                        linewidth=1.2, alpha=0.7, marker=".", markersize=4, zorder=2)
            if after:
                ax.plot([p[0] for p in after], [p[1] for p in after], color=colors[task], linewidth=1.6,
                        marker="o", markersize=3.5, zorder=3)
            values += [p[1] for p in points]
        if series is loss:
            _log_scale_if_wide(ax, values)
        elif series is forgetting:  # >= 0 by definition; keep 0 at the bottom even when nothing was forgotten
            top = max(values, default=0.0) or 0.01
            ax.set_ylim(-0.04 * top, 1.08 * top)
            if values and max(values) <= 0:
                ax.text(0.5, 0.5, "no forgetting: every task is at its best held-out loss so far",
                        transform=ax.transAxes, ha="center", va="center", fontsize=9, color="0.4",
                        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.9}, zorder=5)
        ax.set_ylabel(label)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_title(title, pad=16)
    axes[-1].set_xlabel("step")
    _step_limits(axes[-1], spans)
    styles = [("after introduction", {"linewidth": 1.6, "marker": "o", "markersize": 3.5})]
    if dotted:
        styles.append(("before introduction", {"linestyle": ":", "linewidth": 1.2}))
    _task_legend(axes[0], {t: colors[t] for t in colors if loss.get(t)}, styles)
    fig.tight_layout()
    return _finish(fig, path)


def plot_throughput(points: list[tuple[int, str, dict[str, float]]], spans: list[tuple[int, int]],
                    colors: dict[str, tuple], path: Path, title: str) -> Path:
    """Throughput against step: one panel each for tokens/s, sequences/s and (if logged) MFU. Each logged
    window is a dot coloured by the task of its step, joined by a thin grey line; a dashed line is the
    median."""
    import statistics

    labels = {"tokens_per_s": "tokens/s", "sequences_per_s": "sequences/s", "mfu": "MFU"}
    metrics = [(key, label) for key, label in labels.items() if any(key in values for _, _, values in points)]
    fig, axes = plt.subplots(len(metrics), 1, figsize=(11, 1.2 + 2.4 * len(metrics)), sharex=True,
                             squeeze=False)
    axes = [row[0] for row in axes]
    for i, (ax, (key, label)) in enumerate(zip(axes, metrics, strict=True)):
        shade_stages(ax, spans, labels=i == 0)
        rows = [(step, task, values[key]) for step, task, values in points
                if values.get(key) is not None and values[key] == values[key]]
        ax.plot([r[0] for r in rows], [r[2] for r in rows], color="0.6", linewidth=0.8, zorder=2)
        for task in dict.fromkeys(r[1] for r in rows):
            mine = [r for r in rows if r[1] == task]
            ax.scatter([r[0] for r in mine], [r[2] for r in mine], color=colors[task], s=14, zorder=3)
        if rows:
            median = statistics.median(r[2] for r in rows)
            ax.axhline(median, color="black", linestyle="--", linewidth=0.9, zorder=2)
            shown = (f"{median:.1%}" if key == "mfu" else f"{median:,.0f}" if median >= 100
                     else f"{median:.3g}")
            ax.text(1.0, median, f" median {shown}", transform=ax.get_yaxis_transform(), va="center",
                    fontsize=8, clip_on=False)
        ax.set_ylim(bottom=0)
        if key == "mfu":
            from matplotlib.ticker import PercentFormatter

            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_ylabel(label)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_title(title, pad=16)
    axes[-1].set_xlabel("step")
    _step_limits(axes[-1], spans)
    seen = {task for _, task, _ in points}
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, marker="o", linestyle="none", label=t) for t, c in colors.items()
               if t in seen]
    handles.append(Line2D([], [], color="black", linestyle="--", linewidth=0.9, label="median"))
    axes[0].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.12, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    return _finish(fig, path)


def plot_retention(records: list[dict], spans: list[tuple[int, int]], path: Path, title: str) -> Path:
    """What a continued run still knows of its ``model.init_from`` source, against step: representation drift
    (mean cosine and linear CKA of the source's and the current mean-pooled states; 1 = unchanged) and, when a
    pair set is monitored, zero-shot similarity (Spearman) with the source's value as a dashed line."""
    similarity = [r for r in records if r.get("similarity_spearman") is not None]
    fig, axes = plt.subplots(2 if similarity else 1, 1, figsize=(11, 3.2 + (2.8 if similarity else 0)),
                             sharex=True, squeeze=False)
    axes = [row[0] for row in axes]
    shade_stages(axes[0], spans)
    for key, label, color in (("drift_cosine", "mean cosine to source", "tab:blue"),
                              ("drift_cka", "linear CKA to source", "tab:orange")):
        points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        axes[0].plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, color=color,
                     label=label)
    axes[0].axhline(1.0, color="black", linestyle="--", linewidth=0.9)
    axes[0].set_ylabel("drift (1 = source)")
    axes[0].legend(loc="lower left", fontsize=8, frameon=False)
    axes[0].grid(True, axis="y", alpha=0.3)
    if similarity:
        ax = axes[1]
        shade_stages(ax, spans, labels=False)
        ax.plot([r["step"] for r in similarity], [r["similarity_spearman"] for r in similarity], marker="o",
                markersize=3, color="tab:green", label="zero-shot similarity (Spearman)")
        source = similarity[0].get("source_similarity_spearman")
        if source is not None:
            ax.axhline(source, color="black", linestyle="--", linewidth=0.9, label=f"source {source:.4f}")
        ax.set_ylabel("Spearman")
        ax.legend(loc="lower left", fontsize=8, frameon=False)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_title(title, pad=16)
    axes[-1].set_xlabel("step")
    _step_limits(axes[-1], spans)
    fig.tight_layout()
    return _finish(fig, path)
