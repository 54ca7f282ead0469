"""Task discovery through the ``ernie_cmtl.tasks`` entry-point group (built-in tasks use it too)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points

ENTRY_POINT_GROUP = "ernie_cmtl.tasks"


class TaskRegistryError(RuntimeError):
    """Two packages register one task name, or an entry point does not load to a task class."""


@dataclass(frozen=True)
class TaskEntry:
    name: str
    package: str
    entry_point: EntryPoint


def _package_of(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else ep.value.split(":")[0].split(".")[0]


@cache
def discover() -> dict[str, TaskEntry]:
    """Every registered task by name. A name registered twice (by two distributions, or twice in one) is an
    error naming both; duplicated metadata of one distribution seen twice on ``sys.path`` is not."""
    found: dict[str, TaskEntry] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        entry = TaskEntry(ep.name, _package_of(ep), ep)
        previous = found.get(ep.name)
        if previous is not None:
            if previous.package == entry.package and previous.entry_point.value == ep.value:
                continue
            raise TaskRegistryError(
                f"task name '{ep.name}' is registered twice: by {previous.package} "
                f"({previous.entry_point.value}) and by {entry.package} ({ep.value})"
            )
        found[ep.name] = entry
    return found


def available_tasks() -> list[str]:
    return sorted(discover())


def get_task_class(name: str) -> type:
    """Load the task class registered under ``name``."""
    from ernie_cmtl.tasks import PretrainTask

    entries = discover()
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none (is ernie-cmtl installed with pip?)"
        raise KeyError(f"unknown task '{name}' (registered tasks: {known})")
    obj = entries[name].entry_point.load()
    if not (isinstance(obj, type) and issubclass(obj, PretrainTask)):
        raise TaskRegistryError(f"entry point '{name}' ({entries[name].entry_point.value}) is not a PretrainTask")
    if obj.name != name:
        raise TaskRegistryError(f"entry point '{name}' loads task class {obj.__name__} named '{obj.name}'")
    return obj


def task_package(name: str) -> str:
    return discover()[name].package
