"""Small GLUE files in the layout of ``download_glue_data.py`` for the four tasks ../shared/data/glue lacks
(MNLI, QQP, QNLI, WNLI): the real headers and column orders, rows modelled on the real files (typed from
memory of them, not copied; the parse-tree columns are stand-ins), and the quirks the readers must survive:
MNLI's 12-column train and 16-column dev layouts with genre and parse trees, an unbalanced double quote (the
files are unquoted TSV: a csv reader with default quoting would swallow the following lines), QQP's
id/qid1/qid2 columns and a train row whose fields are cut short. QNLI is written with CRLF line ends, which
the real files do not have, to check that the reader does not care."""

from __future__ import annotations

from pathlib import Path

MNLI_TRAIN_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                     "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")
MNLI_DEV_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                   "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\t"
                   "label5\tgold_label")


def _parse(sentence: str) -> tuple[str, str]:
    """Stand-ins for the binary and full parse columns: bracketed, as in the real files."""
    words = sentence.rstrip(".").split()
    return "( " + " ".join(words) + " )", "(ROOT (S " + " ".join(f"(NN {w})" for w in words) + " (. .)))"


def _mnli_row(index: int, genre: str, premise: str, hypothesis: str, labels: list[str]) -> str:
    b1, p1 = _parse(premise)
    b2, p2 = _parse(hypothesis)
    pair = f"{31193 + index}{labels[-1][0]}"
    return "\t".join([str(index), str(31193 + index), pair, genre, b1, b2, p1, p2, premise, hypothesis, *labels])


MNLI_TRAIN = [
    ("government", "Conceptually cream skimming has two basic dimensions - product and geography.",
     "Product and geography are what make cream skimming work. ", ["neutral", "neutral"]),
    ("telephone", "you know during the season and i guess at at your level uh you lose them to the next level",
     "You lose the things to the following level if the people recall.", ["entailment", "entailment"]),
    ("fiction", '"One of our number will carry out your instructions minutely.',  # unbalanced quote
     "A member of my team will execute your orders with immense precision.", ["entailment", "entailment"]),
    ("fiction", "How do you know? All this is their information again.",
     "This information belongs to them.", ["entailment", "entailment"]),
    ("telephone", "yeah i tell you what though if you go price some of those tennis shoes",
     "The tennis shoes have a range of prices.", ["neutral", "neutral"]),
    ("travel", "my walkman broke so i'm upset now i just have to turn the stereo up real loud",
     "I'm upset that my walkman broke and now I have to turn the stereo up really loud.",
     ["entailment", "entailment"]),
    ("slate", "But a few Christian mosaics survive above the apse is the Virgin with the infant Jesus.",
     "Most of the Christian mosaics were destroyed by Muslims.", ["neutral", "neutral"]),
    ("government", "(Read for Slate 's take on Jackson's findings.)",
     "Slate had an opinion on Jackson's findings.", ["entailment", "entailment"]),
    ("travel", "Gays and lesbians.", "Heterosexuals.", ["contradiction", "contradiction"]),
]
MNLI_DEV_MATCHED = [
    ("government", "The new rights are nice enough", "Everyone really likes the newest benefits ",
     ["entailment", "neutral", "neutral", "neutral", "neutral", "neutral"]),  # label1 is not the gold label
    ("telephone", "This site includes a list of all award winners and a searchable database.",
     "The Government Executive articles housed on the website are not able to be searched.",
     ["contradiction", "contradiction", "contradiction", "contradiction", "contradiction", "contradiction"]),
    ("fiction", 'uh i don\'t know i i have mixed emotions about him "uh sometimes i like him',
     "I like him for the most part, but would still enjoy seeing someone beat him.",
     ["entailment", "neutral", "neutral", "entailment", "entailment", "entailment"]),
]
MNLI_DEV_MISMATCHED = [
    ("letters", "Your contribution helped make it possible for us to provide our students with a quality education.",
     "Your contributions were of no help with our students' education.",
     ["contradiction", "contradiction", "contradiction", "contradiction", "contradiction", "contradiction"]),
    ("verbatim", "The answer has nothing to do with their cause, however, but with the simple fact of dictionary order.",
     "the answer has nothing to do with the cause",
     ["entailment", "entailment", "entailment", "entailment", "entailment", "entailment"]),
]

QQP_HEADER = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"
QQP_TRAIN = [
    "133273\t213221\t213222\tHow is the life of a math student? Could you describe your own experiences?\t"
    "Which level of prepration is enough for the exam jlpt5?\t0",
    "402555\t536040\t536041\tHow do I control my horny emotions?\tHow do you control your horniness?\t1",
    "360472\t364011\t490273\tWhat causes stool color to change to yellow?\tWhat can cause stool to come out as "
    "little balls?\t0",
    "150662\t155721\t7256\tWhat can one do after MBBS?\tWhat do i do after my MBBS ?\t1",
    "105780\t174363\t174364\tHow can I develop android app?",  # fields missing: skipped, as the baselines do
    '183004\t279958\t279959\tWhat is the "best" way to learn French?\tHow can I learn French fast?\t1',
]
QQP_DEV = [
    "201359\t303345\t303346\tWhy are African-Americans so beautiful?\tWhy are hispanics so beautiful?\t0",
    "263843\t69383\t380476\tI want to pursue PhD in Computer Science about social network,what is the open "
    "problem in social networks?\tI handle social media for a non-profit. Should I start going to social media "
    "networking events? Are there any good ones in the bay area?\t0",
    "172974\t266948\t175089\tIs there a reason why we should travel alone?\tWhat are some reasons to travel "
    "alone?\t1",
]

QNLI_HEADER = "index\tquestion\tsentence\tlabel"
QNLI_TRAIN = [
    "0\tWhen did the third Digimon series begin?\tUnlike the two seasons before it and most of the seasons that "
    "followed, Digimon Tamers takes a darker and more realistic approach to its story featuring Digimon who do "
    "not reincarnate after their deaths and more complex character development in the original Japanese.\t"
    "not_entailment",
    "1\tWhich missile batteries often have individual launchers several kilometres from one another?\tWhen MANPADS "
    "is operated by specialists, batteries may have several dozen teams deploying separately in small sections; "
    "self-propelled air defence guns may deploy in pairs.\tnot_entailment",
    "2\tWhat two things does Popper argue Tarski's theory involves in an evaluation of truth?\tHe bases this "
    "interpretation on the fact that examples such as the one described above refer to two things: assertions "
    "and the facts to which they refer.\tentailment",
]
QNLI_DEV = [
    "0\tWhat came into force after the new constitution was herald?\tAs of that day, the new constitution "
    "heralding the Second Republic came into force.\tentailment",
    "1\tWhat is the first major city in the stream of the Rhine?\tThe most important tributaries in this area "
    "are the Ill below of Strasbourg, the Neckar in Mannheim and the Main across from Mainz.\tnot_entailment",
]

WNLI_HEADER = "index\tsentence1\tsentence2\tlabel"
WNLI_TRAIN = [
    "0\tI stuck a pin through a carrot. When I pulled the pin out, it had a hole.\tThe carrot had a hole.\t1",
    "1\tJohn couldn't see the stage with Billy in front of him because he is so short.\tJohn is so short.\t1",
    "2\tThe police arrested all of the gang members. They were trying to stop the drug trade in the "
    "neighborhood.\tThe police were trying to stop the drug trade in the neighborhood.\t1",
    "3\tSteve follows Fred's example in everything. He influences him hugely.\tSteve influences him hugely.\t0",
]
WNLI_DEV = [
    "0\tThe drain is clogged with hair. It has to be cleaned.\tThe hair has to be cleaned.\t0",
    "1\tJane knocked on Susan's door but she did not answer.\tSusan did not answer.\t1",
]


def _write(path: Path, header: str, rows: list[str], newline: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(newline.join([header, *rows, ""]).encode("utf-8"))


def write_glue_fixtures(root: Path) -> Path:
    """MNLI/, QQP/, QNLI/, WNLI/ under ``root`` (a ``glue_dir``); returns ``root``."""
    _write(root / "MNLI" / "train.tsv", MNLI_TRAIN_HEADER, [_mnli_row(i, *r) for i, r in enumerate(MNLI_TRAIN)])
    _write(root / "MNLI" / "dev_matched.tsv", MNLI_DEV_HEADER,
           [_mnli_row(i, *r) for i, r in enumerate(MNLI_DEV_MATCHED)])
    _write(root / "MNLI" / "dev_mismatched.tsv", MNLI_DEV_HEADER,
           [_mnli_row(i, *r) for i, r in enumerate(MNLI_DEV_MISMATCHED)])
    _write(root / "QQP" / "train.tsv", QQP_HEADER, QQP_TRAIN)
    _write(root / "QQP" / "dev.tsv", QQP_HEADER, QQP_DEV)
    _write(root / "QNLI" / "train.tsv", QNLI_HEADER, QNLI_TRAIN, newline="\r\n")
    _write(root / "QNLI" / "dev.tsv", QNLI_HEADER, QNLI_DEV, newline="\r\n")
    _write(root / "WNLI" / "train.tsv", WNLI_HEADER, WNLI_TRAIN)
    _write(root / "WNLI" / "dev.tsv", WNLI_HEADER, WNLI_DEV)
    return root
