"""Tasks as plugins: discovery through the entry-point group, duplicate names, a third-party package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ernie_cmtl.registry import available_tasks, get_task_class, task_package

REPO = Path(__file__).resolve().parents[1]
BUILT_IN = ["capitalization", "discourse_relation", "ir_relevance", "knowledge_masking", "sentence_distance",
            "sentence_reordering", "token_document_relation"]


def test_built_in_tasks_register_through_the_entry_point_group():
    assert set(BUILT_IN) <= set(available_tasks())
    for name in BUILT_IN:
        cls = get_task_class(name)
        assert cls.name == name and cls.level in ("token", "sequence")
        assert task_package(name) == "ernie-cmtl"


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(KeyError, match="registered tasks: capitalization"):
        get_task_class("no_such_task")


def _env(extra_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def test_a_duplicate_task_name_is_an_error_naming_both_packages(tmp_path: Path):
    dist = tmp_path / "fake_duplicate-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-duplicate\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ernie_cmtl.tasks]\nknowledge_masking = fake_mod:Task\n")
    proc = subprocess.run([sys.executable, "-m", "ernie_cmtl.cli", "tasks"], capture_output=True, text=True,
                          env=_env(tmp_path), timeout=120)
    assert proc.returncode == 2  # an installation the user can fix (cli.EXIT_USER_ERROR)
    message = proc.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "'knowledge_masking' is registered twice" in message
    assert "ernie-cmtl" in message and "fake-duplicate" in message


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """examples/plugin_task installed with pip (into its own target directory on the path)."""
    target = tmp_path_factory.mktemp("plugin_site")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(REPO / "examples" / "plugin_task")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return target


def test_installed_plugin_is_listed(plugin_site: Path):
    proc = subprocess.run([sys.executable, "-m", "ernie_cmtl.cli", "tasks"], capture_output=True, text=True,
                          env=_env(plugin_site), timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("punctuation_restoration"))
    assert "ernie-cmtl-punctuation" in line and "token" in line


@pytest.mark.slow
def test_installed_plugin_trains_with_no_edit_to_the_core(plugin_site: Path, tmp_path: Path, wiki_shards,
                                                          cache_dir):
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "ernie_cmtl.cli", "pretrain", "--corpus", *wiki_shards, "--run-dir",
            str(run_dir), "--quiet",
            "--set", "tasks={punctuation_restoration: {}}", "--set", f"data.cache_dir={cache_dir}",
            "--set", "data.max_documents=300", "--set", "tokenizer.vocab_size=4000",
            "--set", "model.hidden_size=64", "--set", "model.intermediate_size=256",
            "--set", "train.max_steps=60", "--set", "train.batch_size=16", "--set", "train.lr=2e-3",
            "--set", "train.warmup_steps=5", "--set", "train.eval_every=30", "--set", "train.log_every=5"]
    proc = subprocess.run(args, capture_output=True, text=True, env=_env(plugin_site), timeout=900)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r.get("split") == "valid"]
    assert {r["task"] for r in records if r["kind"] in ("train", "valid")} == {"punctuation_restoration"}
    # ln 5 = 1.61 is uniform guessing; 60 tiny steps learn the label prior (~0.42), not yet much beyond it
    assert valid[-1]["loss"] <= valid[0]["loss"] < 0.6
