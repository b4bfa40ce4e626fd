"""Turn a comment into the text the classifiers read.

The classifiers are standard scikit-learn pipelines over one prepared string, so the persisted model
holds only standard components (safe to load with skops). Everything comment-specific happens here:
undoing obfuscation, and marker tokens for the signals that words alone miss (links and their domains,
the author's url, phone numbers, e-mail addresses, money, doses, directives).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from itertools import pairwise
from pathlib import Path
from urllib.parse import urlsplit

# Re-exported: what the models read and the dashboard's search agree on the characters drawn as nothing.
from models.text import INVISIBLE as INVISIBLE
from models.text import visible as visible
from moderation.cues import cue_tokens

# A bare domain (no scheme, no www.) counts with an ending that is never a word, in lower case as people type
# domains or shouted in capitals ("MEDSFAST.COM"). A country ending that is also a word ("it", "es", "de", "in",
# "me": "it.It", "lot.in" are missing spaces) counts with a path, or after a name no sentence ends with: one
# with a hyphen or a digit, or of 9 characters or more ("riposo-sano.it", "colchonesya.es"; not "see me.de").
# Repeats are bounded (DNS labels, e-mail local parts) so hostile text costs linear time, not quadratic.
GENERIC_ENDINGS = (
    "com|net|org|info|biz|shop|store|xyz|online|site|top|club|io|live|vip|pro|link|app|dev|health|fit|blog"
)
COUNTRY_ENDINGS = "co\\.uk|org\\.uk|ru|cn|pl|fr|pt|nl|br|ch|ie|nz|mx|cl|dk|fi|cz|gr|jp|ro|co|ng|pk|ph|za|ar"
WORD_ENDINGS = "es|it|de|in|me|ca|au|eu|ai|us|at|se|be|to|no|uk"
SHOUTED_ENDINGS = "COM|NET|ORG|INFO|BIZ|SHOP|STORE|XYZ|ONLINE|SITE"
URL_RE = re.compile(
    r"(?i:(?:https?://|www\.)[^\s<>\"']+)"
    rf"|\b[a-z0-9][a-z0-9-]{{1,62}}(?:\.[a-z0-9-]{{2,63}}){{0,8}}\.(?:{GENERIC_ENDINGS}|{COUNTRY_ENDINGS})"
    r"\b(?:/[^\s<>\"']*)?"
    rf"|\b[A-Z0-9][A-Z0-9-]{{1,62}}(?:\.[A-Z0-9-]{{2,63}}){{0,8}}\.(?:{SHOUTED_ENDINGS})\b(?:/[^\s<>\"']*)?"
    # Short-link and chat hosts.
    r"|\b(?:t\.me|wa\.me|bit\.ly|tinyurl\.com|linktr\.ee|amzn\.to|amzn\.eu)/[^\s<>\"']+"
    rf"|\b[a-z0-9][a-z0-9-]{{1,62}}\.(?:{WORD_ENDINGS})/[^\s<>\"']*"
    rf"|\b(?=[a-z0-9]*[-\d]|[a-z0-9]{{9}})[a-z0-9][a-z0-9-]{{1,62}}(?:\.[a-z0-9-]{{2,63}}){{0,8}}\.(?:{WORD_ENDINGS})\b",
)
# What every link URL_RE finds contains: a scheme, "www." or a dot before a lower-case letter or a shouted
# ending. Most comments have none of them, and ruling that out costs a fraction of running URL_RE, which
# retries at every word.
URL_HINT_RE = re.compile(rf"://|(?i:www\.)|\.[a-z]|\.(?:{SHOUTED_ENDINGS})\b")
# A run of spaces has one way to be read: "\s*(?:\(|\[)?\s*" could split it at any of its n places, and a
# comment of spaces either side of a "dot" then cost cubic time (27 s for 1,600 characters). Same matches.
SPELLED_DOT_COM_RE = re.compile(
    r"\b(\w[\w-]{0,62})\s*(?:[(\[]\s*)?(?:dot|punto|ponto|point)\s*(?:[)\]]\s*)?(com|net|org|shop|info|es|br|fr)\b",
    re.I,
)
SPELLED_DOT_WORDS = ("dot", "punto", "ponto", "point")
# A dot bracketed or spaced so that link filters miss it: "medsfast[.]com", "medsfast (.) net", "medsfast . com".
# The hint is one cheap scan; the pattern runs only where it found something.
HIDDEN_DOT_ENDINGS = "com|net|org|shop|info"
HIDDEN_DOT_HINT_RE = re.compile(
    rf"[(\[{{]\s*\.\s*[)\]}}]|\s\.\s*(?:{HIDDEN_DOT_ENDINGS})\b|\.\s+(?:{HIDDEN_DOT_ENDINGS})\b"
)
HIDDEN_DOT_RE = re.compile(
    rf"\b(\w[\w-]{{0,62}})(?:\s*[(\[{{]\s*\.\s*[)\]}}]\s*|\s+\.\s*|\.\s+)({HIDDEN_DOT_ENDINGS})\b"
)
EMAIL_RE = re.compile(r"\b[\w.+-]{1,64}@[\w-]+\.[\w.-]+\b")
PHONE_RE = re.compile(r"(?:\+|\b00)?\d[\d\s().-]{7,}\d")
# Dates and spans of years have a number's shape ("12.03.2024", "2019-2023") and are common in ordinary
# comments (a surgery's date, the years a pain lasted): PHONE_RE looks at the text without them. Only whole
# ones are taken out, so "06.12.34.56.78" (a French number) stays whole.
DATE_LIKE_RE = re.compile(
    r"(?<![\d.,/-])(?:\d{1,2}[./-]\d{1,2}[./-](?:\d{4}|\d{2})|\d{4}[./-]\d{1,2}[./-]\d{1,2}"
    r"|(?:19|20)\d\d\s*[-/]\s*(?:(?:19|20)\d\d|\d\d))(?![./-]?\d)"
)
PHONE_DIGITS = 7  # a local number without its area code
# Other numbers of a phone number's shape in ordinary comments: times and spans of them ("09.00-17.00"),
# numbers with a thousands separator and spans of them ("8.000-10.000 pasos"), lists of years ("2015 2017
# 2019") and dates written with spaces ("12 03 2024"). Only whole ones, with no digit just before or after,
# so "06.12.34.56.78" and "612.345.678" stay numbers.
NOT_A_PHONE_RE = re.compile(
    r"(?<![\d.,:/-])(?<!\d\s)(?:"
    r"\d{1,2}[.:][0-5]\d(?:\s*[-–]\s*\d{1,2}[.:][0-5]\d)?"
    r"|\d{1,3}[.,]\d{3}(?:\s*[-–]\s*\d{1,3}[.,]\d{3})?"
    r"|(?:19|20)\d\d(?:(?:\s*,\s*|\s*&\s*|\s+and\s+|\s+)(?:19|20)\d\d)+"
    r"|\d{1,2}\s\d{1,2}\s(?:19|20)\d\d"
    r")(?![.,:]?\d)(?!\s+\d)"
)
# An address spaced or spelled out so that filters miss it: "jo @ mail .org", "jo (at) mail dot com". A
# spelled "dot" takes any ending in any case; a bare "." takes, with spaces about it and in any case, only
# endings that are never words ("@Jo. It helped" is a reply), and the others touching it, in lower case and
# not followed by a lower-case word ("thanks @mike.in my case" is a missing space, as URL_RE has it).
SPACED_EMAIL_RE = re.compile(
    r"\b[\w.+-]{1,64}\s*(?:@|\((?i:at)\)|\[(?i:at)\])\s*[\w-]{1,63}(?:"
    r"\s*(?:\((?i:dot)\)|\[(?i:dot)\]|\b(?i:dot)\b)\s*"
    r"(?i:com|net|org|info|biz|io|co\.uk|org\.uk|co|uk|me|de|fr|es|it|nl|pl|pt|br|ru|ca|au|in|ng|ph|xyz|online|site)\b"
    r"|\s*\.\s*(?i:com|org|co\.uk|org\.uk)\b"
    r"|\s*\.(?:net|info|biz|io|xyz|online|site|uk|ru|pl|fr|br|de|es|nl|ng|ph|ca|au|me|co|in|it|pt)\b(?!\s+[a-z])"
    r")"
)
SPACED_EMAIL_HINTS = ("@", "(at)", "[at]")
# A phone number read out in words ("oh seven seven double oh, nine double oh..."). Searched in lower-cased
# text (faster than re.I); a run of these words is a number only when it is not someone counting (reps,
# seconds, a child counting to ten), see _reads_out_a_phone_number.
DIGIT_WORDS = {"zero": 0, "oh": 0, "nought": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
DIGIT_WORDS |= {"seven": 7, "eight": 8, "nine": 9}
REPEAT_WORDS = {"double": 2, "triple": 3, "treble": 3}
SPELLED_PHONE_RE = re.compile(rf"\b(?:(?:{'|'.join([*DIGIT_WORDS, *REPEAT_WORDS])})\b[\s,.-]*){{7,}}")
SPELLED_PHONE_DIGITS = 8  # a local number without its area code; a full one is 10 or 11
MONEY_RE = re.compile(r"[$€£]\s?\d|\b\d+\s?(?:usd|dollars|euros|pounds|bucks)\b", re.I)
# A word every MONEY_RE match without a currency sign contains (see _may_contain).
MONEY_WORDS = ("usd", "dollars", "euros", "pounds", "bucks")
DOSE_RE = re.compile(
    r"\b\d+(?:[.,]\d+)?\s?(?:mg|mcg|µg|ug|iu|ui|ml|g|milligrams?|grams?|units?|capsules?|caps|tablets?|"
    r"pills?|drops?|comprimidos?|cápsulas?|gélules?|kapseln?|tabletten?|compresse)\b",
    re.I,
)
FREQUENCY_RE = re.compile(
    r"\b(?:every\s+\d+\s*(?:hours?|hrs?|h)|(?:once|twice|three times|3 times|2x|3x)\s+(?:a|per)\s+day|"
    r"daily|a day|per day|at night|before bed|morning and night)\b",
    re.I,
)
# A word every FREQUENCY_RE match contains (see _may_contain).
FREQUENCY_WORDS = ("every", "day", "daily", "night", "bed")
# Where the author's name and the marker tokens start in the prepared text
AUTHOR_MARK = "zzauthor"
MARKERS_MARK = "zzmarkers"
NAME_WORD_PREFIX = "name: "  # how explanations show a word found only in the author's name
HTML_TAG_RE = re.compile(r"<[^>]{1,200}>")
# Inside a word of Latin letters or digits no writer needs one (joiners matter in Arabic and Indic scripts and
# in emoji, not there). Not the soft hyphen: text copied from a page that hyphenates carries it between letters
# ("Bandscheiben\u00advorfall"); the models read past it all the same.
LATIN_OR_DIGIT = "A-Za-z0-9\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f"
HIDDEN_IN_WORD_RE = re.compile(f"[{LATIN_OR_DIGIT}][{INVISIBLE.replace(chr(0xAD), '')}]+[{LATIN_OR_DIGIT}]")
# Overrides reverse what readers see: the text the models read would say something else, so one anywhere holds.
BIDI_OVERRIDES = ("\u202d", "\u202e")
# "c.h.e.a.p", "p-i-l-l-s", "v i a g r a": single characters joined by separators.
SPACED_LETTERS_RE = re.compile(r"(?<!\S)(?:\w[.\-_*\s]){2,}\w(?!\S)")
LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})
# Only a digit or symbol between letters reads as obfuscation (v1agra, pa!n); 800mg, 5yo and covid19 do not.
LEET_WORD_RE = re.compile(r"(?<![\w@$!])(?=[a-z0-9@$!]*[a-z][0-9@$!]+[a-z])[a-z0-9@$!]{3,}(?![\w@$!])", re.I)
# Each LEET_WORD_RE match holds a letter, digits or symbols, and a letter. Looking for a digit or symbol
# first is cheap (half of all comments have none); few of the rest have the three in a row.
LEET_CHAR_RE = re.compile(r"[0-9@$!]")
LEET_CORE_RE = re.compile(r"[a-z][0-9@$!]+[a-z]", re.I)
WHITESPACE_RE = re.compile(r"\s+")
# A capital inside a word, past a short prefix: "GreenLeaf", "DiscHeal", "TruthSeeker"; not "McDonald", "DeAngelo".
CAMEL_RE = re.compile(r"[a-z]{3}[A-Z]")
DIGIT_RE = re.compile(r"\d")
# A letter of another script in a name: a look-alike ("Jаn" with a Cyrillic "а"), not "Müller" or "Lucía".
NOT_LATIN_LETTER_RE = re.compile(f"[^\\W{LATIN_OR_DIGIT}\u1e00-\u1eff_]")


@dataclass(frozen=True, slots=True)
class CommentText:
    """What the classifiers may know about a comment."""

    body: str
    author: str = ""
    email: str = ""
    url: str = ""
    article: str = ""


def has_hidden_characters(text: str) -> bool:
    """Whether invisible characters sit inside a Latin word, or a direction override turns text around: text
    dressed to slip past filters."""
    if text.isascii():
        return False
    return any(override in text for override in BIDI_OVERRIDES) or HIDDEN_IN_WORD_RE.search(text) is not None


def normalize(text: str) -> str:
    """Lower-case, fold look-alike characters and undo common obfuscation."""
    text = unicodedata.normalize("NFKC", visible(text))
    text = HTML_TAG_RE.sub(" ", text).lower()
    text = SPACED_LETTERS_RE.sub(lambda m: re.sub(r"[.\-_*\s]", "", m.group(0)), text)
    if LEET_CHAR_RE.search(text) and LEET_CORE_RE.search(text):
        text = LEET_WORD_RE.sub(lambda m: m.group(0) if m.group(0).isdigit() else m.group(0).translate(LEET), text)
    # What WHITESPACE_RE.sub(" ", text).strip() gives (\s and str.split agree on whitespace), at half the cost.
    return " ".join(text.split())


def find_urls(text: str) -> list[str]:
    text = visible(text)
    urls = [m.group(0).rstrip(".,;:!?)]") for m in URL_RE.finditer(text)] if URL_HINT_RE.search(text) else []
    lowered = text.lower()
    if any(word in lowered for word in SPELLED_DOT_WORDS):  # the pattern is slow to fail, and rarely matches
        urls += [f"{m.group(1)}.{m.group(2)}" for m in SPELLED_DOT_COM_RE.finditer(text)]
    if HIDDEN_DOT_HINT_RE.search(text):
        urls += [f"{m.group(1)}.{m.group(2)}" for m in HIDDEN_DOT_RE.finditer(text)]
    return urls


def url_domain(url: str) -> str:
    candidate = url if "://" in url else f"http://{url}"
    try:
        host = urlsplit(candidate).hostname or ""
    except ValueError:  # e.g. a stray "[" read as a broken IPv6 literal
        return ""
    return host.lower().removeprefix("www.")


def link_count(text: str) -> int:
    return len(find_urls(text))


# Latin in every form a comment uses, spam's disguises included (ｃｈｅａｐ, 𝐜𝐡𝐞𝐚𝐩, ᴄʜᴇᴀᴘ): what is left of the
# letters is another script.
_LATIN = (
    "\x00-\u02af"  # Basic Latin to IPA Extensions (Latin-1, Extended-A and -B)
    "\u1d00-\u1dbf"  # phonetic extensions: small capitals
    "\u1e00-\u1eff"  # Latin Extended Additional (Vietnamese)
    "\u2c60-\u2c7f\ua720-\ua7ff\uab30-\uab6f"  # Latin Extended-C, -D, -E
    "\uff21-\uff5a"  # fullwidth letters
    "\U0001d400-\U0001d7ff"  # mathematical letters
)
# Letters of other scripts that look like Latin ones (Cyrillic а е о р с у х і ј ѕ..., Greek ο ν ρ...): inside a
# word that has Latin letters too, they are a spammer's disguise ("Gеnеriс"), not another language.
_LOOKALIKES = frozenset(
    "аеорсухіјѕԁһԛԝӏАВЕКМНОРСТХІЈЅҮ"  # Cyrillic
    "οανρτικυΑΒΕΖΗΙΚΜΝΟΡΤΥΧ"  # Greek
)
WORD_RE = re.compile(r"[^\W\d_]+")
OTHER_SCRIPT_LETTER_RE = re.compile(rf"[^\W\d_{_LATIN}]")
OTHER_SCRIPT_MIN_LETTERS = 8  # "ok 👍 да" says nothing about the comment
OTHER_SCRIPT_PASSAGE = 20  # a sentence in another script, even inside an English comment or a link (not a name)


class OtherScript(StrEnum):
    """How much of a comment is in a script the models never learned (they learned Latin-script text only)."""

    NONE = "none"
    PASSAGE = "passage"  # a sentence's worth inside a Latin-script comment: the scores read only the rest
    MOSTLY = "mostly"  # most of the words: the scores mean nothing (a Russian thank-you scored as spam)


def other_script(text: str) -> OtherScript:
    """Whether, and how much of, ``text`` is in a script other than Latin (Cyrillic, CJK, Arabic, Greek...).

    Mostly: more than half the letters outside links. A passage: 20 or more such letters anywhere, links
    included (text can hide in a link's path). A word with Latin letters whose other letters all look Latin
    counts as Latin; any other word with letters of another script counts as that script, so swapping a
    Latin "p" into each Russian word does not make Russian text Latin.
    """
    if text.isascii() or OTHER_SCRIPT_LETTER_RE.search(text) is None:
        return OtherScript.NONE  # most comments: accents, curly quotes and emoji are not another script
    text = visible(text)  # a zero-width space between letters would split each word into letters
    urls = [m.group(0) for m in URL_RE.finditer(text)] if URL_HINT_RE.search(text) else []
    prose = URL_RE.sub(" ", text) if urls else text
    other, letters = _other_script_letters(prose)
    in_links = sum(_other_script_letters(url)[0] for url in urls)
    # A short comment counts only when all its letters are another script's: "Спасибо!" is unreadable to the
    # models (they scored it 0.93 spam), while "ok 👍 да" is mostly read.
    if other * 2 > letters and (letters >= OTHER_SCRIPT_MIN_LETTERS or (other == letters and other >= 2)):
        return OtherScript.MOSTLY
    return OtherScript.PASSAGE if other + in_links >= OTHER_SCRIPT_PASSAGE else OtherScript.NONE


def _other_script_letters(text: str) -> tuple[int, int]:
    """(letters in words of another script, all letters) of ``text``."""
    other = letters = 0
    for word in WORD_RE.findall(text):
        letters += len(word)
        foreign = OTHER_SCRIPT_LETTER_RE.findall(word)
        if not foreign:
            continue
        disguised = len(foreign) < len(word) and all(letter in _LOOKALIKES for letter in foreign)
        if not disguised:
            other += len(word)
    return other, letters


# Endings reserved for examples (RFC 2606): a made-up address stands in for a real one, whose commonest ending
# is ".com". Read as their own ending they taught the models that ".example" is spam (nearly every made-up shop
# in the training comments has one, a reader's blog next to none), and a reader's "myblog.example" was rejected.
RESERVED_ENDINGS = frozenset({"example", "test", "invalid", "localhost"})
STAND_IN_ENDING = "com"


def link_ending(domain: str) -> str:
    """The ending the models read for a linked domain: its last label, or ``none`` for a bare name."""
    return ending_read(domain.rsplit(".", 1)[-1]) if "." in domain else "none"


def ending_read(ending: str) -> str:
    """A domain's last label as the models read it: an ending reserved for examples as the one it stands for."""
    return STAND_IN_ENDING if ending in RESERVED_ENDINGS else ending


def _marker_tokens(comment: CommentText, raw: str) -> list[str]:
    tokens: list[str] = []
    urls = find_urls(raw)
    for url in urls:
        domain = url_domain(url)
        tokens += ["zzurl", f"zztld{link_ending(domain)}", f"zzdomain{domain.replace('.', 'dot').replace('-', '')}"]
    if urls:
        tokens.append(f"zzlinks{min(len(urls), 3)}")
    if comment.url.strip():
        author_domain = url_domain(comment.url.strip())
        tokens += ["zzauthorurl", f"zzauthortld{ending_read(author_domain.rsplit('.', 1)[-1])}"]
    if _has_email(raw):
        tokens.append("zzemail")
    if DIGIT_RE.search(raw):  # phones, money and doses all need a digit; most comments have none
        tokens += _number_tokens(raw)
    if "zzphone" not in tokens and _reads_out_a_phone_number(raw.lower()):
        tokens.append("zzphone")
    if _has_frequency(raw):
        tokens.append("zzfrequency")
    if NOT_LATIN_LETTER_RE.search(comment.author):
        tokens.append("zzauthornonlatin")
    if comment.author and any(ch.isdigit() for ch in comment.author):
        tokens.append("zzauthordigits")
    if CAMEL_RE.search(comment.author):
        tokens.append("zzauthorcamel")
    if "|" in comment.author:
        tokens.append("zzauthorbar")
    tokens += cue_tokens(raw)
    words = len(raw.split())
    tokens.append("zzlen" + ("short" if words < 8 else "medium" if words < 60 else "long"))
    return tokens


def _has_email(raw: str) -> bool:
    if "@" in raw and EMAIL_RE.search(raw):
        return True
    lowered = raw.lower()
    return any(hint in lowered for hint in SPACED_EMAIL_HINTS) and SPACED_EMAIL_RE.search(raw) is not None


def _reads_out_a_phone_number(lowered: str) -> bool:
    for match in SPELLED_PHONE_RE.finditer(lowered):
        digits = _digits_read_out(match.group())
        if len(digits) >= SPELLED_PHONE_DIGITS and not _counting(digits) and not _chanted(digits):
            return True
    return False


def _digits_read_out(words: str) -> list[int]:
    """The digits of "oh seven seven double oh": [0, 7, 7, 0, 0]."""
    digits: list[int] = []
    repeat = 1
    for word in WORD_RE.findall(words):
        if word in REPEAT_WORDS:
            repeat = REPEAT_WORDS[word]
        else:
            digits += [DIGIT_WORDS[word]] * repeat
            repeat = 1
    return digits


def _chanted(digits: list[int]) -> bool:
    """ "Oh oh oh oh...", "two four six eight, two four six eight": a few digits, or a short block again."""
    if len(set(digits)) < 3:
        return True
    return any(digits == (digits[:period] * len(digits))[: len(digits)] for period in range(1, 5))


def _counting(digits: list[int]) -> bool:
    """One, two, three, four... (or down, or again from one): most steps are one up or one down."""
    steps = [later - earlier for earlier, later in pairwise(digits)]
    return sum(abs(step) == 1 for step in steps) >= 0.75 * len(steps)


def _has_frequency(raw: str) -> bool:
    return _may_contain(raw, FREQUENCY_WORDS) and FREQUENCY_RE.search(raw) is not None


def _may_contain(raw: str, words: tuple[str, ...]) -> bool:
    """False when none of these lower-case ASCII words can be in the text in any case, as re.I matches."""
    lowered = raw.lower()
    # Under re.I four other letters match ASCII ones: the Kelvin sign (lower-cased to "k" anyway), the
    # dotted capital I (lower-cased to "i" and a combining dot), the dotless i and the long s.
    return any(letter in lowered for letter in "\u0307\u0131\u017f") or any(word in lowered for word in words)


def _has_phone_number(raw: str) -> bool:
    if not PHONE_RE.search(raw):  # most comments: one search
        return False
    without_dates = NOT_A_PHONE_RE.sub(" ", DATE_LIKE_RE.sub(" ", raw))
    return any(sum(c.isdigit() for c in m.group()) >= PHONE_DIGITS for m in PHONE_RE.finditer(without_dates))


def _number_tokens(raw: str) -> list[str]:
    tokens = []
    if _has_phone_number(raw):
        tokens.append("zzphone")
    if (any(symbol in raw for symbol in "$€£") or _may_contain(raw, MONEY_WORDS)) and MONEY_RE.search(raw):
        tokens.append("zzmoney")
    doses = len(DOSE_RE.findall(raw))
    return tokens + ["zzdose"] * min(doses, 3)


# What a model learned from is prepare()'s output, which is code: a model trained on another version's
# output scores worse. Change this whenever that output changes for any text (tests/test_features.py pins a
# digest of it); the model card records it, and loading a model made for other features warns.
FEATURES_VERSION = "2026-12-08.1"


def prepare(comment: CommentText) -> str:
    """The single string both classifiers read: normalized text plus marker tokens."""
    comment = _without_invisible(comment)
    raw = comment.body
    text = normalize(raw)
    author = name_read(comment.author)
    markers = " ".join(_marker_tokens(comment, raw))
    return f"{text} {AUTHOR_MARK} {author} {MARKERS_MARK} {markers}"


# Words the shipped corpus writes in lower case inside a sentence: ordinary words, not people's names. Of the
# author's name the models read only these ("cheap", "online", "clinic", "deals" of "Cheap Pills Online"), so
# that a reader's own name ("Sarah Johnson", "Aisha Bello") never moves a score: names seen once in the spam
# had taught the models that some names are spam.
COMMON_WORDS_FILE = Path(__file__).with_name("common_words.txt")  # written by moderation/common_words.py
COMMON_WORDS = frozenset(COMMON_WORDS_FILE.read_text(encoding="utf-8").split())
LETTERS_RE = re.compile(r"[^\W\d_]+")


def name_read(author: str) -> str:
    """What the models read of the author's name: its ordinary words, normalized (COMMON_WORDS)."""
    return " ".join(word for word in LETTERS_RE.findall(normalize(author)) if word in COMMON_WORDS)


def _without_invisible(comment: CommentText) -> CommentText:
    fields = (comment.body, comment.author, comment.email, comment.url)
    if all(value.isascii() for value in fields):  # nearly every comment: nothing to look for
        return comment
    return replace(
        comment,
        body=visible(comment.body),
        author=visible(comment.author),
        email=visible(comment.email),
        url=visible(comment.url),
    )


def prepare_many(comments: Iterable[CommentText]) -> list[str]:
    return [prepare(c) for c in comments]
