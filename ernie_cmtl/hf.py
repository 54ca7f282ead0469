"""Hugging Face checkpoints in and out: BERT / ERNIE model directories <-> our encoder and masked-LM head.

One declarative table (:data:`LAYER_MAP`, :data:`EMBEDDING_MAP`, :data:`MLM_MAP`) names every parameter on both
sides, and both directions walk it, so import and export cannot drift apart. Our encoder is BERT (post-LN,
erf GELU, absolute positions) with a task embedding added to the input and the attention's q/k/v projections
fused into one ``qkv`` linear: the only transform the table needs is that fusion (``[q; k; v]`` along the
output dimension, each part head-major like HF's).

Import (:func:`load_hf_model`) reads ``config.json`` and ``model.safetensors`` / ``pytorch_model.bin`` (sharded
or not) of ``BertModel``, ``BertForMaskedLM``, ``BertForPreTraining``, ``ErnieModel``, ``ErnieForMaskedLM`` and
``ErnieForPreTraining`` checkpoints, with or without the ``bert.``/``ernie.`` prefix, legacy
``LayerNorm.gamma``/``beta`` names, and sentence-transformers directories (weights at the root). Export
(:func:`export_checkpoint`) writes ``ErnieForPreTraining`` (task embeddings kept, ``use_task_id``) or
``BertForMaskedLM`` (one task's embedding folded into the position embeddings, exactly: both are added to
every position before the same LayerNorm) plus the tokenizer files, loadable by ``transformers`` offline.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

SUPPORTED_ARCHITECTURES = ("BertModel", "BertForMaskedLM", "BertForPreTraining", "ErnieModel",
                           "ErnieForMaskedLM", "ErnieForPreTraining")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")

# ---------------------------------------------------------------------------------------------------------
# The table: (our name, HF names). Ours are relative to ``Encoder`` / ``MaskedLMHead``; HF names are
# relative to the ``bert.`` / ``ernie.`` base model (MLM names are absolute, as HF writes them). Several HF
# names: concatenated along dim 0 into ours ({p} is weight or bias, {i} the layer).

EMBEDDING_MAP: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("embeddings.word.weight", ("embeddings.word_embeddings.weight",)),
    ("embeddings.position.weight", ("embeddings.position_embeddings.weight",)),
    ("embeddings.segment.weight", ("embeddings.token_type_embeddings.weight",)),
    ("embeddings.norm.{p}", ("embeddings.LayerNorm.{p}",)),
)
TASK_EMBEDDING = ("embeddings.task.weight", "embeddings.task_type_embeddings.weight")
LAYER_MAP: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("layers.{i}.attention.qkv.{p}", ("encoder.layer.{i}.attention.self.query.{p}",
                                      "encoder.layer.{i}.attention.self.key.{p}",
                                      "encoder.layer.{i}.attention.self.value.{p}")),
    ("layers.{i}.attention.out.{p}", ("encoder.layer.{i}.attention.output.dense.{p}",)),
    ("layers.{i}.attention_norm.{p}", ("encoder.layer.{i}.attention.output.LayerNorm.{p}",)),
    ("layers.{i}.ffn_in.{p}", ("encoder.layer.{i}.intermediate.dense.{p}",)),
    ("layers.{i}.ffn_out.{p}", ("encoder.layer.{i}.output.dense.{p}",)),
    ("layers.{i}.ffn_norm.{p}", ("encoder.layer.{i}.output.LayerNorm.{p}",)),
)
MLM_MAP: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("dense.{p}", ("cls.predictions.transform.dense.{p}",)),
    ("norm.{p}", ("cls.predictions.transform.LayerNorm.{p}",)),
    ("bias", ("cls.predictions.bias",)),
)
EXTRA_KEYS = ("pooler.dense.weight", "pooler.dense.bias", "cls.seq_relationship.weight",
              "cls.seq_relationship.bias")
"""HF parameters we do not train (the pooler, the next-sentence head): carried through from import to export."""
_IGNORED = ("embeddings.position_ids", "cls.predictions.decoder.weight", "cls.predictions.decoder.bias")
"""Buffers and tied copies: the decoder is the word embedding matrix, its bias ``cls.predictions.bias``."""


def _expand(table: tuple[tuple[str, tuple[str, ...]], ...], num_layers: int = 0) -> Iterator[tuple[str, tuple[str, ...]]]:
    for ours, theirs in table:
        layers = range(num_layers) if "{i}" in ours else [0]
        params = ("weight", "bias") if "{p}" in ours else ("",)
        for i in layers:
            for p in params:
                yield ours.format(i=i, p=p), tuple(t.format(i=i, p=p) for t in theirs)


def encoder_names(num_layers: int) -> list[tuple[str, tuple[str, ...]]]:
    """Every encoder parameter but the task embedding: (our name, HF base-model names)."""
    return [*_expand(EMBEDDING_MAP), *_expand(LAYER_MAP, num_layers)]


def to_ours(hf: dict[str, Tensor], names: list[tuple[str, tuple[str, ...]]]) -> dict[str, Tensor]:
    return {ours: torch.cat([hf[t] for t in theirs]) if len(theirs) > 1 else hf[theirs[0]]
            for ours, theirs in names}


def to_hf(ours: dict[str, Tensor], names: list[tuple[str, tuple[str, ...]]]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for name, theirs in names:
        for t, part in zip(theirs, ours[name].chunk(len(theirs)), strict=True):
            out[t] = part
    return out


# ---------------------------------------------------------------------------------------------------------
# Reading a model directory


class HFCheckpointError(ValueError):
    """A directory is not a usable BERT / ERNIE checkpoint. The message is one line, naming the file and
    what was expected."""


def is_hf_model_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / "config.json").is_file() and any((path / f).is_file() for f in WEIGHT_FILES)


def read_hf_config(directory: str | Path) -> dict[str, Any]:
    """``config.json`` of a BERT / ERNIE checkpoint, checked for what our encoder computes."""
    directory = Path(directory).expanduser()
    path = directory / "config.json"
    if not directory.is_dir():
        raise HFCheckpointError(f"{directory}: not a directory (expected a Hugging Face model directory "
                                "with config.json and model.safetensors or pytorch_model.bin)")
    if not path.is_file():
        raise HFCheckpointError(f"{path} not found: {directory} is not a Hugging Face model directory")
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise HFCheckpointError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise HFCheckpointError(f"{path}: expected a JSON object")
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if model_type not in ("bert", "ernie"):
        raise HFCheckpointError(f"{path}: model_type {model_type!r} is not supported (expected 'bert' or "
                                f"'ernie': {', '.join(SUPPORTED_ARCHITECTURES)})")
    unknown = [a for a in architectures if a not in SUPPORTED_ARCHITECTURES]
    if unknown:
        raise HFCheckpointError(f"{path}: architecture {unknown[0]} is not supported (expected one of "
                                f"{', '.join(SUPPORTED_ARCHITECTURES)})")
    checks = [("hidden_act", "gelu", "erf GELU, as BERT; 'gelu_new' and others would compute another model"),
              ("position_embedding_type", "absolute", "learned absolute positions")]
    for key, expected, why in checks:
        if config.get(key, expected) != expected:
            raise HFCheckpointError(f"{path}: {key} {config[key]!r} is not supported (expected {expected!r}: "
                                    f"{why})")
    if config.get("is_decoder") or config.get("add_cross_attention"):
        raise HFCheckpointError(f"{path}: decoder / cross-attention models are not supported (expected an "
                                "encoder)")
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        if not isinstance(config.get(key), int):
            raise HFCheckpointError(f"{path}: {key} missing or not an integer")
    return config


def model_sizes(config: dict[str, Any]) -> dict[str, Any]:
    """``config.json`` -> the :class:`~ernie_cmtl.config.ModelConfig` fields it decides."""
    return {"hidden_size": config["hidden_size"], "num_layers": config["num_hidden_layers"],
            "num_heads": config["num_attention_heads"], "intermediate_size": config["intermediate_size"],
            "max_position": config.get("max_position_embeddings", 512),
            "type_vocab_size": config.get("type_vocab_size", 2),
            "layer_norm_eps": float(config.get("layer_norm_eps", 1e-12)),
            "vocab_size": config["vocab_size"]}


def _weight_files(directory: Path) -> list[Path]:
    for name in WEIGHT_FILES:
        path = directory / name
        if not path.is_file():
            continue
        if name.endswith(".index.json"):
            try:
                shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
            except (OSError, json.JSONDecodeError, KeyError, AttributeError):
                raise HFCheckpointError(f"{path}: not a weight index (expected a 'weight_map' object)") from None
            missing = [s for s in shards if not (directory / s).is_file()]
            if missing:
                raise HFCheckpointError(f"{directory / missing[0]} not found (listed in {path})")
            return [directory / s for s in shards]
        return [path]
    raise HFCheckpointError(f"{directory}: no weight file (expected one of {', '.join(WEIGHT_FILES)})")


def _read_weights(path: Path) -> dict[str, Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors and torch raise assorted types with long messages
        raise HFCheckpointError(f"cannot read {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
                                ) from None


def _normalize(name: str) -> str:
    """HF's many spellings of one parameter -> the base-model name (``cls.*`` kept as is)."""
    for prefix in ("bert.", "ernie.", "model."):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    if name.endswith(".gamma"):
        name = name[: -len(".gamma")] + ".weight"
    elif name.endswith(".beta"):
        name = name[: -len(".beta")] + ".bias"
    return name


@dataclass
class HFModel:
    """A BERT / ERNIE checkpoint in our terms."""

    directory: Path
    config: dict[str, Any]
    """Its ``config.json``."""
    encoder_state: dict[str, Tensor]
    """``Encoder`` state dict without the task embedding."""
    task_embeddings: Tensor | None
    """ERNIE's ``task_type_embeddings`` (``use_task_id``), else None."""
    mlm_state: dict[str, Tensor] | None
    """``MaskedLMHead`` state (``dense``, ``norm``, ``bias``) when the checkpoint has ``cls.predictions``."""
    extra_state: dict[str, Tensor] = field(default_factory=dict)
    """HF-named parameters we do not train (pooler, next-sentence head), for export."""

    @property
    def sizes(self) -> dict[str, Any]:
        return model_sizes(self.config)

    def encoder_state_for(self, num_task_embeddings: int) -> dict[str, Tensor]:
        """The full ``Encoder`` state: the checkpoint's task-embedding rows, or zeros (then step 0 computes
        exactly what the source model computes), padded with zero rows to ``num_task_embeddings``."""
        hidden = self.config["hidden_size"]
        task = torch.zeros(num_task_embeddings, hidden)
        if self.task_embeddings is not None:
            rows = min(num_task_embeddings, self.task_embeddings.shape[0])
            task[:rows] = self.task_embeddings[:rows]
        return {**self.encoder_state, TASK_EMBEDDING[0]: task}


def load_hf_model(directory: str | Path) -> HFModel:
    """Read a local BERT / ERNIE model directory. Raises :class:`HFCheckpointError` (one line) for anything
    that is not one: no ``config.json``, an unsupported architecture or activation, no or unreadable weight
    file, missing or mis-shaped parameters."""
    directory = Path(directory).expanduser()
    config = read_hf_config(directory)
    files = _weight_files(directory)
    raw: dict[str, Tensor] = {}
    for path in files:
        raw.update({_normalize(k): v for k, v in _read_weights(path).items()})
    where = files[0] if len(files) == 1 else directory
    sizes = model_sizes(config)
    names = encoder_names(sizes["num_layers"])
    missing = [t for _, theirs in names for t in theirs if t not in raw]
    if missing:
        raise HFCheckpointError(f"{where}: parameter {missing[0]} missing ({len(missing)} encoder parameters "
                                "missing; expected a BERT / ERNIE encoder state dict)")
    encoder_state = {k: v.float().contiguous() for k, v in to_ours(raw, names).items()}
    _check_shapes(encoder_state, sizes, where)
    task_embeddings = None
    if config.get("use_task_id") and TASK_EMBEDDING[1] in raw:
        task_embeddings = raw[TASK_EMBEDDING[1]].float()
    mlm_names = list(_expand(MLM_MAP))
    mlm_state = None
    if all(theirs[0] in raw for _, theirs in mlm_names):
        mlm_state = {k: v.float().contiguous() for k, v in to_ours(raw, mlm_names).items()}
        decoder = raw.get("cls.predictions.decoder.weight")
        if decoder is not None and not torch.equal(decoder.float(), encoder_state["embeddings.word.weight"]):
            raise HFCheckpointError(f"{where}: cls.predictions.decoder.weight differs from the word embeddings "
                                    "(an untied decoder is not supported: expected tie_word_embeddings)")
    extra = {k: raw[k].float().contiguous() for k in EXTRA_KEYS if k in raw}
    return HFModel(directory, config, encoder_state, task_embeddings, mlm_state, extra)


def _check_shapes(state: dict[str, Tensor], sizes: dict[str, Any], where: Path) -> None:
    h = sizes["hidden_size"]
    expected = {"embeddings.word.weight": (sizes["vocab_size"], h),
                "embeddings.position.weight": (sizes["max_position"], h),
                "embeddings.segment.weight": (sizes["type_vocab_size"], h),
                "layers.0.attention.qkv.weight": (3 * h, h),
                "layers.0.ffn_in.weight": (sizes["intermediate_size"], h)}
    for name, shape in expected.items():
        if tuple(state[name].shape) != shape:
            raise HFCheckpointError(f"{where}: {name} has shape {tuple(state[name].shape)}, config.json says "
                                    f"{shape}")


# ---------------------------------------------------------------------------------------------------------
# Writing a model directory


@dataclass
class ExportSource:
    """What an export needs, independent of where it came from (a run's checkpoint, an import)."""

    sizes: dict[str, Any]
    """ModelConfig fields of :data:`~ernie_cmtl.config.CHECKPOINT_FIELDS` (plus ``dropout``,
    ``attention_dropout``, ``initializer_range``)."""
    encoder_state: dict[str, Tensor]
    """Full ``Encoder`` state (task embedding included)."""
    mlm_state: dict[str, Tensor] | None
    task_ids: dict[str, int]
    """Task name -> task-embedding row."""
    extra_state: dict[str, Tensor] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)
    """Provenance for the model card: run, steps, tasks."""


def hf_config(source: ExportSource, fmt: Literal["ernie", "bert"]) -> dict[str, Any]:
    s = source.sizes
    config: dict[str, Any] = {
        "architectures": ["ErnieForPreTraining" if fmt == "ernie" else "BertForMaskedLM"],
        "model_type": fmt, "vocab_size": s["vocab_size"], "hidden_size": s["hidden_size"],
        "num_hidden_layers": s["num_layers"], "num_attention_heads": s["num_heads"],
        "intermediate_size": s["intermediate_size"], "hidden_act": "gelu",
        "hidden_dropout_prob": s.get("dropout", 0.1), "attention_probs_dropout_prob": s.get("attention_dropout", 0.1),
        "max_position_embeddings": s["max_position"], "type_vocab_size": s["type_vocab_size"],
        "initializer_range": s.get("initializer_range", 0.02), "layer_norm_eps": s["layer_norm_eps"],
        "pad_token_id": 0, "position_embedding_type": "absolute", "tie_word_embeddings": True}
    if fmt == "ernie":
        config.update(use_task_id=True,
                      task_type_vocab_size=int(source.encoder_state[TASK_EMBEDDING[0]].shape[0]))
    config["ernie_cmtl"] = {"task_ids": dict(source.task_ids), **source.card}
    return config


def hf_state(source: ExportSource, fmt: Literal["ernie", "bert"], task: str | None = None,
             seed: int = 0) -> dict[str, Tensor]:
    """Our weights under HF's names. ``bert``: the task embedding of ``task`` (none: no task embedding) is
    folded into the position embeddings. Parameters we never had (the pooler and next-sentence head of a
    from-scratch run, an MLM head of a run without masked-LM) are initialized as BERT does, seeded."""
    sizes = source.sizes
    names = encoder_names(sizes["num_layers"])
    encoder = dict(source.encoder_state)
    task_table = encoder.pop(TASK_EMBEDDING[0])
    prefix = f"{fmt}."
    out: dict[str, Tensor] = {}
    if fmt == "bert" and task is not None:
        row = task_table[source.task_ids[task]]
        encoder["embeddings.position.weight"] = encoder["embeddings.position.weight"] + row
    out.update({prefix + k: v for k, v in to_hf(encoder, names).items()})
    if fmt == "ernie":
        out[prefix + TASK_EMBEDDING[1]] = task_table
    generator = torch.Generator().manual_seed(seed)
    h, std = sizes["hidden_size"], sizes.get("initializer_range", 0.02)
    mlm = source.mlm_state or {"dense.weight": torch.randn(h, h, generator=generator) * std,
                               "dense.bias": torch.zeros(h), "norm.weight": torch.ones(h),
                               "norm.bias": torch.zeros(h), "bias": torch.zeros(sizes["vocab_size"])}
    out.update(to_hf(mlm, list(_expand(MLM_MAP))))
    if fmt == "ernie":
        fresh = {"pooler.dense.weight": torch.randn(h, h, generator=generator) * std,
                 "pooler.dense.bias": torch.zeros(h),
                 "cls.seq_relationship.weight": torch.randn(2, h, generator=generator) * std,
                 "cls.seq_relationship.bias": torch.zeros(2)}
        for key, value in fresh.items():
            value = source.extra_state.get(key, value)
            out[key if key.startswith("cls.") else prefix + key] = value
    return {k: v.detach().float().contiguous().clone() for k, v in out.items()}


def write_model_dir(out_dir: str | Path, source: ExportSource, tokenizer, fmt: Literal["ernie", "bert"] = "ernie",
                    task: str | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors``, the tokenizer files and a ``README.md`` model card into
    ``out_dir`` (atomically: a staging directory renamed at the end)."""
    from safetensors.torch import save_file

    from data_builders.tokenizer import save_hf_tokenizer_files

    if fmt not in ("ernie", "bert"):
        raise ValueError(f"export format must be 'ernie' or 'bert', got {fmt!r}")
    if fmt == "bert" and task is not None and task not in source.task_ids:
        raise ValueError(f"--task {task}: not a task of this checkpoint (its tasks: "
                         f"{', '.join(source.task_ids) or 'none'})")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    try:
        config = hf_config(source, fmt)
        if fmt == "bert":
            config["ernie_cmtl"]["folded_task"] = task
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_file(hf_state(source, fmt, task), str(staging / "model.safetensors"), metadata={"format": "pt"})
        save_hf_tokenizer_files(tokenizer, staging, model_max_length=source.sizes["max_position"])
        (staging / "README.md").write_text(model_card(source, fmt, task))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.rename(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def model_card(source: ExportSource, fmt: str, task: str | None) -> str:
    s, card = source.sizes, source.card
    lines = ["---", "library_name: transformers", "tags: [ernie-cmtl, " + ("ernie" if fmt == "ernie" else "bert")
             + ", fill-mask]", "---", "", f"# {card.get('name', 'ernie-cmtl encoder')}", "",
             f"Exported by `ernie-cmtl export` (format `{fmt}`) from `{card.get('checkpoint', '?')}`"
             + (f", step {card['step']}" if "step" in card else "") + ".", ""]
    if card.get("init_from"):
        lines += [f"Continued pretraining of `{card['init_from']}`.", ""]
    lines += [f"Size: {s['num_layers']} layers x {s['hidden_size']} hidden, {s['num_heads']} heads, vocabulary "
              f"{s['vocab_size']}, {s['max_position']} positions.", ""]
    if card.get("tasks"):
        lines += ["Pretraining tasks (steps): " + ", ".join(f"{t} ({n})" for t, n in card["tasks"].items()) + ".", ""]
    if fmt == "ernie":
        lines += ["Task ids (`task_type_ids`; config.json `ernie_cmtl.task_ids`):", "", "| task | id |",
                  "|---|---|"] + [f"| {t} | {i} |" for t, i in sorted(source.task_ids.items(), key=lambda x: x[1])]
        lines += ["", "```python", "from transformers import AutoModel, AutoTokenizer",
                  "model = AutoModel.from_pretrained(DIR)  # ErnieModel; pass task_type_ids to pick a task",
                  "```"]
    else:
        lines += [f"Plain BERT: the task embedding of `{task}` is folded into the position embeddings." if task
                  else "Plain BERT: no task embedding was added."]
    return "\n".join(lines) + "\n"


def load_into(model: Any, hf: HFModel) -> list[str]:
    """Copy an imported checkpoint into a :class:`~ernie_cmtl.model.PretrainingModel`: the encoder (task
    embeddings from the checkpoint or zeros) and, when the checkpoint has ``cls.predictions``, every masked-LM
    head. Returns what was imported, for the log."""
    from ernie_cmtl.model import MaskedLMHead

    encoder = model.encoder
    encoder.load_state_dict(hf.encoder_state_for(encoder.config.num_task_embeddings))
    imported = ["encoder" + (" (task embeddings from the checkpoint)" if hf.task_embeddings is not None
                             else " (task embeddings zero)")]
    for name, head in model.heads.items():
        if isinstance(head, MaskedLMHead) and hf.mlm_state is not None:
            missing, unexpected = head.load_state_dict(hf.mlm_state, strict=False)
            if unexpected or missing != ["decoder_weight"]:  # the decoder is the (imported) word embedding
                raise HFCheckpointError(f"{hf.directory}: masked-LM head does not fit: missing {missing}, "
                                        f"unexpected {unexpected}")
            imported.append(f"{name} head (cls.predictions)")
    return imported


EXTRA_FILE = "hf_extra.safetensors"
"""In a run directory started from a checkpoint: its pooler / next-sentence weights, for export."""


def save_extra_state(run_dir: Path, hf: HFModel) -> None:
    """Keep the imported checkpoint's untrained parameters (pooler, next-sentence head) beside the run, so
    that an export writes them back unchanged."""
    from safetensors.torch import save_file

    if hf.extra_state:
        save_file(hf.extra_state, str(run_dir / EXTRA_FILE))


def export_source(checkpoint: str | Path) -> tuple[ExportSource, Any]:
    """What :func:`write_model_dir` needs, read from one of our checkpoints: (source, tokenizer)."""
    from ernie_cmtl.config import to_plain
    from ernie_cmtl.run_checkpoint import load_run_checkpoint

    run = load_run_checkpoint(checkpoint)
    weights, state = run.weights, run.state
    mlm_heads = [name for name in run.raw_config.get("tasks", {}) if f"heads.{name}.decoder_weight" in weights]
    mlm = None
    if mlm_heads:  # the first masked-LM head (knowledge masking in the built-in task set)
        prefix = f"heads.{mlm_heads[0]}."
        mlm = {k.removeprefix(prefix): v for k, v in weights.items()
               if k.startswith(prefix) and k != prefix + "decoder_weight"}
    extra: dict[str, Tensor] = {}
    if (run.run_dir / EXTRA_FILE).is_file():
        from safetensors.torch import load_file

        extra = load_file(str(run.run_dir / EXTRA_FILE))
    tasks: dict[str, int] = {}
    for stage in (state.get("plan") or {}).get("stages", []):
        for name, steps in stage.get("steps", {}).items():
            tasks[name] = tasks.get(name, 0) + int(steps)
    card = {"checkpoint": str(run.checkpoint), "step": int(state.get("step", 0)), "name": run.run_dir.name,
            "init_from": run.model_config.init_from, "tasks": tasks}
    return ExportSource(to_plain(run.model_config), run.encoder_state, mlm, run.task_ids, extra, card), run.tokenizer


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, fmt: str = "ernie",
                      task: str | None = None) -> Path:
    """One of our checkpoints -> a Hugging Face model directory (see :func:`write_model_dir`). ``bert``
    needs ``task`` when the checkpoint has task ids: that task's embedding is folded in."""
    from ernie_cmtl.checkpoint import CheckpointError

    if fmt not in ("ernie", "bert"):
        raise CheckpointError(f"--format: expected 'ernie' or 'bert', got {fmt!r}")
    source, tokenizer = export_source(checkpoint)
    if fmt == "bert" and task is None and source.task_ids:
        raise CheckpointError(f"--format bert needs --task NAME: the task whose embedding is folded into the "
                              f"position embeddings (tasks: {', '.join(source.task_ids)})")
    if task is not None and task not in source.task_ids:
        raise CheckpointError(f"--task {task}: not a task of this checkpoint (its tasks: "
                              f"{', '.join(source.task_ids) or 'none'})")
    return write_model_dir(out_dir, source, tokenizer, fmt, task)  # type: ignore[arg-type]


def source_from_import(hf: HFModel, num_task_embeddings: int, tokenizer_dir: Path | None = None) -> ExportSource:
    """An imported checkpoint as an export source (no training in between): export -> import -> export
    round trips through this."""
    sizes = {**hf.sizes, "initializer_range": hf.config.get("initializer_range", 0.02),
             "dropout": hf.config.get("hidden_dropout_prob", 0.1),
             "attention_dropout": hf.config.get("attention_probs_dropout_prob", 0.1)}
    task_ids = dict((hf.config.get("ernie_cmtl") or {}).get("task_ids", {}))
    return ExportSource(sizes, hf.encoder_state_for(num_task_embeddings), hf.mlm_state, task_ids,
                        dict(hf.extra_state), {"checkpoint": str(hf.directory)})
