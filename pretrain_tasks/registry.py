"""Task discovery now lives in the core (:mod:`ernie_cmtl.registry`); this name stays importable for plugins."""

from ernie_cmtl.registry import (  # noqa: F401
    ENTRY_POINT_GROUP,
    TaskEntry,
    TaskRegistryError,
    available_tasks,
    discover,
    get_task_class,
    task_package,
)
