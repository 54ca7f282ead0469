"""Bytes -> lines of text: each file's encoding chosen, lines read in bounded pieces, over-long lines cut.

UTF-8 files (the common case) take the byte path that was always there: ``readline`` in pieces of at most
1 MiB, each decoded on its own, so a line that is not UTF-8 is dropped alone. A file in another encoding
(detected under ``data.encoding: auto``, marked by its byte-order mark, or named) is decoded in 1 MiB
chunks with an incremental decoder and split into lines after decoding, which is right for every codec,
UTF-16 and UTF-32 included; bytes the codec cannot decode mark their line, which is dropped and counted.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from data_builders.corpus.account import InputAccount

__all__ = ["bom_codec", "codec_pieces", "cut_paragraph", "decoded_lines", "is_binary", "line_pieces", "open_text", "sniff_encoding",
           "undecodable"]

# Text and WikiExtractor files are read in pieces of at most this many bytes, so no line is ever held whole.
PIECE_BYTES = 1 << 20
# NUL and the other C0 controls but tab, newline, vertical tab, form feed and carriage return, plus DEL.
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_BINARY_SHARE = 0.01
# Where an over-long paragraph is preferably cut: after a sentence end (then a space) or a CJK full stop.
_CUT_AFTER_SENTENCE = re.compile(r"""[.!?]["'\u201d\u2019)\]]*\s+|[\u3002\uff01\uff1f]+""")
_CUT_AFTER_SPACE = re.compile(r"\s+")

# UTF-32 first: its little-endian mark starts with UTF-16's.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
# A detected encoding is read with the superset the file most likely is: GB2312 and GBK text is GB18030 text,
# and Latin-1 labels mean Windows-1252 in practice (as browsers read them), where 0x80-0x9f are quotes and
# dashes rather than control characters.
_SUPERSETS = {"gb2312": "gb18030", "gbk": "gb18030", "iso8859-1": "cp1252"}  # codecs.lookup names
# Preferred among equally good detections, most used first (codecs.lookup names).
_COMMON = ("cp1252", "gb18030", "big5", "shift_jis", "euc_jp", "euc_kr", "cp1251")
_TIE = 0.01
_DETECT_BYTES = 1 << 16  # the detector sees at most this much of the sample's non-UTF-8 lines
# Undecodable bytes become this noncharacter, so their line can be found and dropped after decoding.
_MARK = "\uffff"
_MARK_ERRORS = "ernie_cmtl.corpus.mark"
codecs.register_error(_MARK_ERRORS, lambda exc: (_MARK, exc.end))  # type: ignore[arg-type, return-value]

Line = tuple[int, str | None, bool]


def is_binary(text: str) -> bool:
    """Whether ``text`` is binary data: NUL or other control characters make at least 1% of it."""
    controls = len(_CONTROL.findall(text))
    return controls > 0 and controls >= _BINARY_SHARE * len(text)


def _cut_point(text: str, start: int, max_chars: int) -> int:
    # The last sentence end, else the last space, in the second half of the window: each cut then consumes at
    # least max_chars / 2 characters for O(max_chars) work, so cutting is linear in the text's length.
    low, high = start + max_chars // 2, start + max_chars
    for pattern in (_CUT_AFTER_SENTENCE, _CUT_AFTER_SPACE):
        last = None
        for last in pattern.finditer(text, low, high):  # noqa: B007 - only the last match is wanted
            pass
        if last is not None:
            return last.end()
    return high


def cut_paragraph(text: str, max_chars: int) -> list[str]:
    """``text`` in pieces of at most ``max_chars`` characters, cut after the last sentence end (``.``, ``!``,
    ``?`` and closing quotes before a space, or a CJK full stop) in the second half of each window, else after
    its last whitespace, else at ``max_chars``. Text no longer than ``max_chars`` is returned whole."""
    pieces, start = [], 0
    while len(text) - start > max_chars:
        cut = _cut_point(text, start, max_chars)
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


# ---------------------------------------------------------------------------------------------------------
# Choosing a file's encoding
# ---------------------------------------------------------------------------------------------------------


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def bom_codec(start: bytes) -> str | None:
    """The codec a byte-order mark at the start of a file names (``utf-8-sig``, ``utf-16``, ``utf-32``), or
    None."""
    return next((codec for bom, codec in _BOMS if start.startswith(bom)), None)


def sniff_encoding(sample: bytes, whole: bool) -> tuple[str, str]:
    """(codec, how it was chosen) for a file that starts with ``sample`` (all of it when ``whole``), under
    ``data.encoding: auto``.

    A byte-order mark decides (``bom``: UTF-8, UTF-16, UTF-32). Otherwise the file is UTF-8 (``default``)
    unless most of the sample's lines with non-ASCII bytes are not UTF-8: then ``charset-normalizer`` names the
    encoding from those lines (``detected``), read as its usual superset (GBK as GB18030, Latin-1 as cp1252).
    A UTF-8 file with a few stray lines in another encoding stays UTF-8, the stray lines skipped and counted.
    """
    if (codec := bom_codec(sample)) is not None:
        return codec, "bom"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=whole)
        return "utf-8", "default"
    except UnicodeDecodeError:
        pass
    lines = sample.split(b"\n")
    if not whole:
        lines.pop()  # cut off mid-line
    non_ascii = [line for line in lines if not line.isascii()]
    invalid = [line for line in non_ascii if not _is_utf8(line)]
    if 2 * len(invalid) <= len(non_ascii):
        return "utf-8", "default"
    import charset_normalizer  # only for files that are not UTF-8

    matches = list(charset_normalizer.from_bytes(b"\n".join(invalid)[:_DETECT_BYTES]))
    if not matches:
        return "utf-8", "default"
    name = _pick(matches)
    return _SUPERSETS.get(name, name), "detected"


def _pick(matches: list) -> str:
    """Among the codecs the detector finds about as clean as its cleanest (mess within ``_TIE``), the most
    common one, else the detector's first. English with a few accented names fits cp1252, cp1250, cp1257 and
    cp775 about equally; the detector's language-based order among them is noise on such text (measured: it
    put cp775 first for one shard of the Wikipedia sample saved as cp1252)."""
    names = [codecs.lookup(match.encoding).name for match in matches]
    cleanest = min(match.chaos for match in matches)
    tied = {name for name, match in zip(names, matches, strict=True) if match.chaos <= cleanest + _TIE}
    return next((name for name in _COMMON if name in tied), names[0])


def _open_binary(path: Path, account: InputAccount) -> BinaryIO | None:
    try:
        handle = path.open("rb")
        account.bytes = os.fstat(handle.fileno()).st_size
        return handle
    except OSError as exc:
        account.bad(None, "unreadable_input", f"cannot read ({exc.strerror or exc})", 0)
        return None


def open_text(path: Path, account: InputAccount, encoding: str) -> tuple[BinaryIO, str] | None:
    """``path`` opened for reading and the codec to decode it with (``utf-8`` for the byte path), noted in
    ``account``; None (counted) when the file cannot be read. A UTF-8 byte-order mark is skipped."""
    handle = _open_binary(path, account)
    if handle is None:
        return None
    if encoding == "auto":
        sample = handle.read(PIECE_BYTES)
        codec, source = sniff_encoding(sample, whole=len(sample) < PIECE_BYTES)
        handle.seek(0)
    else:
        codec, source = codecs.lookup(encoding).name, "given"
    account.encoding, account.encoding_source = codec, source
    if codec == "utf-8-sig":
        codec = "utf-8"
        handle.seek(len(codecs.BOM_UTF8))
    return handle, codec


# ---------------------------------------------------------------------------------------------------------
# Lines in bounded pieces
# ---------------------------------------------------------------------------------------------------------


def decoded_lines(path: Path, account: InputAccount, encoding: str) -> Iterator[Line]:
    """(line number, text, line complete) for each piece of at most 1 MiB of every line of ``path``.

    A piece that cannot be decoded, or is binary, is counted and comes as ``None``; a whole line of either kind
    is counted once. Line ends (``\\n``, ``\\r\\n``) are removed; the last line may lack one.
    """
    opened = open_text(path, account, encoding)
    if opened is None:
        return iter(())
    handle, codec = opened
    # Returned, not delegated to: one generator less per line on the hot UTF-8 path.
    return _utf8_lines(handle, account) if codec == "utf-8" else _codec_lines(handle, codec, account)


def _utf8_lines(handle: BinaryIO, account: InputAccount) -> Iterator[Line]:
    hint = "" if account.encoding_source == "given" else \
        "; data.encoding names the codec of a file that is not UTF-8"
    decoder = codecs.getincrementaldecoder("utf-8")()
    lineno, counted = 1, None  # counted: the reason this line was already counted under
    with handle:
        while chunk := handle.readline(PIECE_BYTES):
            complete = chunk.endswith(b"\n")
            text: str | None
            try:
                # readline stops short of the limit without a newline only at the end of the file.
                text = decoder.decode(chunk, final=complete or len(chunk) < PIECE_BYTES)
            except UnicodeDecodeError as exc:
                decoder.reset()
                text, reason = None, "invalid_utf8"
                detail = f"not UTF-8 text ({exc.reason} at byte {exc.start + 1} of the line piece{hint})"
            else:
                reason, detail = "binary", "binary data (NUL or control characters)"
                if complete:
                    text = text[:-2] if text.endswith("\r\n") else text[:-1]
                if is_binary(text):
                    text = None
            if text is None:
                if counted == reason:
                    account.more_bytes(reason, len(chunk))
                else:
                    account.bad(lineno, reason, detail, len(chunk))
                    counted = reason
            yield lineno, text, complete
            if complete:
                lineno, counted = lineno + 1, None


def codec_pieces(handle: BinaryIO, codec: str, max_chars: int | None) -> Iterator[tuple[str, bool]]:
    """(text, line complete) for the lines of ``handle`` decoded with ``codec`` in 1 MiB chunks, line ends
    removed; a line longer than ``max_chars`` (when given) comes in pieces. Undecodable bytes are marked."""
    decoder = codecs.getincrementaldecoder(codec)(errors=_MARK_ERRORS)
    pending = ""
    while True:
        chunk = handle.read(PIECE_BYTES)
        pending += decoder.decode(chunk, final=not chunk)
        start = 0
        while (end := pending.find("\n", start)) >= 0:
            line = pending[start:end]
            yield (line[:-1] if line.endswith("\r") else line), True
            start = end + 1
        pending = pending[start:]
        if not chunk:
            break
        if max_chars is not None and len(pending) > max_chars:
            yield pending, False
            pending = ""
    if pending:
        yield pending, False


def undecodable(text: str) -> bool:
    """Whether ``text`` from :func:`codec_pieces` held bytes its codec could not decode."""
    return _MARK in text


def _codec_lines(handle: BinaryIO, codec: str, account: InputAccount) -> Iterator[Line]:
    lineno, counted = 1, None
    with handle:
        for piece, complete in codec_pieces(handle, codec, PIECE_BYTES):
            text: str | None = piece
            if undecodable(piece):
                text, reason, detail = None, "invalid_encoding", f"not {codec} text (bytes {codec} cannot decode)"
            elif is_binary(piece):
                text, reason, detail = None, "binary", "binary data (NUL or control characters)"
            if text is None:
                nbytes = len(piece.encode(codec, errors="replace")) + complete  # re-encoded: about the bytes read
                if counted == reason:
                    account.more_bytes(reason, nbytes)
                else:
                    account.bad(lineno, reason, detail, nbytes)
                    counted = reason
            yield lineno, text, complete
            if complete:
                lineno, counted = lineno + 1, None


def line_pieces(path: Path, account: InputAccount, max_chars: int, encoding: str) -> Iterator[tuple[int, str, bool]]:
    """(line number, piece, whole line) for the lines of ``path``: a line of at most ``max_chars`` characters
    is one piece (``whole``), a longer one is cut as :func:`cut_paragraph` does, streaming, so neither memory
    nor time depends on the longest line. Dropped pieces (see :func:`decoded_lines`) do not appear."""
    carry, pieces = "", 0
    lineno = 1
    for lineno, text, complete in decoded_lines(path, account, encoding):
        if text is None and carry:  # text on both sides of a dropped piece is not joined up
            yield lineno, carry, False
            carry, pieces = "", pieces + 1
        if text is not None:
            buffer = carry + text if carry else text
            start = 0
            while len(buffer) - start > max_chars:
                cut = _cut_point(buffer, start, max_chars)
                yield lineno, buffer[start:cut], False
                pieces, start = pieces + 1, cut
            carry = buffer[start:]
        if complete:
            if pieces:
                if carry:
                    yield lineno, carry, False
                account.note_cut("paragraphs", lineno, pieces + bool(carry),
                                 f"a line over {max_chars} characters")
            elif text is not None:
                yield lineno, carry, True
            carry, pieces = "", 0
    if carry or pieces:  # a last line without its newline
        yield lineno, carry, not pieces
        if pieces:
            account.note_cut("paragraphs", lineno, pieces + 1, f"a line over {max_chars} characters")
