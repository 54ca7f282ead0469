"""Tests for the rule-based sentence splitter, on real Wikipedia sentences and edge cases."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from data_builders.sentences import ABBREVIATIONS, split_sentences

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WIKI_TRAIN = DATA / "wikipedia-en-2018-sample" / "train"

# Paragraphs copied verbatim from wikipedia-en-2018-sample/train (wiki_00 .. wiki_09), with the split a
# careful human reader would make.
REAL_PARAGRAPHS = [
    pytest.param(
        "Dr. MacAuley, a kindly beloved country doctor, is sent to Fillmore Prison. His Crime was for removing "
        "a bullet from a young man who was escaping from the police.",
        [
            "Dr. MacAuley, a kindly beloved country doctor, is sent to Fillmore Prison.",
            "His Crime was for removing a bullet from a young man who was escaping from the police.",
        ],
        id="title-Dr",
    ),
    pytest.param(
        "On June 17, 2016, Nemkov fought Mikołaj Różanski on the card in St. Petersburg, Russia. He won the "
        "fight via TKO in the first round.",
        [
            "On June 17, 2016, Nemkov fought Mikołaj Różanski on the card in St. Petersburg, Russia.",
            "He won the fight via TKO in the first round.",
        ],
        id="St-place",
    ),
    pytest.param(
        "FM 1120 begins at an intersection with U.S. Highway 83 (US 83) just south of Leakey. The road travels "
        "east to the community of Rio Frio where it intersects RM 2748 where it heads north to terminate at an "
        "intersection with US 83.",
        [
            "FM 1120 begins at an intersection with U.S. Highway 83 (US 83) just south of Leakey.",
            "The road travels east to the community of Rio Frio where it intersects RM 2748 where it heads north "
            "to terminate at an intersection with US 83.",
        ],
        id="U.S.",
    ),
    pytest.param(
        "He brewed his first beer at Balhannah in August 1843 with the assistance of W. Milne and W. Johnston, "
        "one of the brothers who later founded the Oakbank Brewery. In June 1844 he was obliged to mortgage his "
        "property and in 1855 had a second attempt at beer brewing.",
        [
            "He brewed his first beer at Balhannah in August 1843 with the assistance of W. Milne and "
            "W. Johnston, one of the brothers who later founded the Oakbank Brewery.",
            "In June 1844 he was obliged to mortgage his property and in 1855 had a second attempt at beer "
            "brewing.",
        ],
        id="initials",
    ),
    pytest.param(
        "In 1912 she married Dr. John E. Perry, with whom she had one son. Perry died on October 23, 1943, at "
        "Wheatley-Provident Hospital in Kansas City, Missouri.",
        [
            "In 1912 she married Dr. John E. Perry, with whom she had one son.",
            "Perry died on October 23, 1943, at Wheatley-Provident Hospital in Kansas City, Missouri.",
        ],
        id="Dr-and-initial",
    ),
    pytest.param(
        "The object has a minimum orbital intersection distance with Earth of , which corresponds to 17.6 lunar "
        'distances (LD). On 14 February 2018, 14:44 UTC, it came within 18.66 LD of the Earth "(see diagrams)". '
        "Its next close approach will be on 14 February 2024, at a similar distance.",
        [
            "The object has a minimum orbital intersection distance with Earth of , which corresponds to 17.6 "
            "lunar distances (LD).",
            'On 14 February 2018, 14:44 UTC, it came within 18.66 LD of the Earth "(see diagrams)".',
            "Its next close approach will be on 14 February 2024, at a similar distance.",
        ],
        id="decimals",
    ),
    pytest.param(
        "Mysterious Personal Shopper () is a 2018 South Korean television series starring Choi Myung-gil, Park "
        "Ha-na, Wang Bit-na, Lee Eun-hyung, and Han Sang-jin. The series aired on KBS2 from Monday to Friday "
        "from 7:50 p.m. to 8:30 p.m. (KST) from February 26 to July 20, 2018.",
        [
            "Mysterious Personal Shopper () is a 2018 South Korean television series starring Choi Myung-gil, "
            "Park Ha-na, Wang Bit-na, Lee Eun-hyung, and Han Sang-jin.",
            "The series aired on KBS2 from Monday to Friday from 7:50 p.m. to 8:30 p.m. (KST) from February 26 "
            "to July 20, 2018.",
        ],
        id="p.m.",
    ),
    pytest.param(
        "In recent years, Dlab was very active in efforts to improve the mathematics education. In the Czech "
        "Republic, he's been often quoted as an authority that is skeptical towards modern methods to teach, "
        "e.g. the method of Milan Hejný. He emphasizes the key role played by the quality of teachers.",
        [
            "In recent years, Dlab was very active in efforts to improve the mathematics education.",
            "In the Czech Republic, he's been often quoted as an authority that is skeptical towards modern "
            "methods to teach, e.g. the method of Milan Hejný.",
            "He emphasizes the key role played by the quality of teachers.",
        ],
        id="e.g.",
    ),
    pytest.param(
        '"How else can you build a movement among people who have been left out? Its purpose is to build a '
        'fire," he told "The Washington Post" in 1986.',
        [
            '"How else can you build a movement among people who have been left out?',
            'Its purpose is to build a fire," he told "The Washington Post" in 1986.',
        ],
        id="question",
    ),
    pytest.param(
        "In 1970 Keeble retired, transferring his firm and its management to his long-time associates: Arnold "
        "Nye, William Lincoln, Louis C. Daugherty, Henry C. Waechter, and John F. Caldwell Jr. The new firm was "
        'named "Architect-Engineer Associates, Inc." Keeble remained a consultant.',
        [
            "In 1970 Keeble retired, transferring his firm and its management to his long-time associates: "
            "Arnold Nye, William Lincoln, Louis C. Daugherty, Henry C. Waechter, and John F. Caldwell Jr.",
            'The new firm was named "Architect-Engineer Associates, Inc." Keeble remained a consultant.',
        ],
        id="Jr-ends-sentence",
    ),
    pytest.param(
        'HMS "Torrid" was an destroyer which served with the Royal Navy during World War I. Subsequently, '
        '"Torrid" was used in the 1930s as a trials ship for new anti-submarine warfare weapons.',
        [
            'HMS "Torrid" was an destroyer which served with the Royal Navy during World War I.',
            'Subsequently, "Torrid" was used in the 1930s as a trials ship for new anti-submarine warfare weapons.',
        ],
        id="roman-numeral-ends-sentence",
    ),
    pytest.param(
        'Paul Fischer, the author of "A Kim Jong-Il Production" likens it with the work of Busby Berkeley, '
        'calling it "an extravagant musical ... with fantasy creatures, expensive costumes, and underwater '
        'scenes".',
        [
            'Paul Fischer, the author of "A Kim Jong-Il Production" likens it with the work of Busby Berkeley, '
            'calling it "an extravagant musical ... with fantasy creatures, expensive costumes, and underwater '
            'scenes".'
        ],
        id="ellipsis-mid-sentence",
    ),
]


@pytest.mark.parametrize(("text", "expected"), REAL_PARAGRAPHS)
def test_real_wikipedia_paragraphs(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("   \n\t ", []),
        ("no final punctuation here", ["no final punctuation here"]),
        ("One. Two", ["One.", "Two"]),
        ("Really?! Yes.", ["Really?!", "Yes."]),
        ("What?! no way", ["What?! no way"]),
        ("It rose 3.5 percent. Then 4.25.", ["It rose 3.5 percent.", "Then 4.25."]),
        (
            "J. R. R. Tolkien wrote it. George W. Bush did not.",
            ["J. R. R. Tolkien wrote it.", "George W. Bush did not."],
        ),
        (
            "He lived in the U.S.A. for years. Then he left.",
            ["He lived in the U.S.A. for years.", "Then he left."],
        ),
        ("Wait... and then. Done... Next", ["Wait... and then.", "Done...", "Next"]),
        ('He said "Go." Then he left.', ['He said "Go."', "Then he left."]),
        ("It ended (in 1990.) Later it resumed.", ["It ended (in 1990.)", "Later it resumed."]),
        ("See Fig. 3 and pp. 12-14. Mr. Smith agreed.", ["See Fig. 3 and pp. 12-14.", "Mr. Smith agreed."]),
        ("Born in 1990. 2000 was next.", ["Born in 1990.", "2000 was next."]),
        ("1. The first rule. 2. The second rule.", ["1. The first rule.", "2. The second rule."]),
        ("Ends here.  \n  Next line starts.", ["Ends here.", "Next line starts."]),
        ("lowercase after period. then more", ["lowercase after period. then more"]),
    ],
)
def test_edge_cases(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_every_listed_abbreviation_holds_before_a_name() -> None:
    for abbreviation in ABBREVIATIONS:
        text = f"Seen near {abbreviation} Smith today. Next sentence."
        assert split_sentences(text) == [f"Seen near {abbreviation} Smith today.", "Next sentence."], (
            abbreviation
        )


def test_pieces_reassemble_to_the_input() -> None:
    text = "A first one. The U.S. Army came! Did it? Yes (it did). Final words"
    assert " ".join(split_sentences(text)) == text


def _shard_paragraphs(path: Path) -> list[str]:
    # Paragraph lines only: skip the <doc> wrapper lines, headings and other short lines.
    paragraphs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(("<doc ", "</doc>")) or len(line.split()) < 6:
            continue
        paragraphs.append(line.strip())
    return paragraphs


def test_whole_real_shard_statistics() -> None:
    shard = WIKI_TRAIN / "wiki_00"
    if not shard.is_file():
        pytest.skip(f"shared Wikipedia sample not found at {shard}")
    paragraphs = _shard_paragraphs(shard)
    started = time.perf_counter()
    sentences = [s for paragraph in paragraphs for s in split_sentences(paragraph)]
    elapsed = time.perf_counter() - started
    assert len(sentences) > len(paragraphs)
    mean_words = sum(len(s.split()) for s in sentences) / len(sentences)
    assert 10 <= mean_words <= 40, mean_words
    lowercase_share = sum(1 for s in sentences if s[0].islower()) / len(sentences)
    assert lowercase_share < 0.01, lowercase_share
    # No sentence may be lost or reordered: the pieces cover each paragraph's words.
    assert sum(len(s.split()) for s in sentences) == sum(len(p.split()) for p in paragraphs)
    # About 1 MB of text; the splitter runs at well over 10 MB/s, so this is a loose guard against a regression
    # to per-character Python loops.
    assert elapsed < 2.0, elapsed
    assert not any(re.fullmatch(r"(?:Dr|Mr|Mrs|St|Mt)\.", s) for s in sentences)
