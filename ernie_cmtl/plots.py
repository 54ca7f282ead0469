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
