"""kombu's Redis transport, keeping one Redis client per channel instead of building one per command.

kombu builds a new ``redis.Redis`` object for each command it sends outside its polling loop: each
publish, each acknowledgement. The client holds no connection (it borrows one from the channel's pool for
each command), but building it copies its table of a few hundred response callbacks, which was about 6%
of a web process's CPU per webhook. The client is safe to share between threads, like the pool it reads
from, so one per channel (rebuilt when the channel gets a new pool) sends the same commands for less.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client: tuple[Any, Any] | None = None  # (the pool it was built on, the client)

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the polling loop's client keeps state of its own: kombu's way
            return super()._create_client(asynchronous=True)  # type: ignore[no-untyped-call]
        pool = self.pool
        if self._shared_client is None or self._shared_client[0] is not pool:
            self._shared_client = (pool, super()._create_client())  # type: ignore[no-untyped-call]
        return self._shared_client[1]


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"


def transport_for(broker_url: str) -> str | None:
    """This module's transport for a plain ``redis://`` URL; None (the scheme decides) for any other.

    Not for ``rediss://``: kombu turns TLS on from the transport's name, and a transport given by path
    would connect in the clear.
    """
    return TRANSPORT if urlsplit(broker_url).scheme == "redis" else None
