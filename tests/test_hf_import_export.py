"""Hugging Face in and out (ernie_cmtl/hf.py): parity with ``transformers`` on real Wikipedia text.

Every comparison is fp32 on CPU, on batches of real sentences padded to the longest, and compares the real
(non-pad) positions: max absolute difference <= 1e-5 for hidden states and masked-LM logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from data_builders.tokenizer import load_hf_tokenizer, save_hf_tokenizer_files
from ernie_cmtl import api
from ernie_cmtl.assembly import load_config
from ernie_cmtl.cli import main
from ernie_cmtl.config import ConfigError, ModelConfig
from ernie_cmtl.hf import (
    HFCheckpointError,
    load_hf_model,
    load_into,
    source_from_import,
    write_model_dir,
)
from ernie_cmtl.model import Encoder, MaskedLMHead, PretrainingModel

transformers = pytest.importorskip("transformers")

ATOL = 1e-5
SIZES = [(64, 2, 4, 128), (96, 3, 3, 192)]  # hidden, layers, heads, ffn


@pytest.fixture(scope="module")
def sentences(wiki_corpus) -> list[str]:
    """Real Wikipedia sentences of assorted lengths (the shared 200-article fixture)."""
    documents, _ = wiki_corpus
    out = []
    for paragraphs in documents[:40]["sentences"]:
        for paragraph in paragraphs:
            out.extend(s for s in paragraph if 4 <= len(s.split()) <= 40)
    return out[:64]


def batch_of(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded to the longest (pad id 0) and the 0/1 attention mask."""
    encodings = tokenizer.encode_batch(texts)
    length = max(len(e.ids) for e in encodings)
    ids = torch.tensor([e.ids + [0] * (length - len(e.ids)) for e in encodings])
    mask = torch.tensor([[1] * len(e.ids) + [0] * (length - len(e.ids)) for e in encodings])
    assert not bool(mask.all()), "the batch must contain padding"
    return ids, mask


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Random values everywhere (LayerNorm scales and biases too), so a swapped or dropped copy shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(0.05 * torch.randn(param.shape, generator=generator) + (1.0 if param.dim() == 1 and
                                                                             torch.all(param == 1) else 0.0))


def ours_from(directory: Path, num_task_embeddings: int = 16) -> tuple[Encoder, MaskedLMHead | None]:
    """Our encoder (and masked-LM head, if the checkpoint has one) loaded through the importer."""
    hf = load_hf_model(directory)
    cfg = ModelConfig(init_from=str(directory), num_task_embeddings=num_task_embeddings, dropout=0.0,
                      attention_dropout=0.0, **hf.sizes)
    encoder = Encoder(cfg)
    head = MaskedLMHead(cfg, encoder.embeddings.word) if hf.mlm_state is not None else None
    model = PretrainingModel(encoder, {"knowledge_masking": head} if head is not None else {})
    load_into(model, hf)
    return encoder.eval(), (head.eval() if head is not None else None)


def compare(encoder, head, reference, ids, mask, task_id: int = 0, hf_kwargs: dict | None = None) -> None:
    real = mask.bool()
    with torch.no_grad():
        hidden = encoder(ids, mask, torch.zeros_like(ids), torch.full((ids.shape[0],), task_id))
        out = reference(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids),
                        output_hidden_states=True, **(hf_kwargs or {}))
        reference_hidden = out.hidden_states[-1] if hasattr(out, "hidden_states") and out.hidden_states \
            else out.last_hidden_state
        assert (hidden - reference_hidden)[real].abs().max().item() <= ATOL
        if head is not None:
            positions = torch.nonzero(real.flatten()).squeeze(1)
            logits = head(hidden, positions)
            reference_logits = out.prediction_logits if hasattr(out, "prediction_logits") else out.logits
            diff = (logits - reference_logits.reshape(-1, reference_logits.shape[-1])[positions]).abs().max()
            assert diff.item() <= ATOL


def save_random_bert(directory: Path, cls_name: str, size: tuple[int, int, int, int], tokenizer,
                     seed: int) -> torch.nn.Module:
    hidden, layers, heads, ffn = size
    config = transformers.BertConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=hidden,
                                     num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=ffn,
                                     max_position_embeddings=256, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0, architectures=[cls_name])
    model = getattr(transformers, cls_name)(config)
    randomize(model, seed)
    model.save_pretrained(directory)
    save_hf_tokenizer_files(tokenizer, directory)
    return model.eval()


@pytest.mark.parametrize("cls_name", ["BertModel", "BertForMaskedLM", "BertForPreTraining"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"h{s[0]}l{s[1]}")
def test_import_of_random_bert_matches_transformers(tmp_path, wiki_corpus, sentences, cls_name, size):
    _, tokenizer = wiki_corpus
    reference = save_random_bert(tmp_path, cls_name, size, tokenizer, seed=size[0])
    encoder, head = ours_from(tmp_path)
    assert (head is not None) == (cls_name != "BertModel")
    ids, mask = batch_of(tokenizer, sentences[:16])
    compare(encoder, head, reference, ids, mask)


def test_legacy_names_and_no_prefix_import_the_same(tmp_path, wiki_corpus, sentences):
    """``LayerNorm.gamma/beta`` in a ``pytorch_model.bin``, without the ``bert.`` prefix, as old checkpoints
    and sentence-transformers directories hold them."""
    _, tokenizer = wiki_corpus
    reference = save_random_bert(tmp_path / "new", "BertForPreTraining", SIZES[0], tokenizer, seed=3)
    state = load_file(str(tmp_path / "new" / "model.safetensors"))
    legacy = {k.removeprefix("bert.").replace("LayerNorm.weight", "LayerNorm.gamma")
              .replace("LayerNorm.bias", "LayerNorm.beta"): v for k, v in state.items()}
    old = tmp_path / "old"
    old.mkdir()
    torch.save(legacy, old / "pytorch_model.bin")
    (old / "config.json").write_text((tmp_path / "new" / "config.json").read_text())
    save_hf_tokenizer_files(tokenizer, old)
    encoder, head = ours_from(old)
    ids, mask = batch_of(tokenizer, sentences[16:32])
    compare(encoder, head, reference, ids, mask)


def test_real_minilm_imports_exactly(minilm_dir, sentences):
    """The real all-MiniLM-L6-v2 (a sentence-transformers directory): same hidden states as transformers, no
    masked-LM head (built fresh), and the HF tokenizer files give the same ids as transformers'."""
    tokenizer = load_hf_tokenizer(minilm_dir)
    encoder, head = ours_from(minilm_dir)
    assert head is None
    reference = transformers.AutoModel.from_pretrained(minilm_dir).eval()
    ids, mask = batch_of(tokenizer, sentences[:24])
    compare(encoder, None, reference, ids, mask)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    assert hf_tokenizer(sentences)["input_ids"] == [e.ids for e in tokenizer.encode_batch(sentences)]


def test_ernie_task_embeddings_import_for_every_task_id(tmp_path, wiki_corpus, sentences):
    _, tokenizer = wiki_corpus
    config = transformers.ErnieConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, intermediate_size=128, use_task_id=True,
                                      task_type_vocab_size=3, architectures=["ErnieForPreTraining"],
                                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    reference = transformers.ErnieForPreTraining(config)
    randomize(reference, 5)
    reference.save_pretrained(tmp_path)
    save_hf_tokenizer_files(tokenizer, tmp_path)
    encoder, head = ours_from(tmp_path, num_task_embeddings=8)
    task_table = encoder.embeddings.task.weight
    assert torch.equal(task_table[:3], reference.ernie.embeddings.task_type_embeddings.weight)
    assert not task_table[3:].any()  # rows the checkpoint lacks start at zero
    ids, mask = batch_of(tokenizer, sentences[:12])
    for task_id in range(3):
        compare(encoder, head, reference.eval(), ids, mask, task_id,
                {"task_type_ids": torch.full_like(ids, task_id)})


# ---------------------------------------------------------------------------------------------------------
# Export of a trained run, and continued pretraining from MiniLM


TINY_RUN = ["model.hidden_size=64", "model.num_heads=2", "model.intermediate_size=128", "model.num_layers=2",
            "train.batch_size=8", "tokenizer.vocab_size=3000", "data.max_documents=150", "train.warmup_steps=2",
            "train.log_every=2", "schedule.steps_per_task=4", "data.max_seq_len=64",
            "tasks={knowledge_masking: {}, sentence_reordering: {}, capitalization: {}}",
            "schedule.stages=[knowledge_masking, [sentence_reordering, capitalization]]"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, wiki_shards, cache_dir) -> Path:
    """A debug encoder trained for 12 steps on three tasks (the export source)."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    config = api.configure(None, [*TINY_RUN, f"data.cache_dir={cache_dir}"], wiki_shards[:1], run_dir)
    api.pretrain(config, progress=False)
    return run_dir


def our_model(run_dir: Path) -> tuple[PretrainingModel, dict[str, int], object]:
    """The trained model of a run directory, as our code sees it (eval mode)."""
    from ernie_cmtl.assembly import settle_run
    from ernie_cmtl.build.prepare import prepare_data
    from ernie_cmtl.trainer import Trainer

    config = load_config(run_dir / "config.yaml")
    config.run_dir = str(run_dir)
    data = prepare_data(config, run_dir, progress=False)
    settled, plan = settle_run(config, data)
    trainer = Trainer(settled, data, run_dir, plan)
    trainer.resume()
    return trainer.engine.module.eval(), trainer.task_ids, trainer.data.tokenizer


def test_ernie_export_matches_ours_for_every_task_id(tmp_path, trained_run, sentences):
    out = tmp_path / "ernie"
    assert main(["export", str(trained_run), str(out)]) == 0
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "README.md"):
        assert (out / name).is_file(), name
    model, task_ids, tokenizer = our_model(trained_run)
    config = json.loads((out / "config.json").read_text())
    assert config["use_task_id"] and config["task_type_vocab_size"] == model.encoder.config.num_task_embeddings
    assert config["ernie_cmtl"]["task_ids"] == task_ids
    pretraining = transformers.ErnieForPreTraining.from_pretrained(out).eval()
    base = transformers.AutoModel.from_pretrained(out).eval()
    assert type(base).__name__ == "ErnieModel"
    ids, mask = batch_of(tokenizer, sentences[:16])
    head = model.heads["knowledge_masking"]
    for task_id in sorted(task_ids.values()):
        kwargs = {"task_type_ids": torch.full_like(ids, task_id)}
        compare(model.encoder, head, pretraining, ids, mask, task_id, kwargs)
        compare(model.encoder, None, base, ids, mask, task_id, kwargs)


def test_bert_export_folds_the_task_embedding(tmp_path, trained_run, sentences):
    out = tmp_path / "bert"
    assert main(["export", str(trained_run), str(out), "--format", "bert", "--task", "sentence_reordering"]) == 0
    model, task_ids, tokenizer = our_model(trained_run)
    reference = transformers.BertForMaskedLM.from_pretrained(out).eval()
    assert type(transformers.AutoModel.from_pretrained(out)).__name__ == "BertModel"
    ids, mask = batch_of(tokenizer, sentences[16:40])
    compare(model.encoder, model.heads["knowledge_masking"], reference, ids, mask,
            task_ids["sentence_reordering"])
    assert main(["export", str(trained_run), str(tmp_path / "x"), "--format", "bert"]) == 2  # --task needed


def test_exported_tokenizer_gives_our_ids(tmp_path, trained_run, wiki_corpus):
    out = api.export(trained_run, tmp_path / "tok")
    _, _, tokenizer = our_model(trained_run)
    documents, _ = wiki_corpus
    paragraphs = [p for ps in documents["paragraphs"] for p in ps][:200]
    assert len(paragraphs) == 200
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert hf_tokenizer(paragraphs)["input_ids"] == [e.ids for e in tokenizer.encode_batch(paragraphs)]


def test_export_import_export_is_lossless(tmp_path, trained_run):
    first = api.export(trained_run, tmp_path / "first")
    imported = api.import_hf(first)
    _, _, tokenizer = our_model(trained_run)
    rows = json.loads((first / "config.json").read_text())["task_type_vocab_size"]
    second = write_model_dir(tmp_path / "second", source_from_import(imported, rows), tokenizer)
    a, b = load_file(str(first / "model.safetensors")), load_file(str(second / "model.safetensors"))
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    config_a, config_b = (json.loads((d / "config.json").read_text()) for d in (first, second))
    config_a.pop("ernie_cmtl"), config_b.pop("ernie_cmtl")
    assert config_a == config_b


MINILM_RUN = ["train.batch_size=4", "data.max_seq_len=64", "data.max_documents=150", "schedule.steps_per_task=2",
              "train.warmup_steps=2", "train.eval_every=100", "train.eval_batches=1", "train.log_every=2",
              "model.dropout=0.1"]


def test_continued_pretraining_from_minilm_resumes_exactly_and_exports(tmp_path, minilm_dir, wiki_shards,
                                                                      cache_dir, sentences):
    """The seven-task cmtl schedule of configs/default.yaml, from MiniLM on real Wikipedia: step 0 computes
    MiniLM's function, an interrupted run resumed equals an uninterrupted one, and the result exports."""
    overrides = [f"model.init_from={minilm_dir}", *MINILM_RUN, f"data.cache_dir={cache_dir}"]
    default = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"

    def configure(name: str):
        return api.configure(default, overrides, wiki_shards[:1], tmp_path / name)

    config = configure("straight")
    assert config.model.hidden_size == 384 and config.model.vocab_size == 30522 and len(config.tasks) == 7
    straight = api.pretrain(config, progress=False)
    assert straight.step == 14
    api.pretrain(configure("resumed"), stop_at=7, progress=False)
    resumed = api.pretrain(configure("resumed"), resume=True, progress=False)
    assert [loss for *_, loss in resumed.losses] == [loss for *_, loss in straight.losses[7:]]
    a = torch.load(straight.checkpoint / "model.pt", weights_only=True)
    b = torch.load(resumed.checkpoint / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)

    # step 0 of such a run: the task embeddings are zero, so the encoder is exactly MiniLM
    from ernie_cmtl.trainer import build_model

    start = build_model(config.model, {})
    load_into(start, load_hf_model(minilm_dir))
    reference = transformers.AutoModel.from_pretrained(minilm_dir).eval()
    ids, mask = batch_of(load_hf_tokenizer(minilm_dir), sentences[:8])
    compare(start.encoder.eval(), None, reference, ids, mask, task_id=3)

    out = api.export(tmp_path / "straight", tmp_path / "exported")
    exported = json.loads((out / "config.json").read_text())
    assert exported["hidden_size"] == 384 and exported["ernie_cmtl"]["init_from"] == str(minilm_dir)
    original = load_file(str(Path(minilm_dir) / "model.safetensors"))
    written = load_file(str(out / "model.safetensors"))
    assert torch.equal(written["ernie.pooler.dense.weight"], original["pooler.dense.weight"])  # carried


# ---------------------------------------------------------------------------------------------------------
# Bad input: one line naming the file and what was expected


def test_sizes_that_disagree_with_the_checkpoint_are_a_config_error(minilm_dir):
    with pytest.raises(ConfigError, match=r"model.hidden_size: 256 disagrees with .*config.json \(384\)"):
        load_config(None, [f"model.init_from={minilm_dir}", "model.hidden_size=256"])
    config = load_config(None, [f"model.init_from={minilm_dir}", "model.num_layers=6"])  # agreeing is fine
    assert config.model.num_layers == 6 and config.tokenizer.path == str(minilm_dir)
    with pytest.raises(ConfigError, match="tokenizer.path: expected unset with model.init_from"):
        load_config(None, [f"model.init_from={minilm_dir}", "tokenizer.path=other/vocab.txt"])


def _broken_copies(minilm_dir: Path, root: Path) -> dict[str, tuple[Path, str]]:
    """Model directories broken one way each -> (directory, expected message)."""
    cases: dict[str, tuple[Path, str]] = {}
    config = json.loads((minilm_dir / "config.json").read_text())

    def make(name: str, config_changes: dict | None = None, weights: bool = True) -> Path:
        directory = root / name
        directory.mkdir()
        (directory / "config.json").write_text(json.dumps({**config, **(config_changes or {})}))
        if weights:
            (directory / "model.safetensors").symlink_to(minilm_dir / "model.safetensors")
        (directory / "tokenizer.json").symlink_to(minilm_dir / "tokenizer.json")
        return directory

    cases["not a model"] = (root, "config.json not found")
    cases["no weights"] = (make("noweights", weights=False), "no weight file")
    cases["architecture"] = (make("roberta", {"model_type": "roberta", "architectures": ["RobertaModel"]}),
                             "model_type 'roberta' is not supported")
    cases["head"] = (make("cls", {"architectures": ["BertForQuestionAnswering"]}),
                     "architecture BertForQuestionAnswering is not supported")
    cases["activation"] = (make("gelu_new", {"hidden_act": "gelu_new"}), "hidden_act 'gelu_new' is not supported")
    cases["sizes"] = (make("sizes", {"num_hidden_layers": 8}), "parameter encoder.layer.6.")
    truncated = make("truncated", weights=False)
    (truncated / "model.safetensors").write_bytes((minilm_dir / "model.safetensors").read_bytes()[:1000])
    cases["truncated"] = (truncated, "cannot read")
    return cases


def test_bad_model_directories_give_one_line_errors(tmp_path, minilm_dir):
    for case, (directory, expected) in _broken_copies(minilm_dir, tmp_path).items():
        with pytest.raises(HFCheckpointError) as err:
            load_hf_model(directory)
        message = str(err.value)
        assert expected in message and "\n" not in message, (case, message)
        assert str(directory) in message, (case, message)


def test_mismatched_vocabulary_and_cli_exit_codes(tmp_path, minilm_dir, wiki_shards, cache_dir, capsys):
    small = tmp_path / "small"
    small.mkdir()
    config = json.loads((minilm_dir / "config.json").read_text())
    (small / "config.json").write_text(json.dumps({**config, "vocab_size": 1000}))
    state = load_file(str(minilm_dir / "model.safetensors"))
    state["embeddings.word_embeddings.weight"] = state["embeddings.word_embeddings.weight"][:1000].clone()
    save_file(state, str(small / "model.safetensors"))
    (small / "tokenizer.json").symlink_to(minilm_dir / "tokenizer.json")
    args = ["pretrain", "--corpus", wiki_shards[0], "--run-dir", str(tmp_path / "run"), "--quiet",
            "--set", f"model.init_from={small}", "--set", f"data.cache_dir={cache_dir}",
            "--set", "data.max_documents=60", "--set", "tasks={knowledge_masking: {}}",
            "--set", "train.max_steps=2"]
    assert main(args) == 2
    message = capsys.readouterr().err.strip()
    assert "30522 tokens" in message and "1000 rows" in message and "\n" not in message
    assert main(["pretrain", "--set", f"model.init_from={tmp_path / 'missing'}"]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_capitalization_is_refused_for_a_cased_checkpoint(tmp_path, minilm_dir):
    """A cased vocabulary would show the label in the input ids: the task refuses it (docs/HUGGINGFACE.md)."""
    from data_builders.capitalization import require_uncased

    cased = tmp_path / "cased"
    cased.mkdir()
    (cased / "vocab.txt").write_text((minilm_dir / "vocab.txt").read_text() if (minilm_dir / "vocab.txt").exists()
                                     else "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "A"]))
    (cased / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    with pytest.raises(ValueError, match="needs an uncased"):
        require_uncased(load_hf_tokenizer(cased))
    require_uncased(load_hf_tokenizer(minilm_dir))  # MiniLM is uncased: accepted
