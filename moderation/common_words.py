"""The ordinary words of the shipped corpus, which are all the models read of an author's name.

``python -m moderation.common_words`` writes ``common_words.txt`` beside this file from the corpus's training
comments (never the held-out quarter). A change to that file changes what ``prepare`` makes: bump
``FEATURES_VERSION`` with it (``tests/test_features.py`` checks the file is what the corpus gives).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from moderation.data import TRAIN, load_own_corpus
from moderation.features import COMMON_WORDS_FILE

WORD_RE = re.compile(r"[^\W\d_]+")
SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+|\n")
MIN_SEEN = 3  # lower-case uses inside a sentence, at least
LOWER_SHARE = 3  # ...and three times as many as capitalized ones: "Sarah", "Johnson", "CBD" are not ordinary


def common_words(bodies: Iterable[str]) -> list[str]:
    """Words written in lower case inside a sentence (not first: every word is capitalized there) at least
    MIN_SEEN times and LOWER_SHARE times as often as capitalized: ordinary words, not names."""
    lower: Counter[str] = Counter()
    capitalized: Counter[str] = Counter()
    for body in bodies:
        for sentence in SENTENCE_END_RE.split(body):
            for word in WORD_RE.findall(sentence)[1:]:
                if word.islower():
                    lower[word] += 1
                elif word[0].isupper():
                    capitalized[word.lower()] += 1
    return sorted(
        word
        for word, seen in lower.items()
        if len(word) > 1 and seen >= MIN_SEEN and seen >= LOWER_SHARE * capitalized[word]
    )


def corpus_common_words() -> list[str]:
    return common_words(example.comment.body for example in load_own_corpus() if example.split == TRAIN)


def main() -> None:
    words = corpus_common_words()
    COMMON_WORDS_FILE.write_text("\n".join(words) + "\n", encoding="utf-8")
    print(f"{len(words)} words written to {COMMON_WORDS_FILE}")


if __name__ == "__main__":
    main()
