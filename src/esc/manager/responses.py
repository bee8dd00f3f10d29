"""The answers every route of the northbound API documents besides its own (OpenAPI): what
the layers in front of the routes answer (the active gate 503, the body limit 413), validation
(422, the API's own shape, not FastAPI's) and the database (503). Authentication's answers (401,
429, and 403 on writes only) are added by ``auth.document_auth``, next to the rules that give
them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from esc.manager.models import ErrorAnswer, Transaction, UnavailableAnswer, ValidationErrorAnswer

Responses = dict[int | str, dict[str, Any]]
_HEADER = {"schema": {"type": "string"}, "required": True}
# What every route may answer besides its own: the layers in front of the routes (the active
# gate, authentication, the body limit) and the database.
_ALWAYS: Responses = {
    413: {"model": ErrorAnswer, "description": "The body is larger than max_body_bytes."},
    422: {"model": ValidationErrorAnswer, "description": "Invalid input; `field` names it."},
    503: {
        "model": UnavailableAnswer,
        "description": "Not the primary (see `primary_url`), or the database is unavailable.",
        "headers": {"Retry-After": _HEADER | {"description": "Seconds."}},
    },
}
NOT_FOUND: Responses = {404: {"model": ErrorAnswer, "description": "No such resource."}}
_CONFLICT: Responses = {
    409: {
        "model": ErrorAnswer,
        "description": "The transaction id was used for a different request, or the resource "
        "exists or is busy.",
    }
}


def ok(model: type[BaseModel], description: str = "One page.", *extra: Responses) -> Responses:
    """The 200 answer's schema and the errors the route may answer, for the OpenAPI document
    (the answer is not re-validated)."""
    out: Responses = {200: {"model": model, "description": description}}
    out |= _ALWAYS
    for more in extra:
        out |= more
    return out


def accepted(*extra: Responses) -> Responses:
    """A write's answers: 202 with the transaction, and its errors."""
    out: Responses = (
        {
            202: {
                "model": Transaction,
                "description": "Accepted: the transaction (a replay: the original's answer).",
                "headers": {"ESC-Transaction-Id": _HEADER | {"description": "Its id."}},
            }
        }
        | _ALWAYS
        | _CONFLICT
    )
    for more in extra:
        out |= more
    return out
