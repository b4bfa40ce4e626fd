"""Text as readers see it: without the characters drawn as nothing, and folded for searching.

Here, below ``moderation``, so that the ORM can keep columns derived from it (``models.entities``);
``moderation.features`` reads and re-exports ``visible`` and ``INVISIBLE``.
"""

import re
import unicodedata

# Unicode's default-ignorable code points (DerivedCoreProperties.txt): drawn as nothing, so a zero-width space or
# a soft hyphen between the letters of "viagra" changes every n-gram, list match and fingerprint while readers
# see the same word. Left out of everything the service reads (never of what it stores and shows).
# The zero-width joiner and the variation selectors also build emoji ("👨‍👩‍👧", "❤️"), which the models read
# as written: those go only after a letter, a digit or an ASCII character, where few emoji need them (a keycap
# "1️⃣" is read as "1⃣", and a flag's tag characters are left out: no meaning is lost for the models).
EMOJI_PARTS = "\u200d\ufe00-\ufe0f"
ALWAYS_INVISIBLE = (
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b\u200c\u200e\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufeff\uffa0\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff"
)
INVISIBLE = ALWAYS_INVISIBLE + EMOJI_PARTS
INVISIBLE_RE = re.compile(f"[{ALWAYS_INVISIBLE}]+|(?<=[\\x00-\\x7f\\w{ALWAYS_INVISIBLE}])[{INVISIBLE}]+")


def visible(text: str) -> str:
    """The text without the characters that are drawn as nothing (``INVISIBLE``)."""
    return INVISIBLE_RE.sub("", text) if not text.isascii() else text


# Between the fields of one search column (an author's name, e-mail and URL): the INVISIBLE SEPARATOR, which
# searchable() takes out of every field and every term, so no term found in the column spans two fields.
SEARCH_SEPARATOR = "\u2063"


def searchable(text: str) -> str:
    """``text`` as the dashboard's search compares it: as readers see it (``visible``), compatibility forms
    folded (NFKC: fullwidth letters, ligatures and the like read as the letters they show, as the models read
    them), and case folded.

    casefold(), not lower(): it is Unicode's caseless match ("STRASSE" finds "Straße"; final and other sigmas
    meet), where lower() keeps "ß" and the two sigmas apart. The comments' search columns store its result: a
    change here leaves the rows already stored with the old one, so it needs a migration that fills them again.
    """
    if text.isascii():  # most comments: NFKC and visible() change nothing in ASCII
        return text.lower()
    return unicodedata.normalize("NFKC", visible(text)).casefold()


def searchable_fields(*fields: str | None) -> str | None:
    """Several fields in one search column, each ``searchable``; None when none of them is there at all."""
    if all(field is None for field in fields):
        return None
    return SEARCH_SEPARATOR.join(searchable(field or "") for field in fields)
