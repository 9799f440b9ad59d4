"""Reading a ``multipart/form-data`` body (``POST /v1/files``) with the standard library.

Starlette's own form parser needs the ``python-multipart`` package, which this project does
not depend on; an upload is small enough (OpenAI caps a batch file at 200 MB) to parse
in memory with :mod:`email`, which implements MIME multipart.
"""

from __future__ import annotations

import email.parser
import email.policy
from dataclasses import dataclass


class FormError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    data: bytes
    filename: str | None = None
    content_type: str = "application/octet-stream"


def parse(content_type: str, body: bytes) -> dict[str, Part]:
    """The parts of a form by field name (the first part wins for a repeated name)."""
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in (
            content_type.lower()):
        raise FormError("Send the file as multipart/form-data.")
    header = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + body)
    if not message.is_multipart():
        raise FormError("The multipart/form-data body could not be read.")
    if message.defects:  # e.g. no closing boundary: the upload was cut short
        found = ", ".join(sorted({type(d).__name__.removesuffix("Defect")
                                  for d in message.defects}))
        raise FormError(f"The multipart/form-data body is truncated or malformed ({found}); "
                        "send the whole form again.")
    parts: dict[str, Part] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or name in parts:
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        parts[name] = Part(name=name, data=data, filename=filename,
                           content_type=part.get_content_type())
    return parts
