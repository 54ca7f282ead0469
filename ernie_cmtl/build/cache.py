"""The build cache: keys, atomic dataset saves, and the small JSON files beside them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets import Dataset, load_from_disk


def digest(*parts: object) -> str:
    """A 16-hex-digit cache key of JSON-able ``parts`` (order matters, dict keys do not)."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_dataset(path: Path, build: Callable[[], Dataset]) -> Dataset:
    """Load ``path`` if it was built before; else build and save atomically (temp dir, then rename)."""
    if path.is_dir():
        return load_from_disk(str(path))
    dataset = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-"))
    try:
        # An empty dataset saved in 0 shards cannot be loaded back (datasets raises IndexError): keep one.
        dataset.save_to_disk(str(tmp), **({"num_shards": 1} if len(dataset) == 0 else {}))
        os.rename(tmp, path)
    except OSError:
        if not path.is_dir():  # another process did not win the race: a real error
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_from_disk(str(path))


def write_json(path: Path, value: Any) -> None:
    """``value`` as JSON at ``path``, replaced atomically: the ranks of one run may write it at once, so each
    process writes its own temporary file first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)

