"""What the benchmarks that publish to docs/RESULTS.md share: a section replaced in place, mean ± sd, and the
reuse of finished fine-tuning runs (so an interrupted benchmark redoes only what is missing)."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

FINETUNE_KEYS = ("seed", "max_steps", "lr", "batch_size", "max_seq_len", "max_train_examples", "tasks", "sharing")


def spread(values: list[float]) -> str:
    """``mean ± sd`` of scores in [0, 1], x100, one decimal (sd 0 for a single value)."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * sd:.1f}"


def replace_section(path: Path, text: str) -> None:
    """``text`` (a markdown section: its first line is its ``## `` heading) into ``path`` in place of the section
    of the same heading, up to the next ``## ``; appended when ``path`` has none. The rest of the file is kept."""
    heading = text.splitlines()[0]
    old = path.read_text() if path.is_file() else ""
    start = old.find(heading + "\n")
    if start >= 0:
        end = old.find("\n## ", start + len(heading))
        new = old[:start] + text.rstrip("\n") + "\n" + (old[end:] if end >= 0 else "")
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + text
    path.write_text(new if new.endswith("\n") else new + "\n")


def publish(lines: list[str], out: Path, work: Path, results: dict) -> None:
    """The section (``lines``) into ``out`` in place of its old copy, the raw results to ``work``/results.json,
    and the section on stdout."""
    section = "\n".join(lines) + "\n"
    replace_section(out, section)
    work.mkdir(parents=True, exist_ok=True)
    (work / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(section)


def finished(run_dir: Path, checkpoint: Path, config: Any) -> dict | None:
    """The results.json of a fine-tuning run already finished from ``checkpoint`` with the settings of ``config``
    (a ``FinetuneConfig``), else None: a run with other settings or another encoder is redone, not reused."""
    import yaml

    results, saved = run_dir / "results.json", run_dir / "config.yaml"
    if not (results.is_file() and saved.is_file()):
        return None
    before = yaml.safe_load(saved.read_text())
    data = json.loads(results.read_text())
    if any(before.get(k) != getattr(config, k) for k in FINETUNE_KEYS):
        return None
    if Path(data["checkpoint"]).resolve() != Path(checkpoint).resolve():
        return None
    print(f"{run_dir.name}: reusing its finished results.json", file=sys.stderr, flush=True)
    return data
