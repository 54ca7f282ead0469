"""WordPiece tokenizers through HF `tokenizers`: train on a corpus, or load a ``tokenizer.json`` / ``vocab.txt``.

Training is not bit-reproducible between runs, so a run trains once and then always reuses the saved file
(``tokenizer_for_run``). A freshly trained tokenizer has no [CLS]/[SEP] post-processor; we set it explicitly.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class TokenizerError(ValueError):
    """A tokenizer file is missing, unreadable or lacks the special tokens we need."""


def _configure(tok: Tokenizer, lowercase: bool) -> Tokenizer:
    # BertNormalizer keeps character alignment, so offsets map tokens back to the original (cased) text.
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:  # not trained yet: the post-processor comes after training
        return tok
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tok


def train_wordpiece(texts: Iterable[str], vocab_size: int, min_frequency: int = 2,
                    lowercase: bool = True) -> Tokenizer:
    """Train an uncased (by default) WordPiece tokenizer on an iterator of texts."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    _configure(tok, lowercase)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
        continuing_subword_prefix="##", show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return _configure(tok, lowercase)


def load_tokenizer(path: str | Path, lowercase: bool = True) -> Tokenizer:
    """Load ``tokenizer.json`` (as saved) or a BERT ``vocab.txt`` (configured here as uncased WordPiece)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TokenizerError(f"tokenizer file not found: {path}")
    try:
        if path.suffix == ".json":
            tok = Tokenizer.from_file(str(path))
        else:
            vocab = {}
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
                token = line.rstrip("\n")
                if token:
                    vocab.setdefault(token, i)
            tok = _configure(Tokenizer(models.WordPiece(vocab, unk_token="[UNK]")), lowercase)
    except Exception as err:  # tokenizers raises plain Exceptions with long messages
        raise TokenizerError(f"cannot read tokenizer {path}: {str(err).splitlines()[0]}") from None
    missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
    if missing:
        raise TokenizerError(f"tokenizer {path} lacks special tokens {missing}")
    if tok.post_processor is None:
        _configure(tok, is_lowercasing(tok))
    return tok


def is_lowercasing(tok: Tokenizer) -> bool:
    """Whether the tokenizer lowercases its input (checked by behaviour, not by reading its config)."""
    return tok.normalizer is not None and tok.normalizer.normalize_str("AbC") == "abc"


def save_tokenizer(tok: Tokenizer, path: str | Path) -> Path:
    """Save atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tokenizer-", suffix=".json")
    os.close(fd)
    tok.save(tmp)
    os.replace(tmp, path)
    return path


def tokenizer_hash(tok: Tokenizer) -> str:
    """A content hash: examples built with one tokenizer are never reused with another."""
    return hashlib.sha1(tok.to_str().encode()).hexdigest()[:16]


def tokenizer_for_run(run_path: Path, *, pretrained: str | None, texts: Iterator[str] | None,
                      cache_path: Path | None, vocab_size: int, min_frequency: int,
                      lowercase: bool) -> Tokenizer:
    """The run's tokenizer: the copy saved in the run directory if there is one (resume never retrains),
    else the configured pretrained file, else one from the cache, else trained now on ``texts``."""
    if run_path.is_file():
        return load_tokenizer(run_path)
    if pretrained:
        tok = load_tokenizer(pretrained, lowercase)
    elif cache_path is not None and cache_path.is_file():
        tok = load_tokenizer(cache_path)
    else:
        if texts is None:
            raise TokenizerError("no tokenizer configured and no corpus to train one on")
        tok = train_wordpiece(texts, vocab_size, min_frequency, lowercase)
        if cache_path is not None:
            save_tokenizer(tok, cache_path)
    save_tokenizer(tok, run_path)
    return tok


def iter_paragraphs(documents, batch_size: int = 256) -> Iterator[str]:
    """Every paragraph of a documents dataset, streamed (the tokenizer trainer's input)."""
    for batch in documents.iter(batch_size=batch_size):
        for paragraphs in batch["paragraphs"]:
            yield from paragraphs
