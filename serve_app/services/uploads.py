"""Uploaded files → documents: the type from the file name (else the declared content type), the size bounded while
reading, the text extracted off the event loop (a big PDF takes seconds)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from serve_app.errors import EduserveError, ErrorCode
from serve_app.services.chunking import ExtractionError, extract_text
from serve_app.services.documents import DocumentInput, extraction_error

UPLOAD_TYPES = {".pdf": "application/pdf", ".md": "text/markdown", ".markdown": "text/markdown", ".txt": "text/plain"}


async def document_from_upload(filename: str | None, content_type: str | None,
                               read: Callable[[int], Awaitable[bytes]], limit: int) -> DocumentInput:
    """One uploaded file as a document; `read(n)` reads at most n bytes of it. An unsupported type is a 415, a file
    over `limit` bytes a 413, a file whose text cannot be extracted a 422."""
    name = filename or "document"
    stem, dot, extension = name.rpartition(".")
    mime_type = (UPLOAD_TYPES.get(f".{extension.lower()}") if dot else None) or content_type or ""
    if mime_type not in UPLOAD_TYPES.values():
        raise EduserveError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"{name}: upload .pdf, .md or .txt files")
    data = await read(limit + 1)
    if len(data) > limit:
        raise EduserveError(ErrorCode.PAYLOAD_TOO_LARGE, f"{name}: larger than {limit} bytes")
    try:
        text = await asyncio.to_thread(extract_text, data, mime_type)
    except ExtractionError as exc:
        raise extraction_error(exc) from None
    return DocumentInput(stem if dot else name, text, mime_type, source=name)
