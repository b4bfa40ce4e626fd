"""The two calibrated text classifiers (spam, medical advice) over one shared feature space."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
from scipy import sparse
from scipy.special import expit
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.utils import murmurhash3_32

from moderation.features import CommentText, prepare_many

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
    "zzdirmed": "directive about treatment",
    "zzdirmedmany": "several treatment directives",
    "zzdir": "directive",
    "zzdiag": "diagnosis of someone",
    "zzreply": "reply to a commenter",
    "zzgibberish": "gibberish",
    "zzpromo": "self-promotion",
    "zzcure": "cure claim",
    "zzcontact": "contact offer",
}
MARKER_PREFIXES = (
    ("zzdomain", "linked domain"),
    ("zzauthortld", "author website"),
    ("zztld", "link domain ending"),
    ("zzlinks", "number of links"),
)
TOKEN_PATTERN = r"(?u)\b\w+\b"  # noqa: S105 - a regex, not a password
WORD_RE = re.compile(TOKEN_PATTERN)
WORD_CACHE_SIZE = 200_000  # words whose hashed character n-grams a scoring process keeps
WORD_FEATURES = 2**18
CHAR_FEATURES = 2**18


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
        cv=3,
        ensemble=False,
    )


@dataclass
class ModerationModel:
    """A fitted vectorizer and one calibrated classifier per label, with the model card."""

    vectorizer: FeatureUnion
    classifiers: dict[str, CalibratedClassifierCV]
    card: dict[str, Any] = field(default_factory=dict)
    _fast: FastScorer | None = field(default=None, repr=False, compare=False)

    @property
    def version(self) -> str:
        return str(self.card.get("version", "unversioned"))

    def transform(self, comments: Sequence[CommentText]) -> sparse.csr_matrix:
        return self.vectorizer.transform(prepare_many(comments))

    def score_matrix(self, features: sparse.csr_matrix) -> dict[str, np.ndarray]:
        return {label: self.classifiers[label].predict_proba(features)[:, 1] for label in LABELS}

    def probabilities(self, comments: Sequence[CommentText]) -> dict[str, np.ndarray]:
        """Both labels' calibrated probabilities: the same numbers as ``predict_proba``, computed directly.

        scikit-learn validates its input at every step of the pipeline; for one comment that costs more
        than the arithmetic. This path does the arithmetic of the fitted steps (sublinear TF times IDF,
        L2-normalized per feature block, the linear decision, the sigmoid calibration) without it.
        """
        return self._fast_scorer().probabilities(prepare_many(comments))

    def score_many(self, comments: Sequence[CommentText]) -> list[Scores]:
        if not comments:
            return []
        probabilities = self.probabilities(comments)
        return [
            Scores(spam=float(s), medical_advice=float(a))
            for s, a in zip(probabilities["spam"], probabilities["medical_advice"], strict=True)
        ]

    def score(self, comment: CommentText) -> Scores:
        return self.score_many([comment])[0]

    def explain(self, comment: CommentText, top: int = 5) -> dict[str, list[dict[str, Any]]]:
        """The words and signals that pushed each score up most, with their weight in log-odds.

        A word is credited with its own unigram and the character n-grams inside it (which never cross
        a word boundary), found by hashing the word the way the vectorizer does. Computed on the fast
        scoring path's arithmetic, so explaining costs about as much as scoring.
        """
        return self.score_and_explain(comment, top)[1]

    def score_and_explain(self, comment: CommentText, top: int = 5) -> tuple[Scores, dict[str, list[dict[str, Any]]]]:
        """Both, from one preparation and one feature row (what a worker needs for each decision)."""
        return self.score_and_explain_many([comment], top)[0]

    def score_and_explain_many(
        self, comments: Sequence[CommentText], top: int = 5
    ) -> list[tuple[Scores, dict[str, list[dict[str, Any]]]]]:
        """``score_and_explain`` for a batch: one feature matrix and one product per label for all of them."""
        if not comments:
            return []
        prepared = prepare_many(comments)
        fast = self._fast_scorer()
        matrix = fast.features(prepared)
        probabilities = fast.probabilities_of(matrix)
        found = []
        for i, text in enumerate(prepared):
            scores = Scores(
                spam=float(probabilities["spam"][i]), medical_advice=float(probabilities["medical_advice"][i])
            )
            row = slice(matrix.indptr[i], matrix.indptr[i + 1])
            found.append((scores, _explained(fast, text, matrix.indices[row], matrix.data[row], top)))
        return found

    def _fast_scorer(self) -> FastScorer:
        fast = self._fast
        if fast is None:
            fast = self._fast = FastScorer.of(self)
        return fast

    def _coefficients(self, label: str) -> np.ndarray:
        calibrated = self.classifiers[label].calibrated_classifiers_[0]
        return np.asarray(calibrated.estimator.coef_).ravel()


def _explained(
    fast: FastScorer, prepared: str, indices: np.ndarray, data: np.ndarray, top: int
) -> dict[str, list[dict[str, Any]]]:
    """The words that pushed each label's score up most, from one comment's feature row (sorted indices)."""
    words = sorted(set(WORD_RE.findall(prepared)))
    if not words:
        return {label: [] for label in LABELS}
    columns, owners = fast.word_columns(words)
    found = np.minimum(np.searchsorted(indices, columns), max(len(indices) - 1, 0))
    present = (indices[found] == columns) if len(indices) else np.zeros(len(columns), dtype=bool)
    explained = {}
    for label in LABELS:
        contribution = np.where(present, data[found] * fast.weights[label][columns], 0.0)
        per_word = np.bincount(owners, weights=contribution, minlength=len(words))
        explained[label] = _top_words(words, per_word, top)
    return explained


def _top_words(words: list[str], per_word: np.ndarray, top: int) -> list[dict[str, Any]]:
    merged: dict[str, float] = {}
    for word, weight in zip(words, per_word, strict=True):
        name = _display_name(word)
        if weight > 0 and name:
            merged[name] = merged.get(name, 0.0) + float(weight)
    best = sorted(merged.items(), key=lambda item: -item[1])[:top]
    return [{"feature": name, "weight": round(weight, 3)} for name, weight in best]


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


@dataclass(frozen=True)
class FastScorer:
    """The fitted arithmetic of a ModerationModel, flattened for scoring (see ModerationModel.probabilities)."""

    hashers: tuple[HashingVectorizer, HashingVectorizer]
    idf: tuple[np.ndarray, np.ndarray]
    weights: dict[str, np.ndarray]  # per label: LR coefficients over both blocks
    intercept: dict[str, float]
    sigmoid: dict[str, tuple[float, float]]  # per label: the calibrator's (a, b)
    word_grams: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def of(cls, model: ModerationModel) -> FastScorer:
        steps = [pipeline.named_steps for _, pipeline in model.vectorizer.transformer_list]
        for step in steps:
            tfidf = step["tfidf"]
            if not (tfidf.sublinear_tf and tfidf.use_idf and tfidf.norm == "l2"):
                raise ValueError("the fast scorer expects sublinear, idf-weighted, l2-normalized TF-IDF")
        weights, intercept, sigmoid = {}, {}, {}
        for label in LABELS:
            calibrated = model.classifiers[label].calibrated_classifiers_[0]
            weights[label] = np.asarray(calibrated.estimator.coef_, dtype=np.float64).ravel()
            intercept[label] = float(calibrated.estimator.intercept_[0])
            calibrator = calibrated.calibrators[0]
            sigmoid[label] = (float(calibrator.a_), float(calibrator.b_))
        return cls(
            hashers=(steps[0]["hash"], steps[1]["hash"]),
            idf=(steps[0]["tfidf"].idf_.astype(np.float64), steps[1]["tfidf"].idf_.astype(np.float64)),
            weights=weights,
            intercept=intercept,
            sigmoid=sigmoid,
        )

    def char_counts(self, texts: list[str]) -> sparse.csr_matrix:
        """Hashed char_wb counts, built from each word's n-grams: char_wb n-grams never cross a word, so
        a comment's counts are the sum of its words' counts, and a word seen before is not hashed again."""
        hasher = self.hashers[1]
        documents = [text.lower().split() for text in texts]  # as the char_wb analyzer splits
        cache = self._cached_char_grams(chain.from_iterable(documents))
        grams = [cache[word] for words in documents for word in words]
        lengths = np.array([len(g[0]) for g in grams], dtype=np.int64)
        words_per_doc = np.array([len(words) for words in documents], dtype=np.int64)
        ends = np.cumsum(words_per_doc)
        per_doc = np.add.reduceat(lengths, np.r_[0, ends[:-1]]) if len(lengths) else np.zeros(len(texts), np.int64)
        per_doc = np.where(words_per_doc > 0, per_doc, 0)
        matrix = sparse.csr_matrix(
            (
                np.concatenate([g[1] for g in grams]) if grams else np.zeros(0),
                np.concatenate([g[0] for g in grams]) if grams else np.zeros(0, np.int32),
                np.r_[0, np.cumsum(per_doc)],
            ),
            shape=(len(texts), hasher.n_features),
        )
        matrix.sum_duplicates()
        return matrix

    def _cached_char_grams(self, words: Iterable[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The per-word cache of char_wb n-gram columns and counts, filled for these words."""
        cache = self.word_grams
        wanted = set(words)
        unseen = list(wanted.difference(cache))
        if unseen:
            if len(cache) + len(unseen) > WORD_CACHE_SIZE:
                cache.clear()  # bounded memory; a long-running worker refills it with the words it sees
                unseen = list(wanted)
            rows = self.hashers[1].transform(unseen).tocsr()
            for i, word in enumerate(unseen):
                start, end = rows.indptr[i], rows.indptr[i + 1]
                cache[word] = (rows.indices[start:end], rows.data[start:end].astype(np.float64))
        return cache

    def word_columns(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """For explanations: the feature columns each word owns (its unigram and its character n-grams, in
        ``features``' column space) and, per column, the index of the word that owns it."""
        lowered = [word.lower() for word in words]
        grams = self._cached_char_grams(lowered)
        word_block = self.hashers[0].n_features
        per_word = [
            np.concatenate([[_hashed_index(word, word_block)], grams[word][0].astype(np.int64) + word_block])
            for word in lowered
        ]
        owners = np.repeat(np.arange(len(words)), [len(columns) for columns in per_word])
        return np.concatenate(per_word), owners

    def features(self, texts: list[str]) -> sparse.csr_matrix:
        blocks = []
        for hasher, idf in zip(self.hashers, self.idf, strict=True):
            if hasher is self.hashers[1]:
                counts = self.char_counts(texts)
            else:
                counts = hasher.transform(texts).tocsr().astype(np.float64)
            counts.data = (1.0 + np.log(counts.data)) * idf[counts.indices]
            norms = np.sqrt(np.add.reduceat(counts.data**2, counts.indptr[:-1])) if counts.nnz else np.zeros(0)
            lengths = np.diff(counts.indptr)
            row_norm = np.zeros(counts.shape[0])
            row_norm[lengths > 0] = norms[lengths > 0]
            counts.data /= np.repeat(np.where(row_norm > 0, row_norm, 1.0), lengths)
            blocks.append(counts)
        return sparse.hstack(blocks, format="csr")

    def probabilities(self, texts: list[str]) -> dict[str, np.ndarray]:
        return self.probabilities_of(self.features(texts))

    def probabilities_of(self, features: sparse.csr_matrix) -> dict[str, np.ndarray]:
        result = {}
        for label in LABELS:
            decision = features @ self.weights[label] + self.intercept[label]
            a, b = self.sigmoid[label]
            result[label] = expit(-(a * decision + b))
        return result


def _hashed_index(feature: str, n_features: int) -> int:
    """The column HashingVectorizer (alternate_sign=False) gives a feature: signed murmurhash3, folded."""
    h = murmurhash3_32(feature, seed=0)
    return (2147483647 - (n_features - 1)) % n_features if h == -2147483648 else abs(h) % n_features


@dataclass(frozen=True)
class HashedCounts:
    """Raw hashed n-gram counts of prepared texts: computed once, then sliced for every fit."""

    words: sparse.csr_matrix
    chars: sparse.csr_matrix

    def rows(self, index: np.ndarray) -> HashedCounts:
        return HashedCounts(self.words[index], self.chars[index])


def hash_texts(texts: Sequence[str]) -> HashedCounts:
    vectorizer = build_vectorizer()
    words, chars = (pipeline.named_steps["hash"] for _, pipeline in vectorizer.transformer_list)
    return HashedCounts(words.transform(texts).tocsr(), chars.transform(texts).tocsr())


def fit_model(
    counts: HashedCounts,
    labels: dict[str, np.ndarray],
    weights: dict[str, np.ndarray] | None = None,
    masks: dict[str, np.ndarray] | None = None,
    random_state: int = 0,
    progress: Any = None,
) -> ModerationModel:
    """Fit the TF-IDF weights on all rows, then each label's classifier on the rows that carry that label."""
    vectorizer = build_vectorizer()
    words_tfidf, chars_tfidf = (pipeline.named_steps["tfidf"] for _, pipeline in vectorizer.transformer_list)
    features = sparse.hstack(
        [words_tfidf.fit_transform(counts.words), chars_tfidf.fit_transform(counts.chars)], format="csr"
    )
    if progress is not None:
        progress.update(1)
    classifiers: dict[str, CalibratedClassifierCV] = {}
    for label in LABELS:
        mask = masks[label] if masks else np.ones(features.shape[0], dtype=bool)
        classifier = build_classifier(random_state)
        sample_weight = weights[label][mask] if weights else None
        classifier.fit(features[mask], labels[label][mask], sample_weight=sample_weight)
        classifiers[label] = classifier
        if progress is not None:
            progress.update(1)
    return ModerationModel(vectorizer=vectorizer, classifiers=classifiers)
