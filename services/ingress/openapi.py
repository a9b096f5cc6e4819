"""/openapi.json: an OpenAPI 3.1 document built from the route registry and its pydantic models."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from openapi_pydantic import OpenAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from services.ingress.http import ROUTES

_ERROR_TEXT = {
    400: "Invalid request: the message names the field",
    401: "Missing, invalid or revoked API key",
    403: "The key lacks the scope",
    404: "Not found (or owned by another organization)",
    409: "Conflict",
    413: "The body, or the message it makes, is larger than the limit the message names",
    429: "Every recipient was rejected, or a rate limit was hit",
    503: "With Retry-After (`overloaded`, `unavailable`): nothing was done, retry after it. Without it "
    "(`outcome_unknown`, sends only): the send may have been accepted; retry only with the same Idempotency-Key",
}

IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "The same key with the same request replays the first answer (`Idempotent-Replayed: true`); "
    "with another request it is 409. Keys live 24 hours, per organization.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"},
}


REF = "#/components/schemas/{model}"


def _schemas(classes: set[type[BaseModel]]) -> tuple[dict[type, dict[str, Any]], dict[str, Any]]:
    """Each model's `$ref` and the components they point to, made together: models of one name in two
    dialects (`Message`, `Webhook`, ...) get distinct components, and each reference names its own."""
    refs, top = models_json_schema(
        [(c, "validation") for c in sorted(classes, key=lambda c: (c.__module__, c.__qualname__))],
        by_alias=True, ref_template=REF,
    )  # fmt: skip
    return {c: ref for (c, _), ref in refs.items()}, top.get("$defs", {})


@cache
def openapi_document() -> dict[str, Any]:
    used = {
        c
        for spec in ROUTES
        for c in (spec.response, spec.body, spec.error_body, *spec.answers.values())
        if isinstance(c, type) and issubclass(c, BaseModel)
    }
    refs, components = _schemas(used)

    def _json(schema_class: type) -> dict[str, Any]:
        return {"application/json": {"schema": refs[schema_class]}}

    paths: dict[str, dict[str, Any]] = {}
    for spec in ROUTES:
        op: dict[str, Any] = {
            "summary": spec.summary,
            "tags": [spec.tag],
            "operationId": spec.handler.__name__ + spec.operation_suffix,
            "parameters": [
                *(
                    {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                    for name in re.findall(r"{(\w+)}", spec.path)
                ),
                *([IDEMPOTENCY_KEY] if spec.idempotent else []),
            ],
            "responses": {
                str(spec.status): {
                    "description": "Success",
                    **({"content": _json(spec.response)} if spec.response else {}),
                }
            },
        }
        if spec.scope is not None:
            op["security"] = [{"bearer": []}]
            op["description"] = f"Requires an API key with the `{spec.scope}` scope (`admin` implies all)."
        if spec.body is not None:
            op["requestBody"] = {"required": not spec.body_optional, "content": _json(spec.body)}
        body_errors = (400, 413) if spec.body is not None or spec.idempotent else ()
        for code in sorted({*spec.errors, *spec.answers, *body_errors, *((401, 403) if spec.scope else ())}):
            op["responses"][str(code)] = {
                "description": "Success" if code < 300 else _ERROR_TEXT.get(code, "Error"),
                "content": _json(spec.answers.get(code, spec.error_body)),
            }
        paths.setdefault(spec.path, {})[spec.method.lower()] = op
    doc = OpenAPI.model_validate(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "sendstream",
                "version": "0.1.0",
                "description": "Email API for agents and sequencers.",
            },
            "paths": paths,
            "components": {
                "schemas": components,
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            },
        }
    )
    return doc.model_dump(mode="json", by_alias=True, exclude_none=True)
