"""Loaders for the public sets' formats (against the local copies) and the project's own corpus."""

from __future__ import annotations

import json
import re
import tomllib
from collections import Counter
from difflib import SequenceMatcher
from pathlib import Path

import pytest

from moderation.data import (
    CORPUS_DIR,
    TEST,
    TRAIN,
    TRAINING_ONLY,
    TRAINING_ONLY_SOURCE,
    DataError,
    Example,
    collect_examples,
    corpus_files,
    fingerprint,
    load_advice_reddit,
    load_health_advice,
    load_medquad,
    load_own_corpus,
    load_public,
    load_sms_spam,
    load_youtube_spam,
    read_labeled_jsonl,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
YOUTUBE_HEADER = "COMMENT_ID,AUTHOR,DATE,CONTENT,CLASS\n"
REDDIT_HEADER = "ID\tMajority_label\tDS_Label\tSentence\n"

needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"the public data sets are not at {SHARED_DATA}"
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- the public sets, as shipped -----------------------------------------------------------------


@pytest.fixture(scope="module")
def youtube() -> list[Example]:
    return load_youtube_spam(SHARED_DATA)


@needs_shared_data
def test_youtube_holds_out_one_whole_video(youtube: list[Example]) -> None:
    splits = {(e.source, e.split) for e in youtube}
    assert splits == {
        ("youtube:Psy", TRAIN),
        ("youtube:KatyPerry", TRAIN),
        ("youtube:LMFAO", TRAIN),
        ("youtube:Eminem", TEST),
    }


@needs_shared_data
def test_youtube_labels_and_text(youtube: list[Example]) -> None:
    assert Counter(e.spam for e in youtube).keys() == {True, False}
    assert all(e.medical_advice is False for e in youtube)
    assert not any("\ufeff" in e.comment.body or "<br />" in e.comment.body for e in youtube)
    assert all(e.comment.body == e.comment.body.strip() and e.comment.body for e in youtube)
    # The set has about 1,700 unique texts among 1,956 rows; every text is kept once.
    keys = [fingerprint(e.comment.body) for e in youtube]
    assert len(keys) == len(set(keys)) > 1300


@needs_shared_data
def test_youtube_can_hold_out_another_video() -> None:
    held_out = {e.source for e in load_youtube_spam(SHARED_DATA, held_out_video="Psy") if e.split == TEST}
    assert held_out == {"youtube:Psy"}


@needs_shared_data
def test_sms_has_both_labels_and_a_hashed_test_split() -> None:
    sms = load_sms_spam(SHARED_DATA)
    assert Counter(e.spam for e in sms).keys() == {True, False}
    assert all(e.medical_advice is None and e.source == "sms" for e in sms)
    test_share = sum(e.split == TEST for e in sms) / len(sms)
    assert 0.15 < test_share < 0.25
    assert {e.split for e in sms} == {TRAIN, TEST}
    assert len({fingerprint(e.comment.body) for e in sms}) == len(sms)


@needs_shared_data
def test_reddit_keeps_each_forums_train_dev_test() -> None:
    reddit = load_advice_reddit(SHARED_DATA)
    assert {(e.source, e.split) for e in reddit} == {
        (f"reddit:{forum}", split) for forum in ("askparents", "needadvice") for split in ("train", "dev", "test")
    }
    assert all(e.spam is False for e in reddit)
    assert {e.medical_advice for e in reddit} == {False, None}  # medical advice is never vouched for
    assert not any(" ." in e.comment.body[-3:] or " ," in e.comment.body for e in reddit)


@needs_shared_data
def test_health_advice_drops_weak_advice_from_the_advice_label() -> None:
    health = load_health_advice(SHARED_DATA)
    assert {e.medical_advice for e in health} == {True, False, None}
    assert all(e.spam is False for e in health)
    assert {e.source for e in health} == {
        "health_advice:discussion",
        "health_advice:structured_abstract",
        "health_advice:unstructured_abstract",
    }


@needs_shared_data
def test_medquad_pieces_are_comment_sized_and_unlabeled_for_advice() -> None:
    medquad = load_medquad(SHARED_DATA)
    assert medquad
    assert all(40 < len(e.comment.body) <= 600 for e in medquad)
    assert all(e.spam is False and e.medical_advice is None for e in medquad)


@needs_shared_data
def test_load_public_finds_every_set() -> None:
    assert set(load_public(SHARED_DATA)) == {"youtube_spam", "sms_spam", "advice_reddit", "health_advice", "medquad"}


# --- small files in each format ------------------------------------------------------------------


def test_youtube_format_details(tmp_path: Path) -> None:
    write(
        tmp_path / "youtube_spam" / "Youtube01-Psy.csv",
        "\ufeff" + YOUTUBE_HEADER + 'a1,Ann,,"Check my channel<br />now\ufeff",1\na2,Bob,,Nice song,0\na3,Cy,,   ,1\n',
    )
    write(
        tmp_path / "youtube_spam" / "Youtube04-Eminem.csv",
        YOUTUBE_HEADER + "b1,Dee,,NICE   song,0\nb2,Eve,,Love it,0\n",
    )
    loaded = load_youtube_spam(tmp_path)
    assert [(e.comment.body, e.comment.author, e.spam, e.split) for e in loaded] == [
        ("Check my channel\nnow", "Ann", True, TRAIN),
        ("Nice song", "Bob", False, TRAIN),
        ("Love it", "Eve", False, TEST),  # "NICE   song" repeats a training text: dropped, no leak
    ]


def test_reddit_replies_are_rebuilt_in_sentence_order(tmp_path: Path) -> None:
    write(
        tmp_path / "advice_reddit" / "askparents_dev.tsv",
        REDDIT_HEADER + "p1-r1-2\t0\t0\tIt does n't matter .\n"
        "p1-r1-1\t1\t1\tAsk your doctor about the fever , seriously .\n"
        "p1-r2-1\t1\t1\tLet them sleep in .\n"
        "p2-r1-1\t0\t0\tMy doctor was nice .\n",
    )
    loaded = {e.comment.body: e for e in load_advice_reddit(tmp_path)}
    assert set(loaded) == {
        "Ask your doctor about the fever, seriously. It doesn't matter.",
        "Let them sleep in.",
        "My doctor was nice.",
    }
    assert {e.split for e in loaded.values()} == {"dev"}
    assert {e.source for e in loaded.values()} == {"reddit:askparents"}
    # Advice that mentions health is left unlabeled; other advice and medical chat are not medical advice.
    assert loaded["Ask your doctor about the fever, seriously. It doesn't matter."].medical_advice is None
    assert loaded["Let them sleep in."].medical_advice is False
    assert loaded["My doctor was nice."].medical_advice is False


def test_health_advice_label_mapping(tmp_path: Path) -> None:
    write(
        tmp_path / "health_advice" / "annotations_discussion.csv",
        "label,pmid,sentence\n0,1,Rates rose.\n1,2,It may help.\n2,3,Clinicians should screen early.\n",
    )
    loaded = {e.comment.body: e.medical_advice for e in load_health_advice(tmp_path)}
    assert loaded == {"Rates rose.": False, "It may help.": None, "Clinicians should screen early.": True}


def test_sms_format(tmp_path: Path) -> None:
    write(tmp_path / "sms_spam" / "SMSSpamCollection.tsv", "ham\tsee you at 6\nspam\tWIN a prize\nham\tsee  YOU at 6\n")
    loaded = load_sms_spam(tmp_path)
    assert [(e.comment.body, e.spam) for e in loaded] == [("see you at 6", False), ("WIN a prize", True)]


def test_missing_sets_load_as_nothing(tmp_path: Path) -> None:
    assert load_sms_spam(tmp_path) == []
    assert load_youtube_spam(tmp_path) == []
    assert load_public(tmp_path) == {}
    with pytest.raises(DataError, match="does not exist"):
        collect_examples(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("relative", "content", "loader", "message"),
    [
        ("youtube_spam/Youtube01-Psy.csv", "COMMENT_ID,AUTHOR,CONTENT\nx,a,hi\n", load_youtube_spam, "CLASS"),
        ("sms_spam/SMSSpamCollection.tsv", "ham\tfine\nmaybe\tunsure\n", load_sms_spam, ":2: label"),
        ("sms_spam/SMSSpamCollection.tsv", "no tab on this line\n", load_sms_spam, ":1: label"),
        ("advice_reddit/askparents_train.tsv", REDDIT_HEADER + "p1-r1\t0\t0\tHi .\n", load_advice_reddit, "p1-r1"),
        ("advice_reddit/askparents_train.tsv", REDDIT_HEADER + "p1-r1-x\t0\t0\tHi .\n", load_advice_reddit, "p1-r1-x"),
        ("advice_reddit/needadvice_test.tsv", "ID\tDS_Label\np1-r1-1\t1\n", load_advice_reddit, "Sentence"),
        ("health_advice/annotations_x.csv", "label,pmid,sentence\n3,1,Odd.\n", load_health_advice, "'3'"),
        ("health_advice/annotations_x.csv", "label,pmid,text\n0,1,Odd.\n", load_health_advice, "sentence"),
        ("medquad/medquad_x.csv", "question,focus\nwhat?,x\n", load_medquad, "answer"),
    ],
    ids=[
        "youtube-no-class",
        "sms-bad-label",
        "sms-no-tab",
        "reddit-short-id",
        "reddit-bad-sentence-number",
        "reddit-no-sentence",
        "health-bad-label",
        "health-no-sentence",
        "medquad-no-answer",
    ],
)
def test_malformed_public_files_raise_data_error_naming_the_file(
    tmp_path: Path, relative: str, content: str, loader: object, message: str
) -> None:
    path = write(tmp_path / relative, content)
    with pytest.raises(DataError) as raised:
        loader(tmp_path)  # type: ignore[operator]
    assert str(path) in str(raised.value)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("relative", "content", "loader"),
    [
        ("youtube_spam/Youtube01-Psy.csv", YOUTUBE_HEADER + "x,a,,buy now,spam\n", load_youtube_spam),
        ("advice_reddit/askparents_train.tsv", REDDIT_HEADER + "p1-r1-1\t1\tyes\tTake it .\n", load_advice_reddit),
    ],
    ids=["youtube-class-word", "reddit-label-word"],
)
def test_unknown_label_values_raise_data_error(tmp_path: Path, relative: str, content: str, loader: object) -> None:
    path = write(tmp_path / relative, content)
    with pytest.raises(DataError, match=str(path)):
        loader(tmp_path)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("relative", "content", "loader"),
    [
        ("youtube_spam/Youtube01-Psy.csv", YOUTUBE_HEADER.encode() + b"x,a,,caf\xe9,0\n", load_youtube_spam),
        ("corpus/latin1.jsonl", b'{"body": "caf\xe9", "spam": false, "medical_advice": false}\n', None),
    ],
    ids=["youtube-latin1", "jsonl-latin1"],
)
def test_files_that_are_not_utf8_raise_data_error(
    tmp_path: Path, relative: str, content: bytes, loader: object
) -> None:
    path = tmp_path / relative
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(DataError, match=str(path)):
        if loader is None:
            read_labeled_jsonl(path, "own")
        else:
            loader(tmp_path)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not JSON"),
        ('["a list"]', "JSON object"),
        ('{"body": "  ", "spam": false, "medical_advice": false}', "'body'"),
        ('{"spam": false, "medical_advice": false}', "'body'"),
        ('{"body": "hi", "spam": "yes", "medical_advice": false}', "'spam'"),
        ('{"body": "hi", "spam": false, "medical_advice": 1}', "'medical_advice'"),
        ('{"body": "buy \\ud800 now", "spam": true}', "'body' must be valid Unicode"),
        ('{"body": "a\\u0000b", "spam": true}', "'body' must not contain NUL"),
        ('{"body": "hi", "spam": false, "url": 5}', "'url' must be a string"),
        ('{"body": "hi", "spam": false, "author": ["Jan"]}', "'author' must be a string"),
        ('{"body": "hi", "spam": false, "email": "jan\\udfff@example.org"}', "'email' must be valid Unicode"),
        ('{"body": "hi", "spam": false, "lang": 5}', "'lang' must be a string"),
        ('{"body": "hi", "spam": false, "tags": "reply"}', "'tags' must be a list of strings"),
    ],
    ids=[
        "not-json",
        "not-object",
        "blank-body",
        "no-body",
        "string-label",
        "int-label",
        "lone-surrogate",
        "nul",
        "number-url",
        "list-author",
        "surrogate-email",
        "number-lang",
        "string-tags",
    ],
)
def test_malformed_jsonl_raises_data_error_with_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    good = '{"body": "fine", "spam": false, "medical_advice": false}'
    path = write(tmp_path / "own.jsonl", f"{good}\n\n{line}\n")
    with pytest.raises(DataError, match=message) as raised:
        read_labeled_jsonl(path, "own")
    assert f"{path}:3:" in str(raised.value)


def test_jsonl_saved_with_a_byte_order_mark_reads_as_without(tmp_path: Path) -> None:
    """Windows tools save UTF-8 with one; `moderation classify` takes such a file, so `evaluate --data` must."""
    path = tmp_path / "labeled.jsonl"
    path.write_bytes("\ufeff".encode() + b'{"body": "a", "spam": true}\n{"body": "b", "spam": false}\n')
    assert [(e.comment.body, e.spam) for e in read_labeled_jsonl(path, "own")] == [("a", True), ("b", False)]


def test_jsonl_absent_labels_are_unknown_and_split_comes_from_the_row(tmp_path: Path) -> None:
    path = write(
        tmp_path / "x.jsonl",
        '{"body": "a", "spam": true, "split": "train", "lang": "de", "url": "http://x.de"}\n'
        '{"body": "b", "medical_advice": true}\n',
    )
    first, second = read_labeled_jsonl(path, "moderator")
    assert (first.spam, first.medical_advice, first.split, first.lang, first.comment.url) == (
        True,
        None,
        TRAIN,
        "de",
        "http://x.de",
    )
    assert (second.spam, second.medical_advice, second.split, second.lang) == (None, True, TEST, "en")


# --- the project's own corpus --------------------------------------------------------------------


@pytest.fixture(scope="module")
def own() -> list[Example]:
    return load_own_corpus()


def test_own_corpus_is_large_and_fully_labeled(own: list[Example]) -> None:
    assert len(own) >= 1500
    assert all(isinstance(e.spam, bool) and isinstance(e.medical_advice, bool) for e in own)
    combos = Counter((e.spam, e.medical_advice) for e in own)
    assert set(combos) == {(False, False), (True, False), (False, True), (True, True)}


def test_own_corpus_bodies_are_distinct(own: list[Example]) -> None:
    repeated = [body for body, n in Counter(fingerprint(e.comment.body) for e in own).items() if n > 1]
    assert repeated == []


def test_own_corpus_is_about_eight_percent_other_languages(own: list[Example]) -> None:
    # The mix is the one of the comments a site gets (those the held-out quarter is drawn from); the
    # training-only files add comments of the kinds the models missed, languages among them.
    representative = [e for path in sorted(CORPUS_DIR.glob("*.jsonl")) for e in read_labeled_jsonl(path, "own")]
    other = [e for e in representative if e.lang != "en"]
    assert 0.05 <= len(other) / len(representative) <= 0.15
    assert all(len(e.lang) == 2 and e.lang.islower() for e in own if e.lang != "en")


def test_author_websites_are_not_a_spam_marker_in_the_own_corpus(own: list[Example]) -> None:
    """Readers fill in the website field too: with websites on spam alone, a model learns "website: spam"."""
    substantive = [e for e in own if not e.spam and len(e.comment.body.split()) >= 12]
    with_site = [e for e in substantive if e.comment.url]
    assert 0.05 <= len(with_site) / len(substantive) <= 0.2
    assert {e.split for e in with_site} == {TRAIN, TEST}  # the held-out quarter measures it too


def test_own_corpus_split_holds_out_about_a_quarter_by_text(own: list[Example]) -> None:
    assert 0.18 <= sum(e.split == TEST for e in own) / len(own) <= 0.32
    assert [e.split for e in load_own_corpus()] == [e.split for e in own]


def test_training_only_comments_are_never_held_out(tmp_path: Path) -> None:
    lines = [
        json.dumps({"body": f"comment number {n}", "spam": False, "medical_advice": n % 2 == 0}) for n in range(60)
    ]
    (tmp_path / "main.jsonl").write_text("\n".join(lines[:30]), encoding="utf-8")
    (tmp_path / TRAINING_ONLY).mkdir()
    (tmp_path / TRAINING_ONLY / "extra.jsonl").write_text("\n".join(lines[30:]), encoding="utf-8")
    examples = load_own_corpus(tmp_path, test_percent=50)
    assert len(examples) == 60
    assert {e.split for e in examples[:30]} == {TRAIN, TEST}  # hashed as usual
    assert {e.split for e in examples[30:]} == {TRAIN}
    assert {e.source for e in examples[30:]} == {TRAINING_ONLY_SOURCE} and {e.source for e in examples[:30]} == {"own"}


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _with_a_close_rewrite(comments: list[str], among: list[str], ratio: float) -> list[str]:
    """Those of ``comments`` (7 words or more) with a rewrite among ``among``: word sequences at least
    ``ratio`` alike. Candidates share three words in a row."""
    others = [_words(text) for text in among]
    by_phrase: dict[tuple[str, ...], set[int]] = {}
    for number, words in enumerate(others):
        for start in range(len(words) - 2):
            by_phrase.setdefault(tuple(words[start : start + 3]), set()).add(number)
    close = []
    for text in comments:
        words = _words(text)
        if len(words) < 7:
            continue  # "Merci pour l'article, très clair.": short thanks are alike by nature
        candidates = set().union(*(by_phrase.get(tuple(words[i : i + 3]), set()) for i in range(len(words) - 2)))
        if any(SequenceMatcher(None, words, others[n]).ratio() >= ratio for n in candidates):
            close.append(text)
    return close


def test_no_training_only_comment_is_a_rewrite_of_a_held_out_one(own: list[Example]) -> None:
    """Training on a close rewrite of a held-out comment would flatter the held-out numbers; the closest
    pairs kept are generic phrasing (about 0.4)."""
    training_only = [e.comment.body for e in own if e.source == TRAINING_ONLY_SOURCE]
    held_out = [e.comment.body for e in own if e.split == TEST]
    assert _with_a_close_rewrite(training_only, held_out, ratio=0.42) == []


def test_few_held_out_comments_have_a_close_rewrite_on_the_training_side(own: list[Example]) -> None:
    """The split is by a hash of each text, so a rewrite of a comment can land on the other side: kept rare
    (10 when written: docs/models.md's figure), so that the held-out numbers are not flattered."""
    held_out = [e.comment.body for e in own if e.split == TEST]
    training = [e.comment.body for e in own if e.split != TEST]
    assert len(_with_a_close_rewrite(held_out, training, ratio=0.6)) <= len(held_out) // 100


EVALSETS = sorted((CORPUS_DIR.parent / "evalsets").glob("*.jsonl"))


def test_the_evaluation_sets_are_there() -> None:
    expected = {"unseen.jsonl", "new_voices.jsonl", "care_can_wait.jsonl", "pitches.jsonl"}
    assert {path.name for path in EVALSETS} >= expected


@pytest.mark.parametrize("path", EVALSETS, ids=lambda p: p.name)
def test_evaluation_sets_are_labeled_and_apart_from_the_corpus(path: Path, own: list[Example]) -> None:
    """The evaluation sets were written apart from the corpus and are never trained on: a comment of theirs
    in the corpus, even with other punctuation or case, or a close rewrite of one, would flatter what they
    say about comments never seen."""
    evaluation = read_labeled_jsonl(path, "file")
    assert all(isinstance(e.spam, bool) and isinstance(e.medical_advice, bool) for e in evaluation)
    assert len({fingerprint(e.comment.body) for e in evaluation}) == len(evaluation)
    words_of_the_corpus = {" ".join(_words(e.comment.body)) for e in own}
    assert [e.comment.body for e in evaluation if " ".join(_words(e.comment.body)) in words_of_the_corpus] == []
    bodies = [e.comment.body for e in evaluation]
    assert _with_a_close_rewrite(bodies, [e.comment.body for e in own], ratio=0.6) == []


def test_every_corpus_file_is_installed_with_the_package() -> None:
    """A training file the wheel leaves out (the Docker image installs it) would be missing from every
    model trained there, silently."""
    package = CORPUS_DIR.parent
    pyproject = tomllib.loads((package.parent / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["moderation"]
    installed = {path for pattern in patterns for path in package.glob(pattern)}  # as setuptools expands them
    assert corpus_files() and [path for path in corpus_files() if path not in installed] == []


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_every_corpus_file_parses(path: Path) -> None:
    examples = read_labeled_jsonl(path, "own")
    assert examples
    with path.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    assert all(isinstance(row["spam"], bool) and isinstance(row["medical_advice"], bool) for row in rows)
