"""The API's OpenAPI document: every status a route really answers, with its schema; and a
schemathesis run in-process, without a database (every route that reaches it answers 503),
that checks the error answers conform to the document (status, content type, schema, headers).

The 2xx answers need a database: the lab's schemathesis run (tests/integration) checks those.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from esc.manager.api import build_api
from esc.manager.auth import Verdict
from esc.manager.callbacks import CallbackGuard

AUTH = ("admin", "s3cret")
BASIC = "Basic " + base64.b64encode(b"admin:s3cret").decode()


class FakeUsers:
    async def check(self, user: str, password: str, client: str | None = None) -> Verdict:
        return Verdict("admin") if (user, password) == AUTH else Verdict()


class DownPool:
    """A database that is down: every connection fails as psycopg's would."""

    def __init__(self) -> None:
        self.taken = 0

    def connection(self) -> Any:
        pool = self

        class Failing:
            async def __aenter__(self) -> None:
                pool.taken += 1
                raise psycopg.OperationalError("connection refused (the test's database)")

            async def __aexit__(self, *exc: object) -> None:
                return None

        return Failing()


@dataclass
class FakeManager:
    callbacks: CallbackGuard = field(default_factory=CallbackGuard)
    node_name: str = "esc-ha-0"
    serving: bool = True
    active: bool = True
    primary: str | None = "esc-ha-0"
    primary_url: str | None = None
    pool: DownPool = field(default_factory=DownPool)


MANAGER = FakeManager()
APP = build_api(MANAGER, auth=FakeUsers())  # type: ignore[arg-type]


def openapi() -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        transport = httpx.ASGITransport(app=APP)
        async with httpx.AsyncClient(transport=transport, base_url="https://api") as c:
            r = await c.get("/openapi.json", auth=AUTH)
            assert r.status_code == 200
            doc: dict[str, Any] = r.json()
            return doc

    return asyncio.run(go())


ROUTES = {
    ("post", "/v0/tenants"): {"202", "409"},
    ("get", "/v0/tenants"): {"200"},
    ("get", "/v0/tenants/{name}"): {"200", "404"},
    ("delete", "/v0/tenants/{name}"): {"202", "404", "409"},
    ("post", "/v0/deployments"): {"202", "409"},
    ("get", "/v0/deployments"): {"200"},
    ("get", "/v0/deployments/{deployment_id}"): {"200", "404"},
    ("delete", "/v0/deployments/{deployment_id}"): {"202", "404", "409"},
    ("get", "/v0/transactions"): {"200"},
    ("get", "/v0/transactions/{transaction_id}"): {"200", "404"},
}
EVERY_ROUTE = {"401", "413", "422", "429", "503"}
WRITES = {"403"}  # a read-only user's write


def test_every_route_documents_what_it_answers() -> None:
    doc = openapi()
    found = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert found == set(ROUTES)
    for (method, path), own in ROUTES.items():
        responses = doc["paths"][path][method]["responses"]
        expected = own | EVERY_ROUTE | (WRITES if method != "get" else set())
        assert set(responses) == expected, (method, path)
        schema = responses["422"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ValidationErrorAnswer"}
        assert "Retry-After" in responses["503"]["headers"]
        assert "WWW-Authenticate" in responses["401"]["headers"]
        if "202" in own:
            assert responses["202"]["headers"]["ESC-Transaction-Id"]["required"] is True
    # FastAPI's own 422 shape (detail: a list) is not what the API sends: not documented
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    errors = doc["components"]["schemas"]["ValidationErrorAnswer"]
    assert set(errors["required"]) == {"detail", "field"}


def test_the_answers_match_the_document_in_process() -> None:
    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=APP)
        async with httpx.AsyncClient(transport=transport, base_url="https://api") as c:
            return [
                await c.post("/v0/tenants", json={"name": "t", "x": 1}, auth=AUTH),
                await c.post("/v0/tenants", json={"name": "t"}, headers={"Callback": "x"}),
                await c.post("/v0/tenants", content=b"{" * (2 << 20), auth=AUTH),
                await c.get("/v0/tenants", auth=AUTH),
                await c.post(
                    "/v0/tenants",
                    content=b"8\xff\x1e",
                    headers={"Content-Type": "application/json"},
                    auth=AUTH,
                ),
            ]

    invalid, unauthenticated, too_large, down, undecodable = asyncio.run(go())
    assert invalid.status_code == 503  # the database dependency comes before the body
    assert unauthenticated.status_code == 401
    assert too_large.status_code == 413
    assert down.status_code == 503
    assert down.headers["Retry-After"] == "1"
    # not UTF-8: FastAPI's own answer would be a 400 the document does not declare
    assert undecodable.status_code == 422
    assert undecodable.json()["field"] == "body"


SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP, headers={"Authorization": BASIC})


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@SCHEMA.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_schemathesis_error_answers_conform(case: Any) -> None:
    case.call_and_validate(
        headers={"Authorization": BASIC},
        checks=[
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            response_headers_conformance,
        ],
    )
