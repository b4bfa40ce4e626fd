"""The bare reference's web side: a minimal Flask app that inserts the comment row and publishes one task.

No signature check, no validation beyond reading the JSON, no deduplication, no outbox: the plain
per-comment design the service is measured against (DESIGN section 7). Served by gunicorn with the same
settings as ``moderation web`` (server/gunicorn_app.py).

    DATABASE_URL=... REDIS_URL=... python -m bench.reference.app --port 8100 --workers 2
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime

from celery import Celery
from flask import Flask, Response, jsonify, request
from sqlalchemy import text

from bench.reference.schema import INSERT_COMMENT, TASK_NAME, TASK_QUEUE
from models.db import create_db_engine
from server import gunicorn_app


def create_reference_app() -> Flask:
    engine = create_db_engine(os.environ["DATABASE_URL"])
    celery = Celery("reference", broker=os.environ["REDIS_URL"])
    app = Flask(__name__)

    @app.post("/webhooks/comments")
    def receive_comment() -> tuple[Response, int]:
        data = (request.get_json() or {})["data"]
        author = data.get("author") or {}
        with engine.begin() as connection:
            comment_id = connection.execute(
                text(INSERT_COMMENT),
                {
                    "external_id": data["comment_id"],
                    "article_id": data["article"]["id"],
                    "body": data["body"],
                    "author_name": author.get("name"),
                    "author_email": author.get("email"),
                    "author_url": author.get("url"),
                    "author_ip": author.get("ip"),
                    "received_at": datetime.now(UTC),
                },
            ).scalar_one()
        celery.send_task(TASK_NAME, args=[comment_id], queue=TASK_QUEUE)
        return jsonify(id=comment_id, status="pending"), 202

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    # The same options as `moderation web` (only the process name differs).
    gunicorn_app.run(gunicorn_app.options("127.0.0.1", args.port, args.workers, "reference-web"), create_reference_app)


if __name__ == "__main__":
    main()
