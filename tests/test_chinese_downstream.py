"""Chinese downstream sets (ChnSentiCorp, OCNLI, C3): readers on the real files, their label balance and
input-blind baselines, C3's multiple-choice head with a variable number of choices, and short fine-tunes of a
tiny encoder through ``api.finetune`` / the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from data_builders.corpus import CorpusError
from data_builders.tokenizer import train_wordpiece
from downstream.benchmarks import BENCHMARK_TASKS, read_benchmark
from downstream.finetune import FinetuneModel, collate, encode_examples, load_finetune_config, task_loss
from downstream.metrics import baseline_metrics, task_metrics
from ernie_cmtl import api
from ernie_cmtl.config import ModelConfig, from_dict, to_plain
from ernie_cmtl.model import Encoder

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CHNSENTICORP, OCNLI, C3 = SHARED_DATA / "chnsenticorp", SHARED_DATA / "ocnli", SHARED_DATA / "c3"


def _require(directory: Path, probe: str) -> Path:
    if not (directory / probe).is_file():
        pytest.skip(f"shared data not found: {directory / probe}")
    return directory


@pytest.fixture(scope="module")
def chnsenticorp() -> dict:
    _require(CHNSENTICORP, "train.tsv")
    return {split: read_benchmark("chnsenticorp", split, CHNSENTICORP) for split in ("train", "dev")}


@pytest.fixture(scope="module")
def c3_dev():
    return read_benchmark("c3", "dev", _require(C3, "c3-m-dev.json"))


# -- readers on the real files (counts as in each folder's PROVENANCE.md) ---------------------------------


def test_chnsenticorp_reads_both_layouts_with_balanced_labels(chnsenticorp):
    train, dev = chnsenticorp["train"], chnsenticorp["dev"]
    assert (len(train), len(dev)) == (9600, 1200)  # train: label, text_a; dev: qid, label, text_a
    assert Counter(train.labels) == {1.0: 4799, 0.0: 4801} and Counter(dev.labels) == {1.0: 593, 0.0: 607}
    assert train.texts_b is None and all(text.strip() for text in train.texts_a + dev.texts_a)
    assert dev.texts_a[0].startswith("這間酒店環境和服務態度亦算不錯")  # the first row, not the qid column
    # majority class of train (negative, by 2 reviews) on dev: the bar a fine-tuned model must clear
    assert baseline_metrics("chnsenticorp", train.labels, dev.labels)["accuracy"] == pytest.approx(607 / 1200)


def test_ocnli_skips_and_counts_the_no_majority_label():
    _require(OCNLI, "dev.json")
    train = read_benchmark("ocnli", "train", OCNLI, ["train.10k.json"])
    dev = read_benchmark("ocnli", "dev", OCNLI)
    assert (len(train), train.skipped) == (9985, 15) and (len(dev), dev.skipped) == (2950, 50)
    names = BENCHMARK_TASKS["ocnli"].label_names
    assert {names[int(k)]: v for k, v in Counter(dev.labels).items()} == {
        "neutral": 1103, "entailment": 947, "contradiction": 900}
    assert dev.texts_a[0] == "身上裹一件工厂发的棉大衣,手插在袖筒里" and dev.texts_b[0] == "身上至少一件衣服"
    baseline = baseline_metrics("ocnli", train.labels, dev.labels)  # train's majority: neutral
    assert baseline["accuracy"] == pytest.approx(1103 / 2950)
    with pytest.raises(CorpusError, match=r"test.json:1: no string field 'label'"):
        read_benchmark("ocnli", "dev", OCNLI, ["test.json"])  # the unlabeled test file is refused


def test_c3_one_example_per_question_with_its_choices(c3_dev):
    train = read_benchmark("c3", "train", C3)
    assert (len(train), len(c3_dev)) == (11869, 3816)  # written texts + dialogues, as the paper counts
    sizes = Counter(len(choices) for choices in c3_dev.candidates)
    assert sizes == {4: 3180, 3: 466, 2: 170}  # 1,669 + 1,512 four-choice questions, one with a duplicate choice
    for choices, label in zip(c3_dev.candidates, c3_dev.labels, strict=True):
        assert len(set(choices)) == len(choices) and 0 <= label < len(choices)
    first = json.loads((C3 / "c3-m-dev.json").read_text(encoding="utf-8"))[0]
    question = first[1][0]
    assert c3_dev.texts_a[0] == question["question"] + "\n" + "\n".join(first[0])  # question first
    assert c3_dev.candidates[0][int(c3_dev.labels[0])] == question["answer"]
    positions = np.bincount(np.asarray(train.labels, dtype=int), minlength=4)
    assert positions.tolist() == [2818, 3276, 3236, 2539]  # answer positions are not uniform ...
    baseline = baseline_metrics("c3", train.labels, c3_dev.labels)  # ... so the baseline is the most common one
    assert baseline == pytest.approx({"accuracy": 1028 / 3816, "score": 1028 / 3816})
    chance = np.mean([1 / len(c) for c in c3_dev.candidates])
    assert abs(baseline["accuracy"] - chance) < 0.01  # and about what guessing scores (0.271)


def test_chinese_readers_name_the_bad_file(tmp_path):
    (tmp_path / "dev.json").write_text('{"sentence1": "a", "sentence2": "b", "label": "entailment"}\n[1, 2]\n')
    with pytest.raises(CorpusError, match=r"dev.json:2: not a JSON object"):
        read_benchmark("ocnli", "dev", tmp_path)
    (tmp_path / "dev.json").write_text('{"sentence1": "a", "sentence2": "b", "label": "yes"}\n')
    with pytest.raises(CorpusError, match=r"dev.json:1: label 'yes' is not one of entailment, neutral"):
        read_benchmark("ocnli", "dev", tmp_path)
    (tmp_path / "c3-m-dev.json").write_text(json.dumps([[["文"], [{"question": "问", "choice": ["甲", "乙"],
                                                                   "answer": "丙"}], "id"]]))
    (tmp_path / "c3-d-dev.json").write_text("[]")
    with pytest.raises(CorpusError, match=r"c3-m-dev.json: document 0, question 0: the answer must be one of"):
        read_benchmark("c3", "dev", tmp_path)
    with pytest.raises(CorpusError, match=r"file not found: .*c3-m-train.json"):
        read_benchmark("c3", "train", tmp_path)


# -- C3's head: one score per (question + document, choice), softmax over the question's choices -------------


@pytest.fixture(scope="module")
def zh_tokenizer(chnsenticorp):
    """WordPiece trained on ChnSentiCorp's train reviews (BertNormalizer: every CJK character its own word)."""
    return train_wordpiece(chnsenticorp["train"].texts_a, vocab_size=3000)


def _encoder(vocab_size: int, seed: int = 0, hidden: int = 64) -> Encoder:
    torch.manual_seed(seed)
    cfg = from_dict(ModelConfig, {"flavour": "custom", "hidden_size": hidden, "num_layers": 1, "num_heads": 2,
                                  "intermediate_size": 2 * hidden, "vocab_size": vocab_size, "max_position": 128,
                                  "dropout": 0.0, "attention_dropout": 0.0})
    return Encoder(cfg)


def test_multiple_choice_masks_absent_choices_out_of_the_softmax(c3_dev, zh_tokenizer):
    spec = BENCHMARK_TASKS["c3"]
    picked = [next(i for i, c in enumerate(c3_dev.candidates) if len(c) == n) for n in (2, 4, 3)]
    examples = c3_dev.subset(picked)
    data = encode_examples(zh_tokenizer, examples, spec, 64)
    assert data.group == 4 and data.starts == [0, 2, 6, 9]  # 2 + 4 + 3 sequences, no padding rows
    pad = zh_tokenizer.token_to_id("[PAD]")
    batch = collate(data, [0, 1, 2], "ranking", pad, -1, torch.device("cpu"))
    assert batch["input_ids"].shape[0] == 9
    assert batch["choice_mask"].tolist() == [[True, True, False, False], [True] * 4, [True, True, True, False]]
    model = FinetuneModel.build(_encoder(zh_tokenizer.get_vocab_size()), [spec], "hard")
    scores = model("c3", batch)
    assert scores.shape == (3, 4)
    assert torch.isinf(scores[~batch["choice_mask"]]).all() and torch.isfinite(scores[batch["choice_mask"]]).all()
    loss = task_loss("ranking", scores, batch["labels"])
    real = [scores[i, : n] for i, n in enumerate((2, 4, 3))]
    expected = torch.stack([-torch.log_softmax(s, 0)[int(y)] for s, y in zip(real, batch["labels"], strict=True)])
    torch.testing.assert_close(loss, expected.mean())  # cross-entropy over the real choices only
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    alone = collate(data, [2], "ranking", pad, -1, torch.device("cpu"))  # a question's scores need no neighbours
    torch.testing.assert_close(model("c3", alone)[0, :3], model("c3", batch)[2, :3], atol=1e-5, rtol=1e-5)
    predictions = model("c3", batch).detach().numpy()
    accuracy = task_metrics("c3", predictions, batch["labels"].numpy())["accuracy"]
    assert accuracy == np.mean(predictions.argmax(1) == batch["labels"].numpy())  # -inf never wins


# -- fine-tuning a tiny encoder -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zh_run(tmp_path_factory: pytest.TempPathFactory, zh_tokenizer) -> Path:
    """A run directory in the trainer's layout around a freshly initialized tiny encoder (1 layer, hidden 64, no
    dropout, no pretraining) and the ChnSentiCorp tokenizer."""
    encoder = _encoder(zh_tokenizer.get_vocab_size())
    run = tmp_path_factory.mktemp("zh") / "run"
    step = run / "checkpoints" / "step_00000001"
    step.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": to_plain(encoder.config)}))
    zh_tokenizer.save(str(run / "tokenizer.json"))
    torch.save({f"encoder.{k}": v for k, v in encoder.state_dict().items()}, step / "model.pt")
    (step / "trainer_state.json").write_text(json.dumps({"step": 1, "task_ids": {}}))
    return run


def _zh_config(tmp_path: Path, *overrides: str):
    return load_finetune_config(None, [f"chnsenticorp_dir={CHNSENTICORP}", f"ocnli_dir={OCNLI}", f"c3_dir={C3}",
                                       f"run_dir={tmp_path / 'ft'}", "task_embedding_id=-1", *overrides])


# Measured with this recipe (100 steps of 32 reviews from 2,000, length 48, lr 2e-3), on 400 dev reviews:
# accuracy 0.790 / 0.793 / 0.775 (seeds 0/1/2, each with a freshly trained tokenizer) against the train majority
# class's 0.4775 there; about 20 s of fine-tuning on 2 shared cores. With hidden 32 and dropout 0.1 the same
# budget gave 0.785 / 0.600 / 0.525: too unstable to assert.
@pytest.mark.slow
def test_chnsenticorp_fine_tune_beats_the_majority_class(tmp_path, zh_run):
    config = _zh_config(tmp_path, "max_seq_len=48", "max_train_examples=2000", "max_eval_examples=400",
                        "max_steps=100", "lr=2e-3")
    results = api.finetune(zh_run, ["ChnSentiCorp"], config, progress=False)
    baseline, dev = results["baseline"]["chnsenticorp"]["accuracy"], results["dev"]["chnsenticorp"]["accuracy"]
    assert baseline == pytest.approx(191 / 400)  # majority class (negative) on the 400 dev reviews picked
    assert dev > baseline + 0.15, results["dev"]


@pytest.mark.slow
def test_cli_runs_all_three_chinese_tasks(tmp_path, zh_run):
    _require(OCNLI, "dev.json"), _require(C3, "c3-m-dev.json")
    run_dir = tmp_path / "clue"
    proc = subprocess.run([sys.executable, "-m", "ernie_cmtl.cli", "finetune", "--checkpoint", str(zh_run),
                           "--tasks", "chnsenticorp,ocnli,c3", "--max-steps", "6", "--run-dir", str(run_dir),
                           "--quiet", "--set", f"chnsenticorp_dir={CHNSENTICORP}", "--set", f"ocnli_dir={OCNLI}",
                           "--set", f"c3_dir={C3}", "--set", "max_train_examples=64", "--set",
                           "max_eval_examples=40", "--set", "max_seq_len=64", "--set", "task_embedding_id=-1",
                           "--set", "sampling=uniform"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((run_dir / "results.json").read_text())
    assert {task: set(values) for task, values in results["dev"].items()} == {
        "chnsenticorp": {"accuracy", "score"}, "ocnli": {"accuracy", "score"}, "c3": {"accuracy", "score"}}
    assert results["dev_examples"] == {"chnsenticorp": 40, "ocnli": 40, "c3": 40}
    assert results["skipped_examples"] == {"ocnli": {"train": 15, "dev": 50}}  # label "-", counted
    assert "glue_score" not in results
    assert 0.0 <= results["dev"]["c3"]["accuracy"] <= 1.0
    for printed in ("chnsenticorp: accuracy", "ocnli: accuracy", "c3: accuracy"):
        assert printed in proc.stdout
    missing = subprocess.run([sys.executable, "-m", "ernie_cmtl.cli", "finetune", "--checkpoint", str(zh_run),
                              "--tasks", "c3", "--set", f"c3_dir={tmp_path / 'nowhere'}"],
                             capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert missing.returncode == 2 and "c3_dir: directory not found" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
