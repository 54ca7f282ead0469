"""The one error a builder raises on purpose when its input gives a task nothing to learn from."""

from __future__ import annotations


class EmptyTaskError(ValueError):
    """This corpus (or tokenizer) gives the task no examples: one line saying why and what would be needed.

    Only this error marks a task as empty (reported in the data account, dropped with
    ``data.skip_empty_tasks``); any other exception from a builder is a bug and stops the build."""
