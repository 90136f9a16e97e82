"""Errors of the HTTP service base (agentkeys.service).

AgentkeysError
└── ServiceError
    ├── BadRequest              400  bad_request
    │   ├── MalformedJson       400  malformed_json
    │   ├── MissingField        400  missing_field
    │   ├── UnknownField        400  unknown_field
    │   └── WrongType           400  wrong_type
    ├── Unauthenticated         401  unauthenticated
    ├── Forbidden               403  forbidden
    ├── NotFound                404  not_found
    ├── MethodNotAllowed        405  method_not_allowed
    ├── BodyTooLarge            413  body_too_large
    ├── UnsupportedMediaType    415  unsupported_media_type
    ├── ServiceUnavailable      503  service_unavailable
    └── RouteTableError         500  route_table_error (start-up)
"""

from __future__ import annotations

from typing import ClassVar

from agentkeys.errors import AgentkeysError

__all__ = [
    "BadRequest",
    "BodyTooLarge",
    "Forbidden",
    "MalformedJson",
    "MethodNotAllowed",
    "MissingField",
    "NotFound",
    "RouteTableError",
    "ServiceError",
    "ServiceUnavailable",
    "Unauthenticated",
    "UnknownField",
    "UnsupportedMediaType",
    "WrongType",
]


class ServiceError(AgentkeysError):
    """Base of errors raised by the service base itself."""


class BadRequest(ServiceError):
    """The request is not acceptable as sent."""

    error: ClassVar[str] = "bad_request"
    status: ClassVar[int] = 400


class MalformedJson(BadRequest):
    """The body is not a single well-formed JSON object."""

    error: ClassVar[str] = "malformed_json"


class MissingField(BadRequest):
    """A required JSON field is absent."""

    error: ClassVar[str] = "missing_field"


class UnknownField(BadRequest):
    """The JSON object has a field the endpoint does not know."""

    error: ClassVar[str] = "unknown_field"


class WrongType(BadRequest):
    """A JSON field has the wrong type or an out-of-range value."""

    error: ClassVar[str] = "wrong_type"


class Unauthenticated(ServiceError):
    """The route needs an authenticated caller (a role certificate) and there is none."""

    error: ClassVar[str] = "unauthenticated"
    status: ClassVar[int] = 401


class Forbidden(ServiceError):
    """The caller's role may not use this route."""

    error: ClassVar[str] = "forbidden"
    status: ClassVar[int] = 403


class NotFound(ServiceError):
    """No such route."""

    error: ClassVar[str] = "not_found"
    status: ClassVar[int] = 404


class MethodNotAllowed(ServiceError):
    """The route exists but not for this method."""

    error: ClassVar[str] = "method_not_allowed"
    status: ClassVar[int] = 405


class BodyTooLarge(ServiceError):
    """The request body exceeds the service's bound."""

    error: ClassVar[str] = "body_too_large"
    status: ClassVar[int] = 413


class UnsupportedMediaType(ServiceError):
    """A body was sent that is not ``application/json``."""

    error: ClassVar[str] = "unsupported_media_type"
    status: ClassVar[int] = 415


class ServiceUnavailable(ServiceError):
    """The service cannot answer right now (e.g. still starting, dependency down)."""

    error: ClassVar[str] = "service_unavailable"
    status: ClassVar[int] = 503


class RouteTableError(ServiceError):
    """The route table and the authorization table disagree (raised at start-up)."""

    error: ClassVar[str] = "route_table_error"
