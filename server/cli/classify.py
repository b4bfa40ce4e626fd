"""`classify`: JSON lines on stdin scored by the active model, one answer per line, batched as input arrives."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from select import select as fds_ready
from typing import Any

import click

from models.text import visible
from moderation.classifier import ModerationModel
from moderation.explanations import explanation_worth_reading
from moderation.features import CommentText
from moderation.intake import (
    MAX_AUTHOR_NAME_CHARS,
    MAX_BODY_CHARS,
    MAX_EMAIL_CHARS,
    MAX_URL_CHARS,
    storable,
    within_limit,
)
from moderation.policy import Signals, Thresholds, decide
from server.cli import common


@click.command()
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Most lines scored together; fewer whenever no more input is waiting.",
)
@click.option("--explain", is_flag=True, help="Add the words that pushed each score.")
@click.pass_context
def classify(ctx: click.Context, batch_size: int, explain: bool) -> None:
    """Read JSONL comments on stdin ({"body", "author"?, "email"?, "url"?, "article"?}); write one JSON line each.

    Every input line gets exactly one output line, in order, carrying its 1-based "line" number; a line
    that cannot be classified (blank, not JSON, text intake would refuse) gets {"line", "error"}.
    """
    model = common.active_model(common.settings(ctx))
    thresholds = Thresholds.of_card(model.card)
    for batch in _numbered(_line_batches(_StdinChunks(), batch_size)):
        _write("".join(_answers(model, thresholds, batch, explain)))


def _write(answers: str) -> None:
    """Write and flush (a script that waits for its answers gets them now, not at the next batch)."""
    try:
        sys.stdout.write(answers)
        sys.stdout.flush()
    except BrokenPipeError:
        raise  # the reader went away (`| head`): click ends the command quietly, with status 1
    except OSError as error:  # a full disk, a device that refuses writes
        # What could not be written stays in the buffer; Python would try it again at exit, and fail with a
        # traceback of its own. The answers are lost either way: drop them, and say so once.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stands in for stdout until the process ends
        raise click.ClickException(f"cannot write the answers to stdout: {error.strerror or error}") from None


READ_CHUNK_BYTES = 1 << 16
# Longer than any line intake's limits allow (a 20,000-character body written as JSON escapes is under
# 250 KB): such a line is answered with an error and its bytes are dropped as they arrive, not kept.
MAX_LINE_BYTES = 1 << 20
# A batch stops growing past this many bytes of input, however many lines fit in --batch-size.
MAX_BATCH_BYTES = 8 << 20


class _StdinChunks:
    """Stdin's bytes as they arrive: each read returns what is there, waiting only when nothing is."""

    def __init__(self) -> None:
        self._stream = sys.stdin.buffer
        try:
            self._fd: int | None = self._stream.fileno()
        except (OSError, ValueError):  # io.UnsupportedOperation: an in-memory stream, all there already
            self._fd = None

    def read(self) -> bytes:
        """Up to READ_CHUNK_BYTES; empty at the end of the input."""
        if self._fd is None:
            return self._stream.read(READ_CHUNK_BYTES)
        # os.read, not the buffered stream: a buffered read would wait to fill its buffer.
        return os.read(self._fd, READ_CHUNK_BYTES)

    def more_ready(self) -> bool:
        """Whether a read would return at once (with data, or at the end) rather than wait for the writer."""
        if self._fd is None:
            return True
        readable, _, _ = fds_ready([self._fd], [], [], 0)
        return bool(readable)


def _line_batches(chunks: _StdinChunks, size: int) -> Iterator[list[bytes | None]]:
    """Input lines, without their newline, in batches of at most ``size``; None for a line over MAX_LINE_BYTES.

    Reading goes on while more input is ready (a fast pipe fills whole batches); when none is, the lines
    already read go out as they are: a writer waiting for an answer before it writes again is never kept
    waiting for input that only its answer would bring. Only a line's own missing end is waited for.
    """
    lines: list[bytes | None] = []
    batch_bytes = 0
    unfinished = bytearray()  # the start of a line whose newline has not arrived yet
    overlong = False  # that line is past MAX_LINE_BYTES: its bytes are dropped until its newline
    at_end = False
    while lines or not at_end:
        while not at_end and len(lines) < size and batch_bytes < MAX_BATCH_BYTES and (not lines or chunks.more_ready()):
            chunk = chunks.read()
            if not chunk:
                at_end = True
                if unfinished or overlong:
                    lines.append(None if overlong else bytes(unfinished))  # the last line, without a newline
                break
            last_newline = chunk.rfind(b"\n")
            if last_newline < 0:
                if not overlong:
                    unfinished += chunk  # only the new chunk is searched: a long line stays linear to read
                    if len(unfinished) > MAX_LINE_BYTES:
                        overlong, unfinished = True, bytearray()
                continue
            # A chunk is smaller than MAX_LINE_BYTES: only the line it finishes can be over it.
            first, *whole = chunk[:last_newline].split(b"\n")
            overlong = overlong or len(unfinished) + len(first) > MAX_LINE_BYTES
            lines.append(None if overlong else bytes(unfinished + first))
            lines += whole
            batch_bytes += last_newline + 1 + (0 if overlong else len(unfinished))
            overlong, unfinished = False, bytearray(chunk[last_newline + 1 :])
        if lines:
            yield lines[:size]
            del lines[:size]
            batch_bytes = sum(len(line) for line in lines if line is not None)


UTF8_BOM = "\ufeff".encode()


def _numbered(batches: Iterable[list[bytes | None]]) -> Iterator[list[tuple[int, CommentText | str]]]:
    """Each line parsed, with its 1-based number; a line that cannot be read is an error on that line."""
    number = 0
    for raw_lines in batches:
        batch: list[tuple[int, CommentText | str]] = []
        for raw in raw_lines:
            number += 1
            if number == 1 and raw is not None:
                raw = raw.removeprefix(UTF8_BOM)  # a file saved by Windows tools begins with one
            batch.append((number, _read_line(raw)))
        yield batch


def _read_line(raw: bytes | None) -> CommentText | str:
    if raw is None:
        return f"line longer than {MAX_LINE_BYTES} bytes, more than any comment intake takes"
    if not raw.strip():
        # Reported, not skipped: the answers must stay one per input line for scripts to match them up.
        return "blank line: each line must be a JSON object with a string 'body'"
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"not UTF-8: {error}"
    return _parse_comment(line)


def _answers(
    model: ModerationModel, thresholds: Thresholds, batch: list[tuple[int, CommentText | str]], explain: bool
) -> list[str]:
    """One JSON line per input line of the batch, in order: the decision, or what was wrong with the line."""
    good = [(n, c) for n, c in batch if isinstance(c, CommentText)]
    scores = dict(zip([n for n, _ in good], model.score_many([c for _, c in good]), strict=True))
    answers = []
    for number, item in batch:
        if not isinstance(item, CommentText):
            answers.append(json.dumps({"line": number, "error": item}) + "\n")
            continue
        score = scores[number]
        verdict = decide(score, thresholds, Signals.of_text(item.body))
        out: dict[str, Any] = {
            "line": number,
            **score.as_dict(),
            "decision": verdict.outcome.value,
            "reasons": verdict.reasons,
            "model_version": model.version,
        }
        if explain:
            # The words of a score under half its hold line are filler ("the", "is"): left out, as the
            # dashboard leaves them out, with every label kept so the line's shape does not change.
            out["explanation"] = explanation_worth_reading(model.explain(item), score.as_dict(), thresholds)
        answers.append(json.dumps(out, ensure_ascii=False) + "\n")
    return answers


# Intake's limits on the same fields (the webhook's body and author name, e-mail and URL). `article` has
# none: scripts name the article as they like (its id or its URL), and intake limits those differently.
CLASSIFY_FIELD_LIMITS = {
    "body": MAX_BODY_CHARS,
    "author": MAX_AUTHOR_NAME_CHARS,
    "email": MAX_EMAIL_CHARS,
    "url": MAX_URL_CHARS,
}


def _parse_comment(line: str) -> CommentText | str:
    try:
        row = json.loads(line)
    except ValueError as error:
        return f"not JSON: {error}"
    except RecursionError:
        return "not JSON this program reads: nested too deeply"
    if not isinstance(row, dict) or not isinstance(row.get("body"), str):
        return "each line must be a JSON object with a string 'body'"
    if not visible(row["body"]).strip():
        return "'body' must not be blank"  # as at intake: there is nothing to classify
    fields = {}
    for name in ("author", "email", "url", "article"):
        value = row.get(name)
        if value is not None and not isinstance(value, str):
            return f"'{name}' must be a string"
        fields[name] = value or ""
    for name, value in [("body", row["body"]), *fields.items()]:
        try:
            # The checks intake makes: JSON can spell a lone surrogate, which cannot be encoded, and a
            # text intake would refuse as too long must not get a score a script could act on.
            storable(value)
            if name in CLASSIFY_FIELD_LIMITS:
                within_limit(value, CLASSIFY_FIELD_LIMITS[name])
        except ValueError as error:
            return f"'{name}' {error}"
    return CommentText(body=row["body"], **fields)
