"""The bench/ scripts stay runnable: each script's ``--help`` works (its imports resolve, as when it is run as
``python bench/X.py``), each library module imports, and the section writer that publishes their tables keeps
the rest of docs/RESULTS.md."""

from __future__ import annotations

import contextlib
import io
import runpy
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
MODULES = sorted(p for p in BENCH.glob("*.py") if p.name != "__init__.py")
SCRIPTS = [p for p in MODULES if 'if __name__ == "__main__":' in p.read_text()]


@pytest.fixture
def bench_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # ``python bench/X.py`` puts bench/ first on sys.path; some scripts import their siblings that way
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.syspath_prepend(str(BENCH.parent))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bench_script_answers_help(script: Path, bench_on_path: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        runpy.run_path(str(script), run_name="__main__")
    assert stop.value.code == 0, f"{script.name} --help exited {stop.value.code}"
    assert "usage:" in out.getvalue()


@pytest.mark.parametrize("module", [p for p in MODULES if p not in SCRIPTS], ids=lambda p: p.name)
def test_bench_library_module_imports(module: Path, bench_on_path: None) -> None:
    runpy.run_path(str(module), run_name=module.stem)


def test_replace_section_keeps_the_other_sections(bench_on_path: None, tmp_path: Path) -> None:
    from sections import replace_section

    doc = tmp_path / "RESULTS.md"
    doc.write_text("# Title\n\nintro\n\n## A\n\nold a\n\n## B\n\nb stays\n")
    replace_section(doc, "## A\n\nnew a\n")
    assert doc.read_text() == "# Title\n\nintro\n\n## A\n\nnew a\n\n## B\n\nb stays\n"
    replace_section(doc, "## B\n\nnew b\n")
    assert doc.read_text() == "# Title\n\nintro\n\n## A\n\nnew a\n\n## B\n\nnew b\n"
    replace_section(doc, "## C\n\nc\n")
    assert doc.read_text().endswith("## B\n\nnew b\n\n## C\n\nc\n")
    # a heading that only starts like another one is a different section
    replace_section(doc, "## A longer\n\nx\n")
    assert "## A\n\nnew a\n" in doc.read_text() and doc.read_text().endswith("## A longer\n\nx\n")
