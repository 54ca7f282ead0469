"""GLUE readers and metrics: hand-computed values, reference implementations where installed, the real files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from glue_fixtures import MNLI_DEV_MATCHED, MNLI_TRAIN, QQP_TRAIN, write_glue_fixtures

from data_builders.corpus import CorpusError
from downstream.benchmarks import (
    GLUE_TASKS,
    build_wiki_ranking,
    canonical_task_name,
    read_benchmark,
    read_glue,
)
from downstream.metrics import (
    accuracy,
    average_ranks,
    baseline_metrics,
    combine_dev_splits,
    f1_binary,
    matthews_corrcoef,
    pearson,
    ranking_metrics,
    spearman,
    task_metrics,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
GLUE = SHARED_DATA / "glue"
WIKI = SHARED_DATA / "wikipedia-en-2018-sample"


def _require_glue() -> None:
    if not (GLUE / "SST-2" / "train.tsv").is_file():
        pytest.skip(f"shared GLUE data not found at {GLUE}")


# -- metrics on fixed predictions ------------------------------------------------------------------------


def test_binary_confusion_matrix_metrics_match_hand_computed_values():
    # TP = 3, TN = 4, FP = 1, FN = 2
    labels = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    preds = [1, 1, 1, 0, 0, 0, 0, 0, 0, 1]
    assert accuracy(preds, labels) == pytest.approx(0.7)
    assert f1_binary(preds, labels) == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))
    expected_mcc = (3 * 4 - 1 * 2) / math.sqrt((3 + 1) * (3 + 2) * (4 + 1) * (4 + 2))
    assert matthews_corrcoef(preds, labels) == pytest.approx(expected_mcc)  # 0.408248...


def test_matthews_edge_cases_and_the_scikit_learn_documentation_example():
    assert matthews_corrcoef([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0)
    assert matthews_corrcoef([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)
    assert matthews_corrcoef([1, 1, 1, 1], [1, 0, 1, 0]) == 0.0  # constant predictions: the majority baseline
    assert matthews_corrcoef([+1, -1, +1, +1], [+1, +1, +1, -1]) == pytest.approx(-1 / 3)  # sklearn docs
    assert f1_binary([0, 0, 0], [0, 0, 0]) == 0.0


def test_matthews_multiclass_form_equals_the_binary_phi_coefficient():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y, p = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
        tp, tn = ((p == 1) & (y == 1)).sum(), ((p == 0) & (y == 0)).sum()
        fp, fn = ((p == 1) & (y == 0)).sum(), ((p == 0) & (y == 1)).sum()
        phi = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        assert matthews_corrcoef(p, y) == pytest.approx(phi)


def test_pearson_and_spearman_match_hand_computed_values():
    x = [1, 2, 3, 4, 5]
    assert pearson(x, [2, 4, 5, 4, 5]) == pytest.approx(6 / math.sqrt(60))  # 0.774597
    # scipy's documented example, with a tie in y: ranks [1, 2, 3.5, 5, 3.5]
    assert spearman(x, [5, 6, 7, 8, 7]) == pytest.approx(0.8207826816681233)
    assert average_ranks([0, 2, 3, 2]).tolist() == [1.0, 2.5, 4.0, 2.5]  # scipy.stats.rankdata docs
    assert pearson(x, [10, 20, 30, 40, 50]) == pytest.approx(1.0)
    assert spearman(x, [1, 4, 9, 16, 25]) == pytest.approx(1.0)  # monotone, not linear
    assert pearson([3.0] * 5, x) == 0.0 and spearman(x, [2.5] * 5) == 0.0  # constant: mean-prediction baseline


def test_correlations_match_scipy_on_random_data():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    for _ in range(10):
        x = rng.normal(size=100)
        y = np.round(x + rng.normal(size=100), 1)  # rounding makes ties
        assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-10)
        assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-10)
        assert average_ranks(y).tolist() == stats.rankdata(y).tolist()


def test_classification_metrics_match_scikit_learn_on_random_data():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    for _ in range(10):
        y, p = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
        assert matthews_corrcoef(p, y) == pytest.approx(metrics.matthews_corrcoef(y, p))
        assert f1_binary(p, y) == pytest.approx(metrics.f1_score(y, p))
        y3, p3 = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
        assert matthews_corrcoef(p3, y3) == pytest.approx(metrics.matthews_corrcoef(y3, p3))


def test_ranking_metrics_count_ties_against_the_positive():
    scores = [[0.1, 0.9, 0.3],  # positive 1 ranked first
              [0.5, 0.2, 0.4],  # positive 2 ranked second
              [0.0, 0.0, 0.0]]  # all tied: ranked last, no credit
    result = ranking_metrics(scores, [1, 2, 0])
    assert result["accuracy_at_1"] == pytest.approx(1 / 3)
    assert result["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)


def test_task_metrics_report_glue_metrics_and_their_mean():
    assert set(task_metrics("MRPC", [1, 0, 1], [1, 1, 1])) == {"accuracy", "f1", "score"}
    values = task_metrics("stsb", [1.0, 2.0, 3.0], [1.0, 2.5, 2.0])
    assert values["score"] == pytest.approx((values["pearson"] + values["spearman"]) / 2)
    assert set(task_metrics("cola", [1, 0], [1, 0])) == {"matthews_corr", "score"}
    assert set(task_metrics("wikiqp", [[1.0, 0.0]], [0])) == {"accuracy_at_1", "mrr", "score"}


def test_baselines_ignore_the_input():
    assert baseline_metrics("sst2", [1, 1, 0], [0, 1, 1, 1])["accuracy"] == pytest.approx(0.75)
    assert baseline_metrics("cola", [1, 1, 0], [0, 1])["matthews_corr"] == 0.0
    assert baseline_metrics("stsb", [1.0, 5.0], [0.0, 4.0])["pearson"] == 0.0
    ranking = baseline_metrics("wikiqp", [], [0, 1], num_candidates=4)
    assert ranking["accuracy_at_1"] == 0.25 and ranking["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)


def test_task_names_are_case_insensitive():
    assert [canonical_task_name(n) for n in ("SST2", "SST-2", "cola", "STS_B", "WikiQP")] == [
        "sst2", "sst2", "cola", "stsb", "wikiqp"]
    with pytest.raises(KeyError, match="known: sst2"):
        canonical_task_name("xnli")


# -- readers on the real files ----------------------------------------------------------------------------

ROWS = {"sst2": (67349, 872), "cola": (8551, 1043), "mrpc": (3668, 408), "rte": (2490, 277),
        "stsb": (5749, 1500)}  # GLUE's official sizes


@pytest.mark.parametrize("name", list(ROWS))  # the five in ../shared/data/glue; the other four: fixtures below
def test_glue_readers_read_every_row_with_valid_labels(name):
    _require_glue()
    for split, expected in zip(("train", "dev"), ROWS[name], strict=True):
        examples = read_glue(GLUE, name, split)
        assert len(examples) == expected
        assert all(text.strip() for text in examples.texts_a)
        if GLUE_TASKS[name].kind == "regression":
            assert min(examples.labels) >= 0.0 and max(examples.labels) <= 5.0
            assert len(set(examples.labels)) > 20
        else:
            assert set(examples.labels) == {0.0, 1.0}
        assert (examples.texts_b is not None) == (GLUE_TASKS[name].kind != "single")


def test_glue_readers_handle_headerless_cola_and_mrpc_byte_order_mark():
    _require_glue()
    cola = read_glue(GLUE, "cola", "train")
    assert cola.texts_a[0] == "Our friends won't buy this analysis, let alone the next one we propose."  # row 1
    mrpc = read_glue(GLUE, "mrpc", "dev")
    assert mrpc.labels[0] == 1.0 and mrpc.texts_b[0].startswith('" The foodservice pie business')
    rte = read_glue(GLUE, "rte", "dev")
    assert rte.labels[:2] == [1.0, 0.0]  # not_entailment, entailment


def test_malformed_tsv_names_file_and_line(tmp_path):
    (tmp_path / "RTE").mkdir()
    rows = ["index\tsentence1\tsentence2\tlabel", "0\ta\tb\tentailment", "1\ta\tb\tyes"]
    (tmp_path / "RTE" / "dev.tsv").write_text("\n".join(rows) + "\n")
    with pytest.raises(CorpusError, match=r"dev.tsv:3: label 'yes'"):
        read_glue(tmp_path, "rte", "dev")
    with pytest.raises(CorpusError, match="not found"):
        read_glue(tmp_path, "sst2", "dev")


def test_wiki_ranking_queries_have_one_positive_from_their_own_article():
    if not (WIKI / "valid").is_dir():
        pytest.skip(f"shared Wikipedia sample not found at {WIKI}")
    from data_builders.corpus import build_documents

    corpus = [str(WIKI / "valid")]
    documents = build_documents(corpus)
    paragraphs_of = {title: set(paragraphs) for title, paragraphs in zip(documents["title"],
                                                                         documents["paragraphs"], strict=True)}
    train, dev = build_wiki_ranking(corpus, 4, "train"), build_wiki_ranking(corpus, 4, "dev")
    train_passages = {c for candidates in train.candidates for c in candidates}
    assert not train_passages & {c for candidates in dev.candidates for c in candidates}  # dev passages unseen
    assert len(dev) == len(set(dev.texts_a)) > 500  # one held-out paragraph per article with >= 2
    assert len(train) > 3 * len(dev)
    for examples in (train, dev):
        rows = zip(examples.texts_a, examples.candidates, examples.labels, strict=True)
        for title, candidates, label in rows:
            assert len(candidates) == 4
            own = [c in paragraphs_of[title] for c in candidates]
            assert own[int(label)] and sum(own) == 1
        counts = np.bincount(np.asarray(examples.labels, dtype=int), minlength=4)
        assert counts.min() > 0.2 * len(examples)  # the positive's slot is spread out
    assert build_wiki_ranking(corpus, 4, "dev").candidates == dev.candidates  # a fixed benchmark


# -- the four GLUE tasks not in ../shared/data/glue, on fixtures in their file format (tests/glue_fixtures.py)


def test_all_nine_glue_tasks_are_known_with_glue_metrics():
    assert list(GLUE_TASKS) == ["sst2", "cola", "mrpc", "rte", "stsb", "mnli", "qqp", "qnli", "wnli"]
    assert GLUE_TASKS["mnli"].num_labels == 3 and GLUE_TASKS["mnli"].dev_splits == ("dev_matched",
                                                                                      "dev_mismatched")
    assert set(task_metrics("qqp", [1, 0, 1], [1, 1, 1])) == {"accuracy", "f1", "score"}
    for name in ("mnli", "qnli", "wnli"):
        assert set(task_metrics(name, [1, 0], [1, 1])) == {"accuracy", "score"}


def test_mnli_reads_12_column_train_and_16_column_dev_files_by_header(tmp_path):
    glue = write_glue_fixtures(tmp_path)
    train = read_glue(glue, "MNLI", "train")
    assert len(train) == len(MNLI_TRAIN) == 9
    assert train.texts_a[0] == MNLI_TRAIN[0][1] and train.texts_b[0] == MNLI_TRAIN[0][2]  # not the parses
    # the unbalanced quote is text: the row and those after it are read as they are
    assert train.texts_a[2] == '"One of our number will carry out your instructions minutely.'
    assert train.texts_a[3].startswith("How do you know?")
    names = ("contradiction", "entailment", "neutral")  # GLUE's / transformers' label order
    assert [names[int(y)] for y in train.labels] == [r[3][-1] for r in MNLI_TRAIN]
    matched = read_glue(glue, "mnli", "dev_matched")
    assert [names[int(y)] for y in matched.labels] == [r[3][-1] for r in MNLI_DEV_MATCHED]  # gold, not label1
    assert len(read_glue(glue, "mnli", "dev_mismatched")) == 2
    with pytest.raises(CorpusError, match="mnli has no split 'dev'.*dev_matched, dev_mismatched"):
        read_glue(glue, "mnli", "dev")


def test_qqp_skips_and_counts_rows_with_missing_fields(tmp_path):
    glue = write_glue_fixtures(tmp_path)
    train = read_glue(glue, "qqp", "train")
    assert len(train) == len(QQP_TRAIN) - 1 and train.skipped == 1
    assert train.labels == [0.0, 1.0, 0.0, 1.0, 1.0]
    assert train.texts_a[-1] == 'What is the "best" way to learn French?'  # quotes are text
    assert train.texts_b[1] == "How do you control your horniness?"  # question2, not a qid column
    assert read_glue(glue, "qqp", "dev").skipped == 0


def test_qnli_and_wnli_read_their_pairs_and_labels(tmp_path):
    glue = write_glue_fixtures(tmp_path)
    qnli = read_glue(glue, "qnli", "train")
    assert qnli.labels == [1.0, 1.0, 0.0]  # not_entailment, not_entailment, entailment
    assert qnli.texts_a[0] == "When did the third Digimon series begin?"
    assert not qnli.texts_b[0].endswith("\r")  # CRLF files read the same
    wnli = read_glue(glue, "wnli", "dev")
    assert wnli.labels == [0.0, 1.0] and wnli.texts_b == ["The hair has to be cleaned.", "Susan did not answer."]


def test_new_glue_readers_name_the_missing_file_or_column(tmp_path):
    glue = write_glue_fixtures(tmp_path)
    (glue / "QNLI" / "dev.tsv").unlink()
    with pytest.raises(CorpusError, match=r"GLUE file not found: .*QNLI/dev.tsv"):
        read_glue(glue, "qnli", "dev")
    (glue / "WNLI" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel_typo\n0\ta\tb\t1\n")
    with pytest.raises(CorpusError, match=r"WNLI/train.tsv:1: header has no column 'label'"):
        read_glue(glue, "wnli", "train")
    with pytest.raises(CorpusError, match=r"WNLI/dev.tsv:3: expected >= 4 tab-separated columns, got 2"):
        (glue / "WNLI" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\t1\n1\ta\n")
        read_glue(glue, "wnli", "dev")  # only QQP's short rows are skipped; elsewhere they are an error
    with pytest.raises(KeyError, match="not a GLUE task"):
        read_glue(glue, "ocnli", "dev")
    with pytest.raises(CorpusError, match="built from a corpus"):
        read_benchmark("wikiqp", "dev", glue)


def test_mnli_reports_both_dev_sets_and_their_mean():
    per_split = {"dev_matched": task_metrics("mnli", [0, 1, 2, 2], [0, 1, 2, 1]),
                 "dev_mismatched": task_metrics("mnli", [0, 0], [0, 1])}
    combined = combine_dev_splits("mnli", per_split)
    assert combined == pytest.approx({"accuracy_matched": 0.75, "accuracy_mismatched": 0.5, "score": 0.625})
    single = {"dev": task_metrics("qnli", [1, 0], [1, 1])}
    assert combine_dev_splits("qnli", single) == single["dev"]
    assert baseline_metrics("mnli", [2, 2, 0], [2, 1, 2, 2])["accuracy"] == pytest.approx(0.75)
    assert baseline_metrics("qqp", [0, 0, 1], [0, 1])["f1"] == 0.0  # majority 0: no positive predicted
