"""The media types sessions travel as, and the media type a ``Content-Type`` header names."""

JSON = "application/json"
NDJSON = "application/x-ndjson"


def media_type(content_type: str) -> str:
    """``Application/JSON; charset=utf-8`` → ``application/json``: lower case, no parameters."""
    return content_type.split(";", 1)[0].strip().lower()
