"""The intake payload (DESIGN section 5), validated strictly: comment text is hostile input."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from moderation.intake import NewComment

MAX_BODY_CHARS = 20_000


def _storable(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and lone surrogates ("\ud800" in JSON) cannot be encoded.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError("must be valid Unicode (no lone surrogates)") from error
    return value


def _ip_address(value: str) -> str:
    if value:
        try:
            ipaddress.ip_address(value)
        except ValueError as error:
            raise ValueError("must be an IPv4 or IPv6 address") from error
    return value


def _nonblank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


Text = Annotated[str, AfterValidator(_storable)]
Identifier = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_storable), AfterValidator(_nonblank)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Article(Strict):
    id: Identifier
    url: Annotated[Text, Field(max_length=2000)] | None = None
    title: Annotated[Text, Field(max_length=500)] | None = None


class Author(Strict):
    name: Annotated[Text, Field(max_length=200)] | None = None
    email: Annotated[Text, Field(max_length=320)] | None = None
    url: Annotated[Text, Field(max_length=2000)] | None = None
    ip: Annotated[Text, Field(max_length=45), AfterValidator(_ip_address)] | None = None
    user_agent: Annotated[Text, Field(max_length=1000)] | None = None


class CommentData(Strict):
    comment_id: Identifier
    site: Annotated[str, Field(min_length=1, max_length=100)]
    article: Article
    author: Author = Author()
    body: Annotated[Text, Field(min_length=1, max_length=MAX_BODY_CHARS), AfterValidator(_nonblank)]
    parent_id: Identifier | None = None
    # Timestamps arrive as JSON strings, which strict mode would refuse to parse into datetimes.
    created_at: Annotated[AwareDatetime, Field(strict=False)] | None = None

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


class CommentCreated(Strict):
    type: Literal["comment.created"]
    data: CommentData


def field_errors(error: ValidationError) -> list[dict[str, str]]:
    """One entry per bad field, named by its dotted path in the payload."""
    return [
        {"field": ".".join(str(part) for part in item["loc"]) or "(body)", "message": item["msg"]}
        for item in error.errors(include_url=False, include_context=False, include_input=False)
    ]
