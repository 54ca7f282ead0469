"""The offline build: from a run config to per-task Arrow datasets, built once and cached.

:mod:`~ernie_cmtl.build.prepare` runs the steps in order (documents -> split -> tokenizer -> shared tokens ->
examples -> account); :mod:`~ernie_cmtl.build.examples` builds one task's examples;
:mod:`~ernie_cmtl.build.parallel` owns the forked worker pools; :mod:`~ernie_cmtl.build.cache` and
:mod:`~ernie_cmtl.build.shards` keep the cache and the shard builds; :mod:`~ernie_cmtl.build.replay` mixes
a second corpus into the masked-LM examples. What the training loop reads every step is :mod:`ernie_cmtl.stream`.
"""


class DataBuildError(ValueError):
    """The build cannot go on (corpus too small to split, a sharded build incomplete, no task with examples):
    one line saying why and what to do. A user error, not a bug."""
