"""A task is empty only when its builder says so (``EmptyTaskError``); any other exception of a builder is a bug:
the build stops, the traceback goes to ``RUN_DIR/error.log`` and the CLI exits 1 with one line naming it.

The builders are real task plugins registered through the ``ernie_cmtl.tasks`` entry-point group from a
temporary ``*.dist-info``, as a third party's would be; the corpus is real prose (the standard library's
docstrings)."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

from data_builders.corpus import iter_stdlib_documents
from ernie_cmtl.cli import main
from ernie_cmtl.registry import discover

PLUGIN = '''
from data_builders.errors import EmptyTaskError
from pretrain_tasks.capitalization import CapitalizationTask


class MisnamedColumnTask(CapitalizationTask):
    """Capitalization whose builder has a bug: it renames a column that does not exist (datasets raises a
    ValueError, which the build used to take for "this corpus gives no examples")."""

    name = "misnamed_column"

    def build(self, documents, ctx):
        return super().build(documents, ctx).rename_column("labelz", "labels")


class NeverEnoughTask(CapitalizationTask):
    """Capitalization that asks for more text than any corpus has: its builder says so."""

    name = "never_enough"

    def build(self, documents, ctx):
        raise EmptyTaskError(f"task never_enough needs more than the {len(documents)} documents it got")
'''


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "plugins"
    dist = directory / "build_error_plugins-0.1.dist-info"
    dist.mkdir(parents=True)
    (directory / "build_error_plugins.py").write_text(PLUGIN)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: build-error-plugins\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ernie_cmtl.tasks]\nmisnamed_column = build_error_plugins:"
                                           "MisnamedColumnTask\nnever_enough = build_error_plugins:NeverEnoughTask\n")
    monkeypatch.syspath_prepend(str(directory))
    importlib.invalidate_caches()
    discover.cache_clear()
    yield
    discover.cache_clear()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prose") / "prose.txt"
    docs = [d["paragraphs"] for d in iter_stdlib_documents(6) if len(d["paragraphs"]) >= 5][:40]
    path.write_text("\n\n".join("\n".join(paragraphs) for paragraphs in docs) + "\n")
    return path


def _build_data(tmp_path: Path, corpus: Path, cache_dir: Path, tasks: str, capsys) -> tuple[int, str, Path]:
    run_dir = tmp_path / "run"
    code = main(["build-data", "--corpus", str(corpus), "--run-dir", str(run_dir), "--quiet",
                 "--set", f"data.cache_dir={cache_dir}", "--set", "tokenizer.vocab_size=1000",
                 "--set", f"tasks={tasks}"])
    return code, capsys.readouterr().err, run_dir


def test_a_builder_bug_stops_the_build_with_its_traceback_in_the_run_dir(tmp_path, corpus, cache_dir, plugins,
                                                                         capsys):
    code, err, run_dir = _build_data(tmp_path, corpus, cache_dir, "{capitalization: {}, misnamed_column: {}}",
                                     capsys)
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("ernie-cmtl:")]
    assert len(lines) == 1 and "internal error" in lines[0] and "Traceback" not in err
    log = run_dir / "error.log"
    assert re.search(r"report it with (\S+)\)", lines[0]).group(1) == str(log)
    traceback = log.read_text()
    assert "Traceback" in traceback and "labelz" in traceback and "rename_column" in traceback
    report = run_dir / "data_report.json"  # not an empty task: no account claims the corpus gave it nothing
    assert not report.exists() or "misnamed_column" not in json.loads(report.read_text())["empty_tasks"]


def test_an_empty_task_is_reported_with_its_reason(tmp_path, corpus, cache_dir, plugins, capsys):
    code, err, run_dir = _build_data(tmp_path, corpus, cache_dir, "{capitalization: {}, never_enough: {}}", capsys)
    assert code == 0, err
    account = json.loads((run_dir / "data_report.json").read_text())
    assert account["empty_tasks"] == {"never_enough": "train split: task never_enough needs more than the "
                                                      f"{account['split']['train_documents']} documents it got"}
    assert account["tasks"]["capitalization"]["train"] > 0
    assert not (run_dir / "error.log").exists()
