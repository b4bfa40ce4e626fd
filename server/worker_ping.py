"""The worker container's health check: ``python -m server.worker_ping`` asks this host's Celery node, through
the broker, to answer a ping, and exits 0 when it does, 1 when it does not (or the broker cannot be reached).

``celery -A server.celery_entry inspect ping`` asked the same, but first loaded the whole app through Celery's
command line (scikit-learn, SciPy, Flask, the ORM): 3.5 s on an idle two-core host, and a check measured at
20.7 s on a busy one, against its 30 s timeout. This loads Celery, kombu's Redis transport and the settings.
"""

from __future__ import annotations

import argparse
import sys

from celery import Celery
from celery.utils.nodenames import default_nodename, host_format
from kombu.exceptions import OperationalError
from pydantic import ValidationError

from server.settings import Settings, describe_invalid_settings
from workers.broker import transport_for

# Within the check's own timeout (docker-compose.yml): Redis down is said in one line, not by being killed.
CONNECT_TIMEOUT_SECONDS = 2.0


def this_node(name: str | None = None) -> str:
    """The node name a worker started with ``--hostname name`` (none: celery@<this host>) goes by, as Celery
    works it out: in a container the host is the container's, so each replica pings itself."""
    return str(host_format(default_nodename(name)))


def answers(broker_url: str, node: str, timeout: float) -> bool:
    """Whether ``node`` answers a ping within ``timeout`` seconds. Raises kombu's OperationalError (or an
    OSError) when the broker cannot be reached."""
    app = Celery("worker-ping", set_as_current=False)
    app.conf.update(
        broker_url=broker_url,
        broker_transport=transport_for(broker_url),  # the worker's own transport: the same pidbox keys
        broker_transport_options={
            "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "socket_timeout": max(CONNECT_TIMEOUT_SECONDS, timeout),
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.1,
            "interval_max": 0.2,
        },
        accept_content=["json"],
    )
    try:
        # Broadcast on the broker, but named: only that node replies, and the call returns on its reply.
        replies = app.control.ping(destination=[node], timeout=timeout)
    finally:
        app.close()
    return any(node in reply for reply in replies)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m server.worker_ping", description="Exit 0 when this host's Celery worker answers a ping."
    )
    parser.add_argument("--node", default=None, help="the worker's --hostname, if it was given one")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answer")
    args = parser.parse_args(argv)
    node = this_node(args.node)
    try:
        broker_url = Settings().broker_url
    except ValidationError as error:
        print(describe_invalid_settings(error), file=sys.stderr)
        return 1
    try:
        answered = answers(broker_url, node, args.timeout)
    except (OperationalError, OSError) as error:
        print(f"cannot reach the broker: {error}", file=sys.stderr)
        return 1
    if not answered:
        print(f"{node} did not answer within {args.timeout:g} s", file=sys.stderr)
        return 1
    print(f"{node} answered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
