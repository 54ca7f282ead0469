"""The task contract now lives in the core (:mod:`ernie_cmtl.tasks`); this name stays importable for plugins."""

from ernie_cmtl.tasks import (  # noqa: F401  (names without __all__, kept importable)
    IGNORE_INDEX,
    BuildContext,
    Level,
    PretrainTask,
    SpecialIds,
    collate_sequence_classification,
    collate_token_classification,
    pad_sequences,
)
