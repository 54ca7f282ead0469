"""Sentence-distance examples (ERNIE 2.0): how far apart are two sentences?

A document's sentences are taken across its paragraphs in order, S_0 .. S_{N-1}. A pair (A, B) becomes
``[CLS] A [SEP] B [SEP]`` with segment ids 0 up to and including the first [SEP], 1 after it, and the label

- 0: B = S_{i+1} for A = S_i (B is the sentence right after A, across paragraph breaks too);
- 1: A = S_i, B = S_j of the same document with |i - j| >= 2 (B before A is allowed);
- 2: B is a sentence of another document (another row, and never the same ``id``).

Each pair has its own A sentence, drawn without replacement per label. B is never a document's first
sentence, in any class: label 0 cannot have it, and an article's opening sentence ("X (born ...) is an
American ...") would otherwise mark labels 1 and 2. Likewise, with ``balance`` (the default) every label draws A
uniformly from the same candidates, the sentences that have a B of every label: S_0 .. S_{N-2} except S_{N-2}
when N < 5 (no S_j, j >= 1, two away from it). So where A sits in its document, opening sentence or not, says
nothing about the label. Label 1 then takes B uniformly among S_j, j >= 1, |i - j| >= 2; label 2 takes another
document drawn by the per-document RNG among the documents with >= 2 sentences (any other document if that
leaves none) and B uniformly among its S_1 .. S_{N'-1}.

Per document, ``pairs_per_document`` labels are dealt cyclically 0, 1, 2, 0, ... from a random start. With
``balance`` every class of a document gets the same count, capped by the number of A candidates (1 for
N = 3, 2 for N = 4, N - 1 from N = 5), so documents with < 3 sentences give nothing and the classes are
exactly balanced when ``pairs_per_document`` is a multiple of 3 (else the remainder goes to random classes).
Without ``balance`` each label draws A from all sentences that have a B of that label (label 0: S_0 .. S_{N-2},
label 2: every sentence), and a document's share of a class it cannot fill goes to the next class it can, so
short documents add label-0 and label-2 pairs and one-sentence documents label-2 pairs only. A corpus of one
document cannot give label 2 at all: its pairs are labels 0 and 1.

A and B are cut to ``(max_seq_len - 3) // 2`` tokens each, the same for every label.
"""

from __future__ import annotations

import random

import numpy as np
import pyarrow.compute as pc
from datasets import Dataset
from tokenizers import Tokenizer

from data_builders.errors import EmptyTaskError
from data_builders.segments import batch_rows, map_fingerprint

NEXT, SAME_DOC, OTHER_DOC = 0, 1, 2


def sentence_counts(documents: Dataset) -> list[int]:
    """Number of sentences of each document (summed over paragraphs), without materializing any text."""
    if len(documents) == 0:
        return []
    column = documents.select_columns(["sentences"]).with_format("arrow")[:]["sentences"].combine_chunks()
    paragraph_lengths = pc.fill_null(pc.list_value_length(pc.list_flatten(column)), 0).to_numpy()
    parents = pc.list_parent_indices(column).to_numpy()
    counts = np.bincount(parents, weights=paragraph_lengths, minlength=len(column))
    return [int(c) for c in counts]


def a_candidates(n: int, label: int | None) -> list[int]:
    """Indices i of the A sentences of an n-sentence document that have a B of ``label`` (``None``: of every
    label, the balanced mode's common candidates). Label 1 needs some j >= 1 with |i - j| >= 2."""
    far = [i for i in range(n) if i + 2 <= n - 1 or i >= 3]
    if label == NEXT:
        return list(range(n - 1))
    if label == SAME_DOC:
        return far
    if label == OTHER_DOC:
        return list(range(n))
    return [i for i in far if i <= n - 2]


def label_counts_for(n: int, pairs: int, classes: tuple[int, ...], balance: bool,
                     rng: random.Random) -> dict[int, int]:
    """How many pairs of each label an n-sentence document gives (see the module docstring)."""
    start = rng.randrange(len(classes))
    dealt = [classes[(start + t) % len(classes)] for t in range(pairs)]
    if balance:
        most = len(a_candidates(n, None))
        return {c: min(dealt.count(c), most) for c in classes}
    capacity = {c: len(a_candidates(n, c)) for c in classes}
    counts = dict.fromkeys(classes, 0)
    for label in dealt:
        # A class the document cannot fill passes its turn on to the next one that can.
        for shift in range(len(classes)):
            candidate = classes[(classes.index(label) + shift) % len(classes)]
            if counts[candidate] < capacity[candidate]:
                counts[candidate] += 1
                break
    return counts


def sentence_distance_batch(batch: dict[str, list], indices: list[int], *, tokenizer: Tokenizer,
                            pool: Dataset, counts: list[int], donors: list[int], max_seq_len: int,
                            pairs_per_document: int, balance: bool, seed: int) -> dict[str, list]:
    """``datasets.map`` function: a batch of documents -> a batch of (A, B, label) examples.

    ``pool`` is the whole documents dataset (columns id and sentences, or id and the shared tokenization pass's
    sentence_ids, whose token ids are then used as they are) for label-2 B sentences, ``counts`` its
    sentence counts, ``donors`` the rows label-2 B sentences are drawn from.
    """
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    half = (max_seq_len - 3) // 2
    # With a single donor there is no "other" document for anyone: a one-document corpus has no label 2.
    classes = (NEXT, SAME_DOC, OTHER_DOC) if len(donors) >= 2 else (NEXT, SAME_DOC)
    # plan: (doc row in batch, label, a index, donor row or -1, b index)
    plans: list[tuple[int, int, int, int, int]] = []
    for row, (doc_id, row_index) in enumerate(zip(batch["id"], indices, strict=True)):
        n = counts[row_index]
        rng = random.Random(f"{seed}:sentence_distance:{doc_id}")
        wanted = label_counts_for(n, pairs_per_document, classes, balance, rng)
        for label in classes:
            candidates = a_candidates(n, None if balance else label)
            for i in rng.sample(candidates, wanted[label]):
                if label == NEXT:
                    plans.append((row, NEXT, i, -1, i + 1))
                elif label == SAME_DOC:
                    far = [j for j in range(1, n) if abs(i - j) >= 2]
                    plans.append((row, SAME_DOC, i, -1, far[rng.randrange(len(far))]))
                else:
                    donor = row_index
                    while donor == row_index:
                        donor = donors[rng.randrange(len(donors))]
                    size = counts[donor]
                    plans.append((row, OTHER_DOC, i, donor, rng.randrange(1, size) if size > 1 else 0))

    donor_rows = sorted({p[3] for p in plans if p[3] >= 0})
    shared = "sentence_ids" in batch  # the shared tokenization pass: its token ids, no tokenizer call
    column = "sentence_ids" if shared else "sentences"
    fetched = pool[donor_rows] if donor_rows else {"id": [], column: []}
    donor_ids = dict(zip(donor_rows, fetched["id"], strict=True))
    if shared:
        donor_tokens = dict(zip(donor_rows, fetched[column], strict=True))
        own_tokens = batch[column]
        pair_ids = [(own_tokens[row][i], donor_tokens[donor][j] if donor >= 0 else own_tokens[row][j])
                    for row, _, i, donor, j in plans]
    else:
        donor_sentences = {r: [s for p in ps for s in p] for r, ps in zip(donor_rows, fetched[column], strict=True)}
        own = [[s for p in ps for s in p] for ps in batch[column]]
        # A sentence often serves in several pairs: encode each distinct text once.
        texts: dict[str, int] = {}
        pair_texts = []
        for row, _, i, donor, j in plans:
            a_text, b_text = own[row][i], donor_sentences[donor][j] if donor >= 0 else own[row][j]
            pair_texts.append((texts.setdefault(a_text, len(texts)), texts.setdefault(b_text, len(texts))))
        encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False) if texts else []
        pair_ids = [(encodings[a].ids, encodings[b].ids) for a, b in pair_texts]

    out: dict[str, list] = {"input_ids": [], "segment_ids": [], "label": [], "doc_id": [], "b_doc_id": [],
                            "a_index": [], "b_index": []}
    for k, (row, label, i, donor, j) in enumerate(plans):
        a, b = (ids[:half] for ids in pair_ids[k])
        if not a or not b:  # a sentence of only characters the normalizer drops
            continue
        doc_id = batch["id"][row]
        b_doc_id = donor_ids[donor] if donor >= 0 else doc_id
        if label == OTHER_DOC and b_doc_id == doc_id:  # two rows with one id: not "another document"
            continue
        out["input_ids"].append([cls_id, *a, sep_id, *b, sep_id])
        out["segment_ids"].append([0] * (len(a) + 2) + [1] * (len(b) + 1))
        out["label"].append(label)
        out["doc_id"].append(doc_id)
        out["b_doc_id"].append(b_doc_id)
        out["a_index"].append(i)
        out["b_index"].append(j)
    return out


def build_sentence_distance(documents: Dataset, tokenizer: Tokenizer, *, max_seq_len: int,
                            pairs_per_document: int = 6, balance: bool = True, seed: int = 0,
                            num_proc: int = 1) -> Dataset:
    """Documents -> sentence-distance examples (columns ``input_ids``, ``segment_ids``, ``label``, ``doc_id``,
    ``b_doc_id``, ``a_index``, ``b_index``; see the module docstring).

    Raises :class:`EmptyTaskError` when the documents cannot give any pair: none has >= 2 sentences (>= 3 with
    ``balance``, which needs every label from one document).
    """
    if pairs_per_document < 1:
        raise ValueError(f"pairs_per_document must be >= 1, got {pairs_per_document}")
    if max_seq_len < 5:
        raise ValueError(f"max_seq_len {max_seq_len} leaves no room for two sentences")
    counts = sentence_counts(documents)
    needed = 3 if balance else 2
    if sum(c >= needed for c in counts) == 0:
        raise EmptyTaskError(f"task sentence_distance needs documents with >= {needed} sentences"
                         f"{' (balance: true)' if balance else ''}; found 0 in {len(documents)} documents")
    donors = [r for r, c in enumerate(counts) if c >= 2]
    if len(donors) < 2:  # label-2 B sentences may then be opening sentences: better than no label 2
        donors = [r for r, c in enumerate(counts) if c >= 1]
    # With the shared tokenization pass the pairs are cut from its token ids (the same ids as encoding each
    # sentence), and the documents' text is never read.
    columns = ["id", "sentence_ids" if "sentence_ids" in documents.column_names else "sentences"]
    documents = documents.select_columns(columns)
    return documents.map(
        sentence_distance_batch,
        batched=True,
        new_fingerprint=map_fingerprint(),
        batch_size=batch_rows(documents),
        with_indices=True,
        remove_columns=columns,
        num_proc=num_proc if num_proc > 1 else None,
        fn_kwargs={"tokenizer": tokenizer, "pool": documents,
                   "counts": counts, "donors": donors, "max_seq_len": max_seq_len,
                   "pairs_per_document": pairs_per_document, "balance": balance, "seed": seed},
        desc="sentence_distance",
    )
