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


def test_continue_pretraining_names_each_setting_its_own_run(bench_on_path: None) -> None:
    """Runs are reused by name, so two settings must never share one: a sweep's μ or λ, or another seed, is in the
    name; the defaults keep the names of the runs already made, and cmtl_best with one method is that run."""
    import argparse

    bench = runpy.run_path(str(BENCH / "continue_pretraining.py"), run_name="continue_pretraining")
    run_name = bench["run_name"]

    def names(**changed: object) -> list[str]:
        args = argparse.Namespace(**{"best": "distill", "warmup_steps": 20, "l2sp": 0.05, "distill": 1.0,
                                     "pretrain_seed": 0, **changed})
        return [run_name(arm, args) for arm in ("none", "cmtl", "cmtl_distill", "cmtl_l2sp", "cmtl_best",
                                                 "mlm_only_best")]

    assert names() == ["none", "cmtl", "cmtl_distill", "cmtl_l2sp", "cmtl_distill", "mlm_only_best"]
    assert names(distill=0.1) == ["none", "cmtl", "cmtl_distill_mu0.1", "cmtl_l2sp", "cmtl_distill_mu0.1",
                                  "mlm_only_best_mu0.1"]
    assert names(best="l2sp,distill", l2sp=0.2)[4] == "cmtl_best_lambda0.2"
    assert names(pretrain_seed=1) == ["none", "cmtl_seed1", "cmtl_distill_seed1", "cmtl_l2sp_seed1",
                                      "cmtl_distill_seed1", "mlm_only_best_seed1"]
