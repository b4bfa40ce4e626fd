"""The two calibrated text classifiers (spam, medical advice) over one shared feature space."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain, repeat
from typing import Any

import numpy as np
from scipy import sparse
from scipy.special import expit
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.utils import murmurhash3_32

from moderation.features import (
    AUTHOR_MARK,
    MARKERS_MARK,
    NAME_WORD_PREFIX,
    CommentText,
    name_read,
    prepare_many,
)

LABELS = ("spam", "medical_advice")

MARKER_NAMES = {
    "zzurl": "link",
    "zzemail": "e-mail address",
    "zzphone": "phone number",
    "zzmoney": "money",
    "zzdose": "dose",
    "zzfrequency": "how often (a day, daily, at night)",
    "zzauthorurl": "author website",
    "zzauthordigits": "digits in author name",
    "zzauthornonlatin": "author name in another script",
    "zzauthorcamel": "author name like a brand",
    "zzauthorbar": "author name with a '|'",
    "zzdirmed": "directive about treatment",
    "zzdirmedmany": "several treatment directives",
    "zzdir": "directive",
    "zzdiag": "diagnosis of someone",
    "zzreply": "reply to a commenter",
    "zzgibberish": "gibberish",
    "zzpromo": "self-promotion",
    "zzcure": "cure claim",
    "zzcontact": "contact offer",
    "zzsuggestmed": "suggested treatment",
    "zzbaremed": "treatment instruction",
    "zzlongdirmed": "directive in a long comment",
    "zzlongdiag": "diagnosis in a long comment",
    "zzlongsuggestmed": "suggestion in a long comment",
    "zzlongbaremed": "instruction in a long comment",
    "zzrepetitive": "repeated words",
    "zzstretched": "stretched letters",
    "zznofunction": "word salad",
    "zznoletters": "no words",
    "zzhandle": "social handle",
    "zzreferral": "referral pitch",
}
MARKER_PREFIXES = (
    ("zzdomain", "linked domain"),
    ("zzauthortld", "author website"),
    ("zztld", "link domain ending"),
    ("zzlinks", "number of links"),
)
TOKEN_PATTERN = r"(?u)\b\w+\b"  # noqa: S105 - a regex, not a password
WORD_RE = re.compile(TOKEN_PATTERN)
# The same tokens: a maximal run of word characters has a word boundary at both ends.
WORD_TOKEN_RE = re.compile(r"\w+")
WORD_CACHE_SIZE = 200_000  # words (and tokens) whose hashed n-grams a scoring process keeps
BIGRAM_CACHE_SIZE = 500_000  # pairs of tokens whose hashed bigram a scoring process keeps (about 50 MB)
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
    # What it was trained on, as ``moderation.data.fingerprint_set`` of the training rows' bodies, so that
    # an evaluation can leave those rows out; None for a model saved before they were kept (it cannot tell).
    trained_fingerprints: np.ndarray | None = field(default=None, repr=False, compare=False)
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
        for i, (comment, text) in enumerate(zip(comments, prepared, strict=True)):
            scores = Scores(
                spam=float(probabilities["spam"][i]), medical_advice=float(probabilities["medical_advice"][i])
            )
            row = slice(matrix.indptr[i], matrix.indptr[i + 1])
            name = name_read(comment.author)
            found.append((scores, _explained(fast, text, name, matrix.indices[row], matrix.data[row], top)))
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
    fast: FastScorer, prepared: str, author: str, indices: np.ndarray, data: np.ndarray, top: int
) -> dict[str, list[dict[str, Any]]]:
    """The words that pushed each label's score up most, from one comment's feature row (sorted indices)."""
    words = sorted(set(WORD_RE.findall(prepared)))
    if not words:
        return {label: [] for label in LABELS}
    columns, owners = fast.word_columns(words)
    found = np.minimum(np.searchsorted(indices, columns), max(len(indices) - 1, 0))
    present = (indices[found] == columns) if len(indices) else np.zeros(len(columns), dtype=bool)
    names = _names_shown(words, prepared, author)
    explained = {}
    for label in LABELS:
        contribution = np.where(present, data[found] * fast.weights[label][columns], 0.0)
        per_word = np.bincount(owners, weights=contribution, minlength=len(words))
        explained[label] = _top_words(names, per_word, top)
    return explained


def _names_shown(words: list[str], prepared: str, author: str) -> list[str]:
    """Each word's reader-facing name. A word only in the author's name says so ("name: bob"): a moderator
    reading "bob" among the words that drove a score looks for it in the text and does not find it. A word
    in both is one feature to the models (the same hashed columns), so it is shown as the text's.

    ``author`` is the name as ``prepare`` put it (normalized): the text is what comes before it, found from
    the end, since the body or the name may themselves spell the words that mark where the name starts."""
    cut = prepared.rfind(f" {AUTHOR_MARK} {author} {MARKERS_MARK} ")
    body = prepared[:cut] if cut >= 0 else prepared
    only_in_name = set(WORD_RE.findall(author)) - set(WORD_RE.findall(body))
    return [f"{NAME_WORD_PREFIX}{word}" if word in only_in_name else _display_name(word) for word in words]


def _top_words(names: list[str], per_word: np.ndarray, top: int) -> list[dict[str, Any]]:
    merged: dict[str, float] = {}
    for name, weight in zip(names, per_word, strict=True):
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
    words: WordTable

    @classmethod
    def of(cls, model: ModerationModel) -> FastScorer:
        steps = [pipeline.named_steps for _, pipeline in model.vectorizer.transformer_list]
        for step in steps:
            tfidf = step["tfidf"]
            if not (tfidf.sublinear_tf and tfidf.use_idf and tfidf.norm == "l2"):
                raise ValueError("the fast scorer expects sublinear, idf-weighted, l2-normalized TF-IDF")
        hashers = (steps[0]["hash"], steps[1]["hash"])
        _check_hashers(*hashers)
        weights, intercept, sigmoid = {}, {}, {}
        for label in LABELS:
            calibrated = model.classifiers[label].calibrated_classifiers_[0]
            weights[label] = np.asarray(calibrated.estimator.coef_, dtype=np.float64).ravel()
            intercept[label] = float(calibrated.estimator.intercept_[0])
            calibrator = calibrated.calibrators[0]
            sigmoid[label] = (float(calibrator.a_), float(calibrator.b_))
        return cls(
            hashers=hashers,
            idf=(steps[0]["tfidf"].idf_.astype(np.float64), steps[1]["tfidf"].idf_.astype(np.float64)),
            weights=weights,
            intercept=intercept,
            sigmoid=sigmoid,
            words=WordTable(char_hasher=hashers[1], word_features=hashers[0].n_features),
        )

    def counts(self, texts: list[str]) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
        """The raw counts both hashers would give these texts (word 1-2-grams, char_wb n-grams), from the
        word table: the same numbers with sorted indices, as ``HashingVectorizer.transform`` leaves them."""
        return self.words.counts(texts)

    def word_columns(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """For explanations: the feature columns each word owns (its unigram and its character n-grams, in
        ``features``' column space) and, per column, the index of the word that owns it."""
        lowered = [word.lower() for word in words]
        word_block = self.hashers[0].n_features
        grams, lengths = self.words.char_columns(lowered)
        owned = lengths + 1  # each word's unigram, then its n-grams
        owners = np.repeat(np.arange(len(words)), owned)
        unigram_at = np.cumsum(owned) - owned
        columns = np.empty(len(owners), dtype=np.int64)
        columns[unigram_at] = _hashed_columns(lowered, word_block)
        is_gram = np.ones(len(owners), dtype=bool)
        is_gram[unigram_at] = False
        columns[is_gram] = grams + word_block
        return columns, owners

    def features(self, texts: list[str]) -> sparse.csr_matrix:
        blocks = []
        for counts, idf in zip(self.counts(texts), self.idf, strict=True):
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


def _check_hashers(words: HashingVectorizer, chars: HashingVectorizer) -> None:
    """The word table reproduces these two hashers exactly as built by ``build_vectorizer``, and no others."""
    common = {"alternate_sign": False, "binary": False, "input": "content", "lowercase": True, "norm": None}
    common |= {"preprocessor": None, "stop_words": None, "strip_accents": None, "tokenizer": None}
    expected = [
        (words, {**common, "analyzer": "word", "ngram_range": (1, 2), "token_pattern": TOKEN_PATTERN}),
        (chars, {**common, "analyzer": "char_wb", "ngram_range": (2, 5)}),
    ]
    for hasher, settings in expected:
        params = hasher.get_params()
        if any(params[name] != value for name, value in settings.items()):
            raise ValueError(f"the fast scorer expects hashers as build_vectorizer makes them, got {params}")


class _Growing:
    """An append-only numpy array that doubles its capacity, so appending stays cheap on average."""

    def __init__(self, dtype: type[np.integer[Any]]) -> None:
        self._buffer = np.zeros(1024, dtype=dtype)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def values(self) -> np.ndarray:
        return self._buffer[: self._size]

    def extend(self, values: np.ndarray) -> int:
        """Append the values; returns the position of the first."""
        start, end = self._size, self._size + len(values)
        if end > len(self._buffer):
            grown = np.zeros(max(end, 2 * len(self._buffer)), dtype=self._buffer.dtype)
            grown[:start] = self._buffer[:start]
            self._buffer = grown
        self._buffer[start:end] = values
        self._size = end
        return start


# Word ids in a bigram's key: the first word's id times this, plus the second's.
_PAIR_SHIFT = 2**32


class WordTable:
    """What the two hashed blocks need of each whitespace-separated word, worked out once per word and kept.

    A word's char_wb n-grams never cross a word boundary, and its word tokens (``\\w+`` runs) never cross
    whitespace, so a text's counts are assembled from its words': each word keeps the columns of its
    character n-grams (one entry per occurrence, so counting them counts the n-grams) and the ids of its
    tokens; each token keeps its unigram column, and each pair of token ids seen in a row its bigram column.
    A batch is then a few dictionary lookups per word and numpy gathers, and only new words, tokens and
    pairs are hashed. Counts are whole numbers, so adding them up in another order than the hasher does
    gives the same floats, and the indices come out sorted as ``HashingVectorizer`` leaves them.

    Bounded: past WORD_CACHE_SIZE words (or tokens), or BIGRAM_CACHE_SIZE pairs, it is emptied and refilled
    with what the next batch needs. One lock serializes use, since a batch reads what another may clear.
    """

    def __init__(self, char_hasher: HashingVectorizer, word_features: int) -> None:
        self.char_hasher = char_hasher
        self.word_features = word_features
        self.lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self.slots: dict[str, int] = {}  # word -> its row in the arrays below
        self.gram_start, self.gram_length = _Growing(np.int64), _Growing(np.int64)
        self.grams = _Growing(np.int32)  # char n-gram columns of all words, one after the other
        # The same once each, sorted, for explanations.
        self.distinct_start, self.distinct_length = _Growing(np.int64), _Growing(np.int64)
        self.distinct_grams = _Growing(np.int32)
        self.token_start, self.token_length = _Growing(np.int64), _Growing(np.int64)
        self.tokens = _Growing(np.int64)  # token ids of all words, one after the other
        self.token_ids: dict[str, int] = {}
        self.token_names: list[str] = []  # id -> token
        self.unigram_columns = _Growing(np.int64)  # id -> column
        self.bigram_columns: dict[int, int] = {}  # pair key -> column

    def counts(self, texts: list[str]) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
        """Word 1-2-gram counts and char_wb 2-5-gram counts of the texts (lower-cased, as the hashers do)."""
        documents = [text.lower().split() for text in texts]
        words = list(chain.from_iterable(documents))
        word_row = np.repeat(np.arange(len(texts)), [len(document) for document in documents])
        with self.lock:
            slots = self._slots(words)
            char_counts = self._char_counts(slots, word_row, len(texts))
            word_counts = self._word_counts(slots, word_row, len(texts))
        return word_counts, char_counts

    def char_columns(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Each word's char_wb n-gram columns, sorted and once each (as a one-word text's row holds them),
        one word after the other, and how many each word has."""
        with self.lock:
            slots = self._slots(words)
            lengths = self.distinct_length.values[slots]
            return _ragged_gather(self.distinct_grams.values, self.distinct_start.values[slots], lengths), lengths

    def _slots(self, words: list[str]) -> np.ndarray:
        """The table rows of these words, adding the words it does not hold yet."""
        found = self._lookup(words)
        if (found < 0).any():
            unseen = list(dict.fromkeys(words[i] for i in np.flatnonzero(found < 0)))
            if len(self.slots) + len(unseen) > WORD_CACHE_SIZE or len(self.token_ids) > WORD_CACHE_SIZE:
                self._clear()  # bounded memory; a long-running worker refills it with the words it sees
                unseen = list(dict.fromkeys(words))
            self._add(unseen)
            found = self._lookup(words)
        return found

    def _lookup(self, words: list[str]) -> np.ndarray:
        return np.fromiter(map(self.slots.get, words, repeat(-1)), dtype=np.int64, count=len(words))

    def _add(self, words: list[str]) -> None:
        """Hash the char n-grams of new words (in one call to the hasher) and find their tokens."""
        rows = self.char_hasher.transform(words).tocsr()
        first = self.distinct_grams.extend(rows.indices)
        self.distinct_start.extend(first + rows.indptr[:-1])
        self.distinct_length.extend(np.diff(rows.indptr))
        repeats = rows.data.astype(np.int64)
        ends = np.r_[0, np.cumsum(repeats)][rows.indptr]
        first = self.grams.extend(np.repeat(rows.indices, repeats))
        self.gram_start.extend(first + ends[:-1])
        self.gram_length.extend(np.diff(ends))
        tokens = [WORD_TOKEN_RE.findall(word) for word in words]
        ids = self._token_ids(list(chain.from_iterable(tokens)))
        lengths = np.array([len(found) for found in tokens], dtype=np.int64)
        first = self.tokens.extend(ids)
        self.token_start.extend(first + np.r_[0, np.cumsum(lengths)[:-1]])
        self.token_length.extend(lengths)
        self.slots.update(zip(words, range(len(self.slots), len(self.slots) + len(words)), strict=True))

    def _token_ids(self, tokens: list[str]) -> np.ndarray:
        ids = self.token_ids
        new = [token for token in dict.fromkeys(tokens) if token not in ids]
        if new:
            ids.update(zip(new, range(len(ids), len(ids) + len(new)), strict=True))
            self.token_names += new
            self.unigram_columns.extend(_hashed_columns(new, self.word_features))
        return np.fromiter(map(ids.__getitem__, tokens), dtype=np.int64, count=len(tokens))

    def _char_counts(self, slots: np.ndarray, word_row: np.ndarray, n_rows: int) -> sparse.csr_matrix:
        n_features = self.char_hasher.n_features
        lengths = self.gram_length.values[slots]
        keys = np.repeat(word_row * n_features, lengths)
        keys += _ragged_gather(self.grams.values, self.gram_start.values[slots], lengths)
        return _count_matrix(keys, n_rows, n_features)

    def _word_counts(self, slots: np.ndarray, word_row: np.ndarray, n_rows: int) -> sparse.csr_matrix:
        lengths = self.token_length.values[slots]
        ids = _ragged_gather(self.tokens.values, self.token_start.values[slots], lengths)
        token_row = np.repeat(word_row, lengths)
        same_text = token_row[1:] == token_row[:-1]  # bigrams never join the last token of a text to the next
        pairs = ids[:-1][same_text] * _PAIR_SHIFT + ids[1:][same_text]
        rows = np.concatenate([token_row, token_row[1:][same_text]])
        keys = rows * self.word_features
        keys += np.concatenate([self.unigram_columns.values[ids], self._bigram_columns(pairs)])
        return _count_matrix(keys, n_rows, self.word_features)

    def _bigram_columns(self, pairs: np.ndarray) -> np.ndarray:
        known = self.bigram_columns
        keys = pairs.tolist()
        columns = np.fromiter(map(known.get, keys, repeat(-1)), dtype=np.int64, count=len(keys))
        missing = np.flatnonzero(columns < 0)
        if len(missing):
            if len(known) + len(missing) > BIGRAM_CACHE_SIZE:
                known.clear()
            names = self.token_names
            bigrams = [f"{names[key // _PAIR_SHIFT]} {names[key % _PAIR_SHIFT]}" for key in pairs[missing].tolist()]
            columns[missing] = _hashed_columns(bigrams, self.word_features)
            known.update(zip(pairs[missing].tolist(), columns[missing].tolist(), strict=True))
        return columns


def _hashed_columns(features: list[str], n_features: int) -> np.ndarray:
    """The column HashingVectorizer (alternate_sign=False) gives each feature: signed murmurhash3, folded
    as scikit-learn folds it (abs(-2**31) does not fit an int32)."""
    hashes = np.fromiter((murmurhash3_32(f, seed=0) for f in features), dtype=np.int64, count=len(features))
    folded = (2147483647 - (n_features - 1)) % n_features
    columns: np.ndarray = np.where(hashes == -2147483648, folded, np.abs(hashes) % n_features)
    return columns


def _ragged_gather(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``values[start : start + length]`` for each start and length, one after the other."""
    ends = np.cumsum(lengths)
    gathered: np.ndarray = values[
        np.repeat(starts - (ends - lengths), lengths) + np.arange(ends[-1] if len(ends) else 0)
    ]
    return gathered


def _count_matrix(keys: np.ndarray, n_rows: int, n_features: int) -> sparse.csr_matrix:
    """How often each (row, column) pair occurs, given as ``row * n_features + column`` (sorted in place),
    as CSR with sorted indices."""
    keys.sort()  # by row, then column: equal pairs end up side by side
    first_of_pair = np.empty(len(keys), dtype=bool)
    first_of_pair[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=first_of_pair[1:])
    first = np.flatnonzero(first_of_pair)
    unique = keys[first]
    counts = np.diff(first, append=len(keys)).astype(np.float64)
    indptr = np.searchsorted(unique, np.arange(n_rows + 1) * n_features)
    columns = np.remainder(unique, n_features, out=unique).astype(np.int32)
    return sparse.csr_matrix((counts, columns, indptr), shape=(n_rows, n_features))


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
