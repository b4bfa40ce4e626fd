"""Keyed hashes for what the service keeps outside the database and derives from personal data.

Redis runs with appendonly (the bundled Redis and compose's), so what is written there stays on disk until Redis
rewrites its file, beyond retention and any erasure. A plain hash of a value that can be guessed (an IP address,
an e-mail, a request naming one) confirms the guess to anyone with that file; an HMAC keyed with the app's
SECRET_KEY confirms nothing without the key, and every web process, holding the same SECRET_KEY, computes the
same one. Each use names its purpose, so that no two uses ever give one value the same hash.
"""

from __future__ import annotations

import hashlib
import hmac


def keyed_digest(secret_key: str | bytes, purpose: str, value: bytes) -> bytes:
    """HMAC-SHA256 of ``value`` under ``purpose`` (no ":" in it), keyed with the app's SECRET_KEY."""
    key = secret_key.encode() if isinstance(secret_key, str) else secret_key
    return hmac.new(key, purpose.encode() + b":" + value, hashlib.sha256).digest()
