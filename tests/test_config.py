from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ernie_cmtl.assembly import load_config
from ernie_cmtl.config import MODEL_FLAVOURS, ConfigError, RunConfig, dump_config

REPO = Path(__file__).resolve().parents[1]


def test_default_yaml_is_a_cmtl_run_over_all_seven_tasks():
    from_file = load_config(REPO / "configs" / "default.yaml")
    assert from_file.model.hidden_size == 128 and from_file.model.num_layers == 2
    assert len(from_file.tasks) == 7 and from_file.schedule.strategy == "cmtl"
    assert len(from_file.schedule.stages) == 4
    assert from_file.tasks["knowledge_masking"].mask_prob == pytest.approx(0.15)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_parses(path: Path, request: pytest.FixtureRequest):
    if "init_from:" in path.read_text():  # a config that continues pretraining: MiniLM stands in for its model
        config = load_config(path, [f"model.init_from={request.getfixturevalue('minilm_dir')}"])
        assert config.model.hidden_size == 384 and config.tokenizer.path == config.model.init_from
        return
    if path.name.startswith("finetune"):
        from downstream.finetune import FinetuneConfig, load_finetune_config

        assert isinstance(load_finetune_config(path), FinetuneConfig)
        return
    config = load_config(path)
    assert isinstance(config, RunConfig)


def test_dotted_overrides_are_typed():
    config = load_config(None, ["model.hidden_size=256", "model.num_heads=4", "train.lr=1e-3",
                                "data.corpus=[a, b]", "tasks.knowledge_masking.level_mix.phrase=0"])
    assert config.model.hidden_size == 256
    assert config.train.lr == pytest.approx(1e-3)
    assert config.data.corpus == ["a", "b"]
    assert config.tasks["knowledge_masking"].level_mix.phrase == 0.0


def test_flavour_presets_and_explicit_fields():
    config = load_config(None, ["model.flavour=base"])
    assert config.model.hidden_size == MODEL_FLAVOURS["base"]["hidden_size"] == 768
    config = load_config(None, ["model.flavour=base", "model.num_layers=3"])
    assert config.model.num_layers == 3 and config.model.hidden_size == 768


def test_flavour_applies_to_a_model_config_built_in_python():
    from ernie_cmtl.config import ModelConfig

    base = ModelConfig(flavour="base")
    assert (base.hidden_size, base.num_layers, base.num_heads, base.intermediate_size) == (768, 12, 12, 3072)
    assert ModelConfig(flavour="small", num_layers=2).num_layers == 2
    assert ModelConfig().hidden_size == MODEL_FLAVOURS["debug"]["hidden_size"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lrr=1", "unknown key 'train.lrr'"),
        ("train.lr=abc", "train.lr: expected a number, got 'abc'"),
        ("train.batch_size=0", "train.batch_size: expected an integer >= 1"),
        ("train.precision=fp8", "train.precision: expected one of 'fp32', 'bf16'"),
        ("model.hidden_size=127", "model.hidden_size: expected a positive multiple of model.num_heads"),
        ("tasks.knowledge_masking.mask_prob=2", "tasks.knowledge_masking.mask_prob: expected a number in (0, 1)"),
        ("tasks.knowledge_masking.level_mix.entty=1", "unknown key 'tasks.knowledge_masking.level_mix.entty'"),
        ("tasks.no_such_task={}", "tasks.no_such_task: unknown task 'no_such_task'"),
        ("data.num_proc=two", "data.num_proc: expected an integer, got 'two'"),
    ],
)
def test_bad_values_name_the_key(override: str, message: str):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_resolved_config_round_trips(tmp_path: Path):
    config = load_config(None, ["model.hidden_size=64", "model.num_heads=2"])
    dump_config(config, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again.to_dict() == config.to_dict()


def test_cli_bad_config_exits_2_with_one_line(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  batch_sise: 8\n")
    proc = subprocess.run([sys.executable, "-m", "ernie_cmtl.cli", "pretrain", "--config", str(bad),
                           "--run-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "train.batch_sise" in lines[0] and "Traceback" not in proc.stderr


def test_cli_bad_override_exits_2(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "ernie_cmtl.cli", "build-data", "--set", "model.dropout=1.5",
                           "--run-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["ernie-cmtl: config error: model.dropout: expected a number in [0, 1)"]


def test_config_module_is_a_leaf():
    """config.py imports nothing of the project but the corpus options (a leaf, which the data section
    extends) and the generic typed loader (a leaf): whole-tree validation lives in ernie_cmtl.assembly."""
    code = ("import sys, ernie_cmtl.config; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('ernie_cmtl', 'pretrain_tasks', 'data_builders', 'downstream')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == \
        "['data_builders', 'data_builders.corpus_options', 'ernie_cmtl', 'ernie_cmtl.config', " \
        "'ernie_cmtl.typed_config']"
