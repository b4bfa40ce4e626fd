"""The rule baseline sites use today: WordPress core's comment moderation.

WordPress holds a comment for moderation when it has at least ``comment_max_links`` links (default 2)
or when any line of the "Comment Moderation" word list appears, as a case-insensitive substring, in
the comment's content, author name, e-mail, URL, IP or user agent. The list below is what a health
site would typically put there: pharmacy and scam words, and treatment words to catch advice.
"""

from __future__ import annotations

from moderation.features import CommentText, link_count

MODERATION_WORDS = (
    "viagra",
    "cialis",
    "pharmacy",
    "prescription",
    "casino",
    "crypto",
    "bitcoin",
    "forex",
    "loan",
    "dating",
    "whatsapp",
    "telegram",
    "discount",
    "promo code",
    "buy now",
    "order now",
    "cheap",
    "earn $",
    "work from home",
    "click here",
    "mg ",
    "dose",
    "dosage",
    "tablets",
    "painkiller",
    "opioid",
    "tramadol",
    "codeine",
    "gabapentin",
    "stop taking",
    "you should take",
    "don't see a doctor",
    "no need for a doctor",
)
MAX_LINKS = 2


def baseline_holds(comment: CommentText, words: tuple[str, ...] = MODERATION_WORDS) -> bool:
    if link_count(comment.body) >= MAX_LINKS:
        return True
    haystack = " ".join((comment.body, comment.author, comment.email, comment.url)).lower()
    return any(word in haystack for word in words)
