"""The fitted classifier: the fast scoring path equals scikit-learn's, explanations name real words."""

from __future__ import annotations

import numpy as np
import pytest

from moderation import classifier, cues
from moderation.classifier import LABELS
from moderation.cues import cue_tokens, looks_like_gibberish
from moderation.data import load_own_corpus
from moderation.features import CommentText, prepare
from tests.conftest import TrainedModel

ODD = [
    CommentText(body=""),
    CommentText(body="   \n\t "),
    CommentText(body="Ｖｉａｇｒａ ⅽheap!!! 💊💊 www.pills.xyz", author="BUY N0W", url="http://pills.xyz"),
    CommentText(body="Ça fait mal au dos depuis des semaines, j'ai vu mon médecin."),
    CommentText(body="word " * 3000),
]


def test_fast_path_matches_predict_proba(trained_model: TrainedModel) -> None:
    model = trained_model.model
    comments = [e.comment for e in load_own_corpus()[:400]] + ODD
    expected = model.score_matrix(model.transform(comments))
    actual = model.probabilities(comments)
    for label in LABELS:
        np.testing.assert_allclose(actual[label], expected[label], rtol=0, atol=1e-5)


def test_fast_path_is_unchanged_when_the_word_cache_overflows(
    trained_model: TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = trained_model.model
    comments = [e.comment for e in load_own_corpus()[:50]]
    before = model.probabilities(comments)
    monkeypatch.setattr(classifier, "WORD_CACHE_SIZE", 10)
    after = model.probabilities(comments)
    # A batch mixing words the cache holds with new ones, once the cache is over its bound.
    mixed = model.probabilities([*comments[:5], CommentText(body="zebra quokka axolotl " * 3)])
    for label in LABELS:
        np.testing.assert_allclose(after[label], before[label], atol=1e-12)
        np.testing.assert_allclose(mixed[label][:5], before[label][:5], atol=1e-12)


def reference_explanation(model: classifier.ModerationModel, comment: CommentText) -> dict[str, dict[str, float]]:
    """Each word's log-odds contribution computed with scikit-learn's own transforms (slow, but plainly right)."""
    prepared = prepare(comment)
    row = model.vectorizer.transform([prepared]).toarray().ravel()
    words_hash, chars_hash = (p.named_steps["hash"] for _, p in model.vectorizer.transformer_list)
    words = sorted(set(classifier.WORD_RE.findall(prepared)))
    unigrams = words_hash.set_params(ngram_range=(1, 1)).transform(words).toarray()
    words_hash.set_params(ngram_range=(1, 2))
    membership = np.hstack([unigrams, chars_hash.transform(words).toarray()]) > 0
    result = {}
    for label in LABELS:
        per_word = membership @ (row * model._coefficients(label))
        merged: dict[str, float] = {}
        for word, weight in zip(words, per_word, strict=True):
            name = classifier._display_name(word)
            if weight > 0 and name:
                merged[name] = merged.get(name, 0.0) + float(weight)
        result[label] = merged
    return result


def test_explanations_match_the_reference_computation(trained_model: TrainedModel) -> None:
    model = trained_model.model
    for example in load_own_corpus()[:60:3]:
        explained = model.explain(example.comment, top=5)
        expected = reference_explanation(model, example.comment)
        for label in LABELS:
            for item in explained[label]:
                assert item["weight"] == pytest.approx(expected[label][item["feature"]], abs=2e-3)
            strongest = sorted(expected[label].values(), reverse=True)[: len(explained[label])]
            assert [item["weight"] for item in explained[label]] == pytest.approx(strongest, abs=2e-3)


def test_a_batch_is_scored_and_explained_as_each_comment_alone(trained_model: TrainedModel) -> None:
    """Workers decide waiting comments together; each must get what it would have got on its own."""
    model = trained_model.model
    comments = [e.comment for e in load_own_corpus()[:40:4]] + [CommentText(body="!!! ???"), CommentText(body="ok")]
    together = model.score_and_explain_many(comments)
    assert len(together) == len(comments)
    for comment, (scores, explained) in zip(comments, together, strict=True):
        alone_scores = model.score(comment)
        assert scores.spam == pytest.approx(alone_scores.spam) and scores.medical_advice == pytest.approx(
            alone_scores.medical_advice
        )
        assert explained == model.explain(comment)
    assert model.score_and_explain_many([]) == []


def test_explanations_name_words_of_the_comment(trained_model: TrainedModel) -> None:
    comment = CommentText(body="Stop the gabapentin and take 800mg ibuprofen every 6 hours, order cheap at pillz.xyz")
    explained = trained_model.model.explain(comment)
    assert set(explained) == set(LABELS)
    words = {item["feature"] for items in explained.values() for item in items}
    assert words and all(item["weight"] > 0 for items in explained.values() for item in items)
    vocabulary = (
        set(comment.body.lower().replace(",", " ").split())
        | set(classifier.MARKER_NAMES.values())
        | {name for _, name in classifier.MARKER_PREFIXES}
    )
    assert words <= vocabulary | {"800mg", "6", "pillz", "xyz"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Take 800mg ibuprofen every 6 hours.", {"zzdirmed"}),
        ("That's sciatica, not a muscle.", {"zzdiag"}),
        ("Please see your GP about it.", {"zzrefer"}),
        ("My GP put me on naproxen 500mg and it helped.", {"zznarrmed"}),
        ("Is 600mg of ibuprofen too much?", {"zzqmed"}),
        ("@Tom skip the physio", {"zzreply", "zzdirmed"}),
        ("Yo que tú dejaría el tramadol.", {"zzdirmed"}),
        ("Skip the follow-up. They'll only tell you what you know.", {"zzdirmed"}),
        ("@Ruth you can absolutely stay on the diclofenac long term", {"zzreply", "zzdirmed"}),
        ("What your wife has is SI joint dysfunction, not sciatica.", {"zzdiag"}),
        ("I wouldn't go to A&E for that. Stay home and lie flat.", {"zzdirmed"}),
        ("Est-ce qu'on peut prendre de l'ibuprofène ?", {"zzqmed"}),
        ("Cat cow fifty times a day. That's the cure.", {"zzcure"}),
        ("great video! check out my channel and subscribe", {"zzpromo"}),
        ("He's on telegram @JamesFX, message him", {"zzcontact"}),
    ],
)
def test_cues(text: str, expected: set[str]) -> None:
    assert expected <= set(cue_tokens(text))


@pytest.mark.parametrize(
    ("text", "absent"),
    [
        ("I took 800mg ibuprofen every 6 hours for a week.", "zzdirmed"),  # a story, not a directive
        ("Should I take ibuprofen or paracetamol?", "zzdirmed"),  # a question
        ("My GP said it's probably a muscle strain.", "zzrefer"),
        ("I subscribed to the newsletter, thanks", "zzcontact"),
        ("The physio gave me exercises, I do them daily.", "zzdiag"),
    ],
)
def test_cues_absent(text: str, absent: str) -> None:
    assert absent not in cue_tokens(text)


def test_phrase_index_matches_words_prefixes_and_any_word() -> None:
    index = cues.PhraseIndex.of(["take it", "physio*", "vitamin *", "setz* * ab"])
    assert index.found_in(cues.words_of("Just take it easy"))
    assert index.found_in(cues.words_of("my physiotherapist"))
    assert index.found_in(cues.words_of("try vitamin D"))
    assert index.found_in(cues.words_of("Setz es ab, sofort"))
    assert not index.found_in(cues.words_of("take care, vitamin"))  # a phrase needs all its words
    assert index.positions(cues.words_of("take it or take it")) == [(0, 2), (3, 5)]


def test_ordinary_text_is_not_gibberish() -> None:
    ordinary = [e.comment.body for e in load_own_corpus() if not e.spam and not e.medical_advice]
    flagged = [body for body in ordinary if looks_like_gibberish(body)]
    assert len(flagged) / len(ordinary) < 0.02, flagged[:10]
