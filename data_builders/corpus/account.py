"""The account of a corpus build: what each input was read as, and what was read, skipped, kept and cut."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from data_builders.corpus_options import CorpusError

__all__ = ["MAX_LOCATIONS", "REASONS", "CorpusReport", "InputAccount"]

REASONS: dict[str, str] = {
    "invalid_utf8": "lines that are not valid UTF-8 (line dropped; data.encoding names another codec)",
    "invalid_encoding": "lines not valid in the file's detected or given encoding (line dropped)",
    "binary": "binary or NUL-ridden lines (line dropped)",
    "malformed_jsonl": "malformed JSON Lines records (record dropped)",
    "malformed_doc_header": "unreadable <doc ...> headers (the block up to its </doc> dropped)",
    "unterminated_doc": "<doc> blocks without </doc> (text kept)",
    "outside_doc": "text outside any <doc> block (line dropped)",
    "unreadable_input": "inputs that cannot be read (input dropped)",
}
"""Why a part of the input was skipped -> what it is and what happens to it; the keys of every report."""

MAX_LOCATIONS = 5
"""How many ``file:line: reason`` locations a report keeps per input and reason."""

_ERROR_HINT = " (data.on_bad_input: skip drops and counts such parts instead)"


def _empty_entry() -> dict[str, Any]:
    return {"count": 0, "bytes": 0, "first": []}


def _add_entry(entries: dict[str, dict[str, Any]], key: str, count: int, nbytes: int, first: list[str]) -> None:
    entry = entries.setdefault(key, _empty_entry())
    entry["count"] += count
    entry["bytes"] += nbytes
    entry["first"].extend(first[: MAX_LOCATIONS - len(entry["first"])])


class InputAccount:
    """The account of one input file (or saved dataset): what its reader read, skipped and cut.

    ``bad`` is the one door every bad part goes through: under the ``skip`` policy it is counted (with its
    bytes and, for the first :data:`MAX_LOCATIONS`, its ``file:line`` and reason); under ``error`` it raises
    :class:`CorpusError` with that location, so the first bad part stops the run. ``encoding`` is the codec
    the file was decoded with (None for a saved dataset) and ``encoding_source`` how it was chosen:
    ``default`` (UTF-8), ``bom`` (its byte-order mark), ``detected`` or ``given`` (``data.encoding``).
    """

    def __init__(self, path: Path, fmt: str, on_bad_input: str = "error") -> None:
        self.path = Path(path)
        self.format = fmt
        self.on_bad_input = on_bad_input
        self.bytes = 0
        self.documents = self.kept = self.stubs = 0
        self.encoding: str | None = None
        self.encoding_source: str | None = None
        self.skipped: dict[str, dict[str, Any]] = {}
        self.cut: dict[str, dict[str, Any]] = {}

    def where(self, line: int | str | None) -> str:
        """``path:line`` (``path`` alone for the whole input)."""
        return str(self.path) if line is None else f"{self.path}:{line}"

    def bad(self, line: int | str | None, reason: str, detail: str, nbytes: int) -> None:
        """One bad part: count it (policy ``skip``) or raise :class:`CorpusError` (policy ``error``)."""
        location = f"{self.where(line)}: {detail}"
        if self.on_bad_input == "error":
            raise CorpusError(location + _ERROR_HINT)
        _add_entry(self.skipped, reason, 1, nbytes, [location])

    def more_bytes(self, reason: str, nbytes: int) -> None:
        """Further bytes of a bad part already counted (the next piece of the same over-long line)."""
        self.skipped[reason]["bytes"] += nbytes

    def note_cut(self, kind: str, line: int | str | None, pieces: int, detail: str) -> None:
        """A paragraph (``kind="paragraphs"``) or document (``"documents"``) cut into ``pieces``."""
        entry = self.cut.setdefault(kind, {"count": 0, "pieces": 0, "first": []})
        entry["count"] += 1
        entry["pieces"] += pieces
        if len(entry["first"]) < MAX_LOCATIONS:
            entry["first"].append(f"{self.where(line)}: {detail}")

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.format, "encoding": self.encoding,
                "encoding_source": self.encoding_source, "bytes": self.bytes, "documents": self.documents,
                "kept": self.kept, "stubs": self.stubs, "skipped": self.skipped, "cut": self.cut}


class CorpusReport:
    """The account of one corpus build: inputs read, documents kept, and what was skipped or cut, by reason.

    Filled by :func:`data_builders.corpus.build_documents`; :meth:`to_dict` is the JSON written as
    ``RUN_DIR/data_report.json``'s ``corpus`` section and :meth:`summary` its few printed lines.
    """

    def __init__(self, on_bad_input: str = "skip", min_body_chars: int = 0) -> None:
        self.on_bad_input = on_bad_input
        self.min_body_chars = min_body_chars
        self.inputs: list[InputAccount] = []
        self.embedded = False
        self.stopped_at_max_documents = False

    def account(self, path: Path, fmt: str) -> InputAccount:
        """A new :class:`InputAccount` for ``path``, under this report's policy."""
        account = InputAccount(path, fmt, self.on_bad_input)
        self.inputs.append(account)
        return account

    def totals(self) -> dict[str, Any]:
        """Sums over the inputs: bytes, documents, and skipped / cut entries by reason."""
        skipped: dict[str, dict[str, Any]] = {}
        cut: dict[str, dict[str, Any]] = {}
        for account in self.inputs:
            for reason, entry in account.skipped.items():
                _add_entry(skipped, reason, entry["count"], entry["bytes"], entry["first"])
            for kind, entry in account.cut.items():
                total = cut.setdefault(kind, {"count": 0, "pieces": 0, "first": []})
                total["count"] += entry["count"]
                total["pieces"] += entry["pieces"]
                total["first"].extend(entry["first"][: MAX_LOCATIONS - len(total["first"])])
        return {
            "inputs": len(self.inputs),
            "bytes": sum(a.bytes for a in self.inputs),
            "bytes_skipped": sum(e["bytes"] for e in skipped.values()),
            "documents": {"read": sum(a.documents for a in self.inputs), "kept": sum(a.kept for a in self.inputs),
                          "stubs": sum(a.stubs for a in self.inputs)},
            "encodings": self.encodings(),
            "skipped": {reason: skipped[reason] for reason in REASONS if reason in skipped},
            "cut": cut,
        }

    def encodings(self) -> dict[str, int]:
        """How many inputs were decoded with each codec, keyed ``codec`` or ``codec (how chosen)`` when it was
        not the default UTF-8: ``{"utf-8": 16, "gb18030 (detected)": 2}``."""
        counts = Counter(a.encoding if a.encoding_source == "default" else f"{a.encoding} ({a.encoding_source})"
                         for a in self.inputs if a.encoding is not None)
        return dict(counts.most_common())

    def to_dict(self) -> dict[str, Any]:
        return {"on_bad_input": self.on_bad_input, "min_body_chars": self.min_body_chars,
                "embedded_corpus": self.embedded, "stopped_at_max_documents": self.stopped_at_max_documents,
                **self.totals(), "reasons": REASONS, "files": [a.to_dict() for a in self.inputs]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CorpusReport:
        """The report :meth:`to_dict` wrote (for a cached build; one from before encodings has none)."""
        report = cls(data.get("on_bad_input", "skip"), data.get("min_body_chars", 0))
        report.embedded = bool(data.get("embedded_corpus"))
        report.stopped_at_max_documents = bool(data.get("stopped_at_max_documents"))
        for item in data.get("files", []):
            account = report.account(Path(item["path"]), item["format"])
            account.bytes, account.documents = item["bytes"], item["documents"]
            account.kept, account.stubs = item["kept"], item["stubs"]
            account.encoding, account.encoding_source = item.get("encoding"), item.get("encoding_source")
            account.skipped, account.cut = item["skipped"], item["cut"]
        return report

    def skipped_lines(self) -> list[str]:
        """One line per reason: ``invalid_utf8: 3 (1.2 kB), lines that are not ... ; first at file:line: ...``."""
        lines = []
        for reason, entry in self.totals()["skipped"].items():
            size = f" ({_size(entry['bytes'])})" if entry["bytes"] else ""
            first = f"; first at {entry['first'][0]}" if entry["first"] else ""
            lines.append(f"{reason}: {entry['count']}{size}, {REASONS[reason]}{first}")
        return lines

    def skipped_summary(self) -> str:
        """:meth:`skipped_lines` as one line (empty when nothing was skipped)."""
        return "; ".join(self.skipped_lines())

    def summary(self) -> list[str]:
        """The account in a few lines, for the console: what was read and kept, the encodings when any input
        was not plain UTF-8, then one line per reason anything was skipped for, then what was cut."""
        totals = self.totals()
        docs = totals["documents"]
        source = "the embedded standard-library corpus" if self.embedded else \
            f"{totals['inputs']} input(s) of {_size(totals['bytes'])}"
        lines = [f"corpus: {source}; {docs['read']} documents read, {docs['kept']} kept, {docs['stubs']} dropped "
                 f"as stubs (< {self.min_body_chars} body characters)"
                 + ("; stopped at data.max_documents" if self.stopped_at_max_documents else "")]
        if any(name != "utf-8" for name in totals["encodings"]):
            lines.append("encodings: " + ", ".join(f"{name}: {n} file(s)" for name, n in totals["encodings"].items()))
        if totals["skipped"]:
            lines.append(f"skipped {_size(totals['bytes_skipped'])} of bad input "
                         f"(data.on_bad_input: {self.on_bad_input}):")
            lines.extend(f"  {line}" for line in self.skipped_lines())
        else:
            lines.append("skipped: nothing, no bad input")
        for kind, entry in totals["cut"].items():
            lines.append(f"cut: {entry['count']} over-long {kind} into {entry['pieces']} pieces; first at "
                         f"{entry['first'][0]}")
        return lines


def _size(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"
