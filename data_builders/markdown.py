"""One document per file: Markdown (``data.format: markdown``) and plain text (``data.format: text_file``).

Pure text-to-(title, paragraphs) parsing; the corpus readers in ``data_builders.corpus`` read the files and
apply the common paragraph filter.

Markdown: YAML/TOML front matter (``---`` or ``+++`` fenced, at the top), HTML comments (``<!-- ... -->``, on
one line or several), headings, fenced code blocks, tables and horizontal rules are kept out of the
paragraphs. The title is the first ``#`` heading, together with level-1 headings that follow it before any
body text (``# 中华人民共和国民法典`` / ``# 侵权责任编`` -> "中华人民共和国民法典 侵权责任编", so the parts of one
code do not share one title); a file without a ``#`` heading takes its first line. A paragraph is a block of
consecutive lines (lines joined with a space, or with nothing next to a CJK character); list items and
block quotes start a paragraph of their own, their markers removed; links keep their text, images go, and
emphasis and code marks are dropped.

Plain text: the first non-empty line is the title, every other non-empty line a paragraph.
"""

from __future__ import annotations

import re

__all__ = ["parse_markdown", "parse_text_file"]

_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+")
_QUOTE = re.compile(r"^\s*>\s?")
_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_EMPHASIS = re.compile(r"(\*\*|__|`)")
# CJK ideographs and CJK / full-width punctuation: no space is written next to them when lines are joined.
_CJK_CHAR = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uf900-\ufaff\uff00-\uffef]")


def _front_matter_end(lines: list[str]) -> int:
    if lines and lines[0].strip() in ("---", "+++"):
        fence = lines[0].strip()
        for i in range(1, len(lines)):
            if lines[i].strip() in (fence, "..."):
                return i + 1
    return 0


def _inline(text: str) -> str:
    return _EMPHASIS.sub("", _LINK.sub(r"\1", _IMAGE.sub("", text))).strip()


def _join(lines: list[str]) -> str:
    out = lines[0]
    for line in lines[1:]:
        cjk = _CJK_CHAR.match(out[-1:]) or _CJK_CHAR.match(line[:1])
        out += line if cjk else " " + line
    return out


def parse_markdown(text: str) -> tuple[str, list[str]]:
    """``(title, paragraphs)`` of one Markdown document (see the module docstring)."""
    text = _COMMENT.sub("\n", text.lstrip("\ufeff"))
    lines = text.splitlines()
    lines = lines[_front_matter_end(lines):]
    title_parts: list[str] = []
    title_open = True  # level-1 headings still extend the title until body text appears
    blocks: list[list[str]] = []
    block: list[str] = []
    in_fence = False

    def flush() -> None:
        if block:
            blocks.append(list(block))
            block.clear()

    for line in lines:
        if _FENCE.match(line):
            flush()
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        heading = _HEADING.match(line)
        if heading:
            flush()
            if len(heading.group(1)) == 1 and title_open and heading.group(2):
                title_parts.append(_inline(heading.group(2)))
            elif title_parts:
                title_open = False
            continue
        stripped = line.strip()
        if not stripped or _RULE.match(line) or stripped.startswith("|"):
            flush()
            continue
        if _LIST_ITEM.match(line) or _QUOTE.match(line):
            flush()
            stripped = _QUOTE.sub("", _LIST_ITEM.sub("", line, count=1), count=1).strip()
        content = _inline(stripped)
        if content:
            if title_parts:
                title_open = False
            block.append(content)
    flush()
    if title_parts:
        return " ".join(title_parts), [_join(b) for b in blocks]
    if blocks:  # no "#" heading: line 1 is the title
        title, blocks[0] = blocks[0][0], blocks[0][1:]
        return title, [_join(b) for b in blocks if b]
    return "", []


def parse_text_file(text: str) -> tuple[str, list[str]]:
    """``(title, paragraphs)`` of one plain-text document: first non-empty line, then every other one."""
    lines = [line.strip() for line in text.lstrip("\ufeff").splitlines() if line.strip()]
    return (lines[0], lines[1:]) if lines else ("", [])
