"""Guard tests for the borders between the packages (docs/ARCHITECTURE.md), read from the source with ``ast``.

- The core (``ernie_cmtl``) owns the task contract and reaches every task, built-in or third-party, through
  the ``ernie_cmtl.tasks`` entry points: it imports nothing of ``pretrain_tasks``.
- Builders know nothing of the model: ``data_builders`` imports nothing of ``ernie_cmtl`` or ``pretrain_tasks``.
- No import circle among the core's modules (lazy imports inside functions count: a circle hidden in a
  function body is still a circle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ernie_cmtl.config import ModelConfig
from ernie_cmtl.model import encoder_flops_per_token, mlm_decoder_flops
from ernie_cmtl.registry import get_task_class
from ernie_cmtl.tasks import SpecialIds
from ernie_cmtl.trainer import training_flops_per_token

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth of the syntax tree (``from a import b`` gives a and a.b)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def package_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize(("package", "forbidden"), [
    ("ernie_cmtl", ("pretrain_tasks",)),
    ("data_builders", ("ernie_cmtl", "pretrain_tasks", "downstream")),
])
def test_a_package_imports_nothing_across_its_border(package: str, forbidden: tuple[str, ...]) -> None:
    crossings = [f"{path.relative_to(ROOT)} imports {module}"
                 for path in package_files(package) for module in sorted(imported_modules(path))
                 if module.split(".")[0] in forbidden]
    assert not crossings, "\n".join(crossings)


def import_graph(package: str) -> dict[str, set[str]]:
    files = {module_name(path): path for path in package_files(package)}
    return {name: {m for m in imported_modules(path) if m in files and m != name} for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_circle_and_accepts_a_tree() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle_among_the_core_modules() -> None:
    cycle = find_cycle(import_graph("ernie_cmtl"))
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_mfu_counts_only_what_a_head_decodes() -> None:
    """perf/mfu's FLOPs come from what each task's head declares: capitalization's 2-way head decodes no
    vocabulary (its count does not change with the vocabulary size), knowledge masking decodes the masked
    share of tokens through the vocabulary decoder."""
    seq_len = 128
    small, large = ModelConfig(flavour="debug", vocab_size=8000), ModelConfig(flavour="debug", vocab_size=30522)
    special = SpecialIds(pad=0, cls=1, sep=2, mask=3, unk=4, vocab_size=8000, first_regular=5)

    def task(name: str):
        cls = get_task_class(name)
        return cls(cls.config_class(), special)

    capitalization, masking = task("capitalization"), task("knowledge_masking")
    h = small.hidden_size
    assert training_flops_per_token(capitalization, small, seq_len) == \
        training_flops_per_token(capitalization, large, seq_len) == \
        3.0 * (encoder_flops_per_token(small, seq_len) + 2.0 * h * capitalization.num_labels)
    assert training_flops_per_token(masking, large, seq_len) == pytest.approx(
        3.0 * (encoder_flops_per_token(large, seq_len) + masking.config.mask_prob * mlm_decoder_flops(large)))
    # a sequence-level head runs on one token per sequence: far less than a vocabulary decoder
    reordering = task("sentence_reordering")
    assert training_flops_per_token(reordering, large, seq_len) < training_flops_per_token(masking, large, seq_len)


def test_no_module_of_the_four_packages_outgrows_one_reading() -> None:
    """~550 lines a file (docs/ARCHITECTURE.md): past that a module holds more than one responsibility."""
    long = [f"{path.relative_to(ROOT)}: {n} lines"
            for package in ("ernie_cmtl", "data_builders", "downstream", "pretrain_tasks")
            for path in package_files(package)
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > 560]
    assert not long, "\n".join(long)
