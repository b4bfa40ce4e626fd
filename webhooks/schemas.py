"""The intake payload (DESIGN section 5), validated strictly: comment text is hostile input."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from models.text import visible
from moderation.intake import (
    MAX_AUTHOR_NAME_CHARS,
    MAX_BODY_CHARS,
    MAX_EMAIL_CHARS,
    MAX_URL_CHARS,
    NewComment,
    storable,
)


def _ip_address(value: str) -> str:
    """The address in one spelling (IPv6 compressed and lower-case, an IPv4-mapped one as IPv4), so that the
    rate limit and the author's history count "2001:DB8::5" and "2001:db8:0:0:0:0:0:5" as one author."""
    if not value:
        return value
    try:
        address = ipaddress.ip_address(value)
    except ValueError as error:
        raise ValueError("must be an IPv4 or IPv6 address") from error
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        # "%eth0" names an interface of the site's host, and each spelling of it would be another author
        raise ValueError("must be an IPv4 or IPv6 address without a zone (%...)")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
# Site clocks drift, but a version dated far ahead would make every later real edit look stale.
FUTURE_TOLERANCE = timedelta(days=1)


def _plausible_time(value: datetime) -> datetime:
    """In UTC, between 1970 and a day from now (year 1 or 9999 in another zone cannot even be converted)."""
    try:
        moment = value.astimezone(UTC)
    except OverflowError as error:
        raise ValueError("must be between 1970 and one day from now") from error
    if not EARLIEST_TIME <= moment <= datetime.now(UTC) + FUTURE_TOLERANCE:
        raise ValueError("must be between 1970 and one day from now")
    return moment


# A date and a time of day, then whatever pydantic's ISO 8601 parser reads after them (a zone is required by
# AwareDatetime): the shape is checked first because lax parsing, needed for JSON strings, would also take a
# number, or a string of digits, as seconds (or milliseconds) since 1970.
ISO_DATE_TIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")


def _date_time_text(value: object) -> object:
    if not isinstance(value, str) or not ISO_DATE_TIME_RE.match(value):
        raise ValueError("must be an ISO 8601 date-time string")
    return value


def _nonblank(value: str) -> str:
    """Blank also when all it holds is drawn as nothing (zero-width spaces, soft hyphens): readers see nothing."""
    if not visible(value).strip():
        raise ValueError("must not be blank")
    return value


Text = Annotated[str, AfterValidator(storable)]
MAX_ID_CHARS = 200  # the site's comment and article ids (``comments.external_id`` is 200 characters)
Identifier = Annotated[
    str, Field(min_length=1, max_length=MAX_ID_CHARS), AfterValidator(storable), AfterValidator(_nonblank)
]
# Timestamps arrive as JSON strings, which strict mode would refuse to parse into datetimes.
SiteTime = Annotated[
    AwareDatetime, Field(strict=False), BeforeValidator(_date_time_text), AfterValidator(_plausible_time)
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Article(Strict):
    id: Identifier
    url: Annotated[Text, Field(max_length=MAX_URL_CHARS)] | None = None
    title: Annotated[Text, Field(max_length=500)] | None = None


# The author's personal data: field ``x`` is stored in column ``author_x`` of ``comments``, one of the columns
# declared personal in ``models.entities.PERSONAL_COLUMNS`` (tests/test_privacy.py fails for a field without one,
# or one ``as_new_comment`` does not carry there). A comment, not a docstring: that would be the OpenAPI description.
class Author(Strict):
    name: Annotated[Text, Field(max_length=MAX_AUTHOR_NAME_CHARS)] | None = None
    email: Annotated[Text, Field(max_length=MAX_EMAIL_CHARS)] | None = None
    url: Annotated[Text, Field(max_length=MAX_URL_CHARS)] | None = None
    ip: Annotated[Text, Field(max_length=45), AfterValidator(_ip_address)] | None = None
    user_agent: Annotated[Text, Field(max_length=1000)] | None = None


class CommentData(Strict):
    comment_id: Identifier
    site: Annotated[str, Field(min_length=1, max_length=100)]
    article: Article
    author: Author = Author()
    body: Annotated[Text, Field(min_length=1, max_length=MAX_BODY_CHARS), AfterValidator(_nonblank)]
    parent_id: Identifier | None = None
    created_at: SiteTime | None = None

    def as_new_comment(self) -> NewComment:
        return NewComment(
            external_id=self.comment_id,
            article_id=self.article.id,
            body=self.body,
            article_url=self.article.url,
            article_title=self.article.title,
            author_name=self.author.name,
            author_email=self.author.email,
            author_url=self.author.url or None,
            author_ip=self.author.ip or None,
            author_user_agent=self.author.user_agent,
            parent_id=self.parent_id,
            created_at=self.created_at,
        )


class UpdatedData(CommentData):
    """The whole comment as it is now, plus when the site changed it (orders out-of-order deliveries)."""

    updated_at: SiteTime

    def as_new_comment(self) -> NewComment:
        return replace(super().as_new_comment(), updated_at=self.updated_at)


class DeletedData(Strict):
    comment_id: Identifier
    site: Annotated[str, Field(min_length=1, max_length=100)]
    deleted_at: SiteTime


class Envelope(Strict):
    """The Standard Webhooks payload format, ``{type, timestamp, data}``, as the service's callbacks send it.

    ``timestamp`` (when the sender made the event) is accepted and ignored: the site's own times in
    ``data`` order the versions of a comment, and the signed ``webhook-timestamp`` header guards replays.
    """

    timestamp: Annotated[AwareDatetime, Field(strict=False), BeforeValidator(_date_time_text)] | None = None


class CommentCreated(Envelope):
    type: Literal["comment.created"]
    data: CommentData


class CommentUpdated(Envelope):
    type: Literal["comment.updated"]
    data: UpdatedData


class CommentDeleted(Envelope):
    type: Literal["comment.deleted"]
    data: DeletedData


MAX_ERASURE_IDS = 1000  # keeps one request's lock set, and its SQL, small; a site sends more in further requests


class ErasureRequest(Strict):
    """``POST /api/authors/erase``: whose personal data the site wants gone, by exactly one of two forms.

    ``email``: every comment of that author on the site. ``comment_ids``: those comments (the site's own ids,
    as sent at intake), for comments the site sent without an e-mail.
    """

    email: Annotated[Text, Field(min_length=3, max_length=MAX_EMAIL_CHARS), AfterValidator(_nonblank)] | None = Field(
        default=None, description="The author's e-mail (case does not matter); or send `comment_ids`."
    )
    comment_ids: Annotated[list[Identifier], Field(min_length=1, max_length=MAX_ERASURE_IDS)] | None = Field(
        default=None, description="The site's own comment ids, as sent at intake; or send `email`."
    )

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        if self.email is not None and self.comment_ids is not None:
            raise _field_error("comment_ids", "send either email or comment_ids, not both")
        if self.email is None and self.comment_ids is None:
            raise _field_error("email", "required: send either email or comment_ids")
        return self


def _field_error(field: str, message: str) -> ValidationError:
    """An error naming ``field``: a model validator's own errors name no field, and the API answers with one."""
    detail = InitErrorDetails(type=PydanticCustomError("one_form", message), loc=(field,), input=None)
    return ValidationError.from_exception_data("ErasureRequest", [detail])


EVENT_TYPES = ("comment.created", "comment.updated", "comment.deleted")


class CommentEvent(RootModel[Annotated[CommentCreated | CommentUpdated | CommentDeleted, Field(discriminator="type")]]):
    """Any intake event, chosen by its ``type``."""

    model_config = ConfigDict(strict=True, frozen=True)


def field_errors(error: ValidationError) -> list[dict[str, str]]:
    """One entry per bad field, named by its dotted path in the payload (the input itself is never echoed)."""
    return [
        {"field": _field_name(item["loc"], item["type"]), "message": _message(item)}
        for item in error.errors(include_url=False)
    ]


# Length checks after a validator (``Text``) are pydantic's generic ones, which count "items".
TOO_SHORT = {"string_too_short", "too_short"}
TOO_LONG = {"string_too_long", "too_long"}
# Pydantic's own words name its discriminator and echo the input; these name the types a sender may use.
EVENT_TYPE_MESSAGES = {
    "union_tag_not_found": f"required: one of {', '.join(EVENT_TYPES)}",
    "union_tag_invalid": f"must be one of {', '.join(EVENT_TYPES)}",
}


def _message(item: ErrorDetails) -> str:
    """Pydantic's message, in the words of the rest of the API when a string or a list had a bad length or
    the event type is missing or unknown."""
    kind, limits, value = item["type"], item.get("ctx") or {}, item["input"]
    if kind in EVENT_TYPE_MESSAGES:
        return EVENT_TYPE_MESSAGES[kind]
    if isinstance(value, str | list):
        verb, unit = ("be", "characters") if isinstance(value, str) else ("have", "items")
        if kind in TOO_SHORT and limits.get("min_length") == 1:
            return "must not be empty"
        if kind in TOO_SHORT and "min_length" in limits:
            return f"must {verb} at least {limits['min_length']} {unit}"
        if kind in TOO_LONG and "max_length" in limits:
            return f"must {verb} at most {limits['max_length']} {unit}"
    return item["msg"].removeprefix("Value error, ")


def _field_name(loc: tuple[int | str, ...], kind: str) -> str:
    if kind in EVENT_TYPE_MESSAGES:
        return "type"
    if loc and loc[0] in EVENT_TYPES:
        loc = loc[1:]  # the union's branch (the event type) is not a field of the payload
    return ".".join(str(part) for part in loc) or "(body)"
