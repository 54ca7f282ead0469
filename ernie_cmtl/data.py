"""The names this module always had, kept importable: the build moved to :mod:`ernie_cmtl.build` (prepare,
examples, parallel, cache, shards) and the run-time sampler to :mod:`ernie_cmtl.stream`. New code imports from
there."""

from ernie_cmtl.assembly import without_tasks
from ernie_cmtl.build import DataBuildError
from ernie_cmtl.build.cache import cached_dataset
from ernie_cmtl.build.examples import (
    BuildProgress,
    TaskJob,
    TaskResult,
    build_in_blocks,
    build_task,
    build_tasks,
    make_tasks,
    sentence_tokens_in_blocks,
)
from ernie_cmtl.build.parallel import fork_available, map_in_blocks
from ernie_cmtl.build.prepare import PreparedData, prepare_data, split_documents, statistics_sample
from ernie_cmtl.build.shards import (
    Shard,
    built_shards,
    missing_shards,
    parse_shard,
    shard_documents,
    shard_of,
)
from ernie_cmtl.stream import GROUPING_SALT, TaskStream, example_lengths, hash_seed

__all__ = [
    "GROUPING_SALT",
    "BuildProgress",
    "DataBuildError",
    "PreparedData",
    "Shard",
    "TaskJob",
    "TaskResult",
    "TaskStream",
    "build_in_blocks",
    "build_task",
    "build_tasks",
    "built_shards",
    "cached_dataset",
    "example_lengths",
    "fork_available",
    "hash_seed",
    "make_tasks",
    "map_in_blocks",
    "missing_shards",
    "parse_shard",
    "prepare_data",
    "sentence_tokens_in_blocks",
    "shard_documents",
    "shard_of",
    "split_documents",
    "statistics_sample",
    "without_tasks",
]
