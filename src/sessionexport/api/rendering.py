"""JSON responses rendered with orjson."""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.responses import JSONResponse


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except orjson.JSONEncodeError:
            # Strings decoded from a client's JSON may hold lone surrogates (valid JSON escapes,
            # invalid UTF-8); echoing them back must not fail, so escape them as JSON does.
            return json.dumps(content, separators=(",", ":")).encode()
