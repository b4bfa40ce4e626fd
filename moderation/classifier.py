"""The two calibrated text classifiers (spam, medical advice) over one shared feature space."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from moderation.features import CommentText, prepare, prepare_many

LABELS = ("spam", "medical_advice")

MARKER_NAMES = {
    "zzurl": "link",
    "zzemail": "e-mail address",
    "zzphone": "phone number",
    "zzmoney": "money",
    "zzdose": "dose",
    "zzfrequency": "dosing schedule",
    "zzauthorurl": "author website",
    "zzauthordigits": "digits in author name",
    "zzauthornonascii": "unusual author name",
}
MARKER_PREFIXES = (
    ("zzdomain", "linked domain"),
    ("zzauthortld", "author website"),
    ("zztld", "link domain ending"),
    ("zzlinks", "number of links"),
)
TOKEN_PATTERN = r"(?u)\b\w+\b"  # noqa: S105 - a regex, not a password
WORD_RE = re.compile(TOKEN_PATTERN)
WORD_FEATURES = 2**19
CHAR_FEATURES = 2**19


@dataclass(frozen=True, slots=True)
class Scores:
    spam: float
    medical_advice: float

    def as_dict(self) -> dict[str, float]:
        return {"spam": round(self.spam, 4), "medical_advice": round(self.medical_advice, 4)}


def build_vectorizer() -> FeatureUnion:
    """Hashed word 1-2-grams and character 2-5-grams within words, TF-IDF weighted.

    Hashing keeps no vocabulary, so the saved model stays small and quick to load, and unseen
    obfuscations still land on the character n-grams they share with known words.
    """
    return FeatureUnion(
        [
            (
                "words",
                Pipeline(
                    [
                        (
                            "hash",
                            HashingVectorizer(
                                analyzer="word",
                                ngram_range=(1, 2),
                                token_pattern=TOKEN_PATTERN,
                                n_features=WORD_FEATURES,
                                alternate_sign=False,
                                norm=None,
                                dtype=np.float32,
                            ),
                        ),
                        ("tfidf", TfidfTransformer(sublinear_tf=True)),
                    ]
                ),
            ),
            (
                "chars",
                Pipeline(
                    [
                        (
                            "hash",
                            HashingVectorizer(
                                analyzer="char_wb",
                                ngram_range=(2, 5),
                                n_features=CHAR_FEATURES,
                                alternate_sign=False,
                                norm=None,
                                dtype=np.float32,
                            ),
                        ),
                        ("tfidf", TfidfTransformer(sublinear_tf=True)),
                    ]
                ),
            ),
        ]
    )


def build_classifier(random_state: int = 0) -> CalibratedClassifierCV:
    # ensemble=False: one logistic regression on all data, calibrated on cross-validated scores;
    # a single linear model keeps scoring fast and its weights explainable.
    return CalibratedClassifierCV(
        LogisticRegression(C=8.0, max_iter=3000, class_weight="balanced", random_state=random_state),
        method="sigmoid",
        cv=5,
        ensemble=False,
    )


@dataclass
class ModerationModel:
    """A fitted vectorizer and one calibrated classifier per label, with the model card."""

    vectorizer: FeatureUnion
    classifiers: dict[str, CalibratedClassifierCV]
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return str(self.card.get("version", "unversioned"))

    def transform(self, comments: Sequence[CommentText]) -> sparse.csr_matrix:
        return self.vectorizer.transform(prepare_many(comments))

    def score_matrix(self, features: sparse.csr_matrix) -> dict[str, np.ndarray]:
        return {label: self.classifiers[label].predict_proba(features)[:, 1] for label in LABELS}

    def score_many(self, comments: Sequence[CommentText]) -> list[Scores]:
        if not comments:
            return []
        probabilities = self.score_matrix(self.transform(comments))
        return [
            Scores(spam=float(s), medical_advice=float(a))
            for s, a in zip(probabilities["spam"], probabilities["medical_advice"], strict=True)
        ]

    def score(self, comment: CommentText) -> Scores:
        return self.score_many([comment])[0]

    def explain(self, comment: CommentText, top: int = 5) -> dict[str, list[dict[str, Any]]]:
        """The words and signals that pushed each score up most, with their weight in log-odds.

        A word is credited with its own unigram and the character n-grams inside it (which never cross
        a word boundary), found by hashing the word the way the vectorizer does.
        """
        prepared = prepare(comment)
        row = self.vectorizer.transform([prepared]).tocsr()
        words = sorted(set(WORD_RE.findall(prepared)))
        if not words:
            return {label: [] for label in LABELS}
        membership = self._word_features(words)
        return {label: self._top_words(row, words, membership, label, top) for label in LABELS}

    def _word_features(self, words: list[str]) -> sparse.csr_matrix:
        words_hash = self.vectorizer.transformer_list[0][1].named_steps["hash"]
        chars_hash = self.vectorizer.transformer_list[1][1].named_steps["hash"]
        unigrams = words_hash.set_params(ngram_range=(1, 1)).transform(words)
        words_hash.set_params(ngram_range=(1, 2))
        membership = sparse.hstack([unigrams, chars_hash.transform(words)]).tocsr()
        membership.data[:] = 1.0
        return membership

    def _top_words(
        self, row: sparse.csr_matrix, words: list[str], membership: sparse.csr_matrix, label: str, top: int
    ) -> list[dict[str, Any]]:
        contribution = row.multiply(self._coefficients(label)).tocsr()
        per_word = np.asarray(membership @ contribution.T.toarray()).ravel()
        merged: dict[str, float] = {}
        for word, weight in zip(words, per_word, strict=True):
            name = _display_name(word)
            if weight > 0 and name:
                merged[name] = merged.get(name, 0.0) + float(weight)
        best = sorted(merged.items(), key=lambda item: -item[1])[:top]
        return [{"feature": name, "weight": round(weight, 3)} for name, weight in best]

    def _coefficients(self, label: str) -> np.ndarray:
        calibrated = self.classifiers[label].calibrated_classifiers_[0]
        return np.asarray(calibrated.estimator.coef_).ravel()


def _display_name(token: str) -> str:
    """A reader-facing name for a word or marker token; empty for tokens that explain nothing."""
    if not token.startswith("zz"):
        return token
    if token in MARKER_NAMES:
        return MARKER_NAMES[token]
    for prefix, name in MARKER_PREFIXES:
        if token.startswith(prefix):
            return name
    return ""


def fit_model(
    texts: Sequence[str],
    labels: dict[str, np.ndarray],
    weights: dict[str, np.ndarray] | None = None,
    masks: dict[str, np.ndarray] | None = None,
    random_state: int = 0,
    progress: Any = None,
) -> ModerationModel:
    """Fit the shared vectorizer on all texts, then each label's classifier on the rows that carry it."""
    vectorizer = build_vectorizer()
    features = vectorizer.fit_transform(list(texts)).tocsr()
    if progress is not None:
        progress.update(1)
    classifiers: dict[str, CalibratedClassifierCV] = {}
    for label in LABELS:
        mask = masks[label] if masks else np.ones(len(texts), dtype=bool)
        classifier = build_classifier(random_state)
        sample_weight = weights[label][mask] if weights else None
        classifier.fit(features[mask], labels[label][mask], sample_weight=sample_weight)
        classifiers[label] = classifier
        if progress is not None:
            progress.update(1)
    return ModerationModel(vectorizer=vectorizer, classifiers=classifiers)
