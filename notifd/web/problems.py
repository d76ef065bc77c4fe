# Errors over HTTP as RFC 9457 problem details: `application/problem+json` with the status,
# its title, and `detail` in the same words as notifctl's one-line errors.
from __future__ import annotations

import json
from http import HTTPStatus

CONTENT_TYPE = b"application/problem+json"


def phrase(status: int) -> str:
    """The status's standard reason phrase (twisted.web knows no phrase for 426)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_bytes(status: int, detail: str) -> bytes:
    return json.dumps(
        {"type": "about:blank", "title": phrase(status), "status": status, "detail": detail},
        ensure_ascii=False,
    ).encode("utf-8")


def problem(request, status: int, detail: str) -> bytes:
    """Set the status and content type of `request`; returns the body to send."""
    request.setResponseCode(status, phrase(status).encode("ascii"))
    request.setHeader(b"content-type", CONTENT_TYPE)
    if status == 401:
        request.setHeader(b"www-authenticate", b'Bearer realm="notifd"')
    return problem_bytes(status, detail)
