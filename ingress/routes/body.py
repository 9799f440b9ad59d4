"""Reading a route's JSON body into its pydantic model, or refusing it with OpenAI's 400."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from ingress import json_body
from ingress.errors import invalid

T = TypeVar("T", bound=BaseModel)


async def read_body(request: Request, model: type[T]) -> tuple[T, dict[str, Any]]:
    raw = await request.body()
    try:
        body = await json_body.parse_off_loop(raw)
    except json_body.BadJson as exc:
        raise invalid(str(exc), code="invalid_json") from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.", code="invalid_json")
    try:
        return model.model_validate(body), body
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        text = str(first["msg"]).removeprefix("Value error, ")
        message = f"{param}: {text}" if param else text
        raise invalid(message, param=param) from None
