"""Which comment revisions the workers decided lately, so a message about one costs no database work.

A classify task decides its comment together with others that are waiting; the others' own messages
arrive afterwards and find nothing to do. Under a backlog that is nineteen messages in twenty, and
asking the database costs each of them a transaction. A worker remembers what it decided (after commit)
in its own memory and in Redis, shared by every worker; a message naming a remembered revision is done.

Only a message that names its revision is checked: an edit makes a new revision, whose message is never
remembered as decided, and a relayed message (no revision) always asks the database. Forgetting is
safe: a revision not found here takes the database path, which was always correct on its own. A wrong
"settled" (a database recreated or restored under a Redis that still holds keys of the old one, within
REMEMBER_SECONDS, or under a worker that kept running: its own memory has no time limit, only a size)
only delays a comment: its outbox row stays, and the relay publishes it again without a revision.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable

import redis

log = logging.getLogger(__name__)

KEY_PREFIX = "moderation:settled"
REMEMBER_SECONDS = 120  # a backlog's duplicate messages arrive within seconds; Redis forgets them after this
LOCAL_ENTRIES = 20_000  # this process's own memory of what it decided, newest kept
REDIS_OPTIONS = {"socket_connect_timeout": 0.2, "socket_timeout": 0.2}
REDIS_RETRY_SECONDS = 5.0  # after Redis fails, only local memory is used for this long


class SettledWork:
    def __init__(self, redis_url: str | None = None) -> None:
        self._local: OrderedDict[tuple[int, int], None] = OrderedDict()
        shared = redis_url is not None and redis_url.startswith(("redis://", "rediss://", "unix://"))
        self._redis = redis.Redis.from_url(redis_url, **REDIS_OPTIONS) if shared and redis_url else None
        self._redis_down_until = 0.0

    def remember(self, decided: Iterable[tuple[int, int]]) -> None:
        """(comment id, revision) pairs whose decision has been committed."""
        pairs = list(decided)
        for pair in pairs:
            self._local[pair] = None
        while len(self._local) > LOCAL_ENTRIES:
            self._local.popitem(last=False)
        if pairs and self._shared_usable():
            try:
                with self._shared().pipeline(transaction=False) as pipe:
                    for comment_id, revision in pairs:
                        pipe.set(_key(comment_id, revision), 1, ex=REMEMBER_SECONDS)
                    pipe.execute()
            except (redis.RedisError, OSError):
                self._shared_failed()

    def is_settled(self, comment_id: int, revision: int) -> bool:
        if (comment_id, revision) in self._local:
            return True
        if not self._shared_usable():
            return False
        try:
            return bool(self._shared().exists(_key(comment_id, revision)))
        except (redis.RedisError, OSError):
            self._shared_failed()
            return False

    def _shared(self) -> redis.Redis:
        assert self._redis is not None
        return self._redis

    def _shared_usable(self) -> bool:
        return self._redis is not None and time.monotonic() >= self._redis_down_until

    def _shared_failed(self) -> None:
        log.warning("Redis unreachable; remembering decided work in this process only for now", exc_info=True)
        self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS


def _key(comment_id: int, revision: int) -> str:
    return f"{KEY_PREFIX}:{comment_id}:{revision}"
