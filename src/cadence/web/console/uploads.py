"""The console's one file upload (a CSV to import): the multipart body streamed straight to a file
in the data dir's imports folder, never held in memory.

Starlette's ``request.form()`` spools a file part to a ``SpooledTemporaryFile`` in the system's
temporary folder (often a tmpfs, that is memory) before the handler sees it; a 60 MB CSV of
1,000,000 rows would then be written twice. Here python-multipart's push parser (the one
Starlette uses) hands each piece of the file part to a file opened in ``imports/`` as it
arrives, and the few small fields (the CSRF token, the mode, topics, tags) are kept in memory,
each capped. The file gets a random name; the name the browser sent is only text to show.

Limits: the body guard (web/body_guard.py) refuses a body whose Content-Length is over
``CADENCE_IMPORT_MAX_MB`` (plus room for the fields) before a byte is read; here the file part
itself is counted against the same limit, and everything is deleted on any failure.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from cadence.errors import InputError

FILE_FIELD = "file"
MAX_FIELDS = 50
MAX_FIELD_BYTES = 4096
FORM_ROOM = 64 * 1024  # what the body guard allows beyond the file's limit: the other fields


class UploadError(InputError):
    """The upload itself is unusable (not multipart, too large, two files, cut short)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Upload:
    """A received form: the file part stored at `path` (None if the form had none)."""

    path: Path | None = None
    file_name: str = ""
    size: int = 0
    fields: dict[str, list[str]] = field(default_factory=dict)

    def value(self, name: str) -> str:
        values = self.fields.get(name, [])
        return values[0] if values else ""

    def values(self, name: str) -> list[str]:
        return list(self.fields.get(name, []))

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


class _Receiver:
    """python-multipart callbacks: headers of each part, then its data (see the docstring)."""

    def __init__(self, directory: Path, limit: int) -> None:
        self.directory = directory
        self.limit = limit
        self.upload = Upload()
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._name = ""
        self._data = bytearray()
        self._file: IO[bytes] | None = None
        self._in_file = False

    def on_part_begin(self) -> None:
        self._disposition, self._name, self._data, self._in_file = b"", "", bytearray(), False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" not in options:
            if sum(len(v) for v in self.upload.fields.values()) >= MAX_FIELDS:
                raise UploadError("the form has too many fields")
            return
        if self._name != FILE_FIELD or self.upload.path is not None:
            raise UploadError("send one file, in the form's file field")
        self.directory.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=self.directory)
        self._file = os.fdopen(handle, "wb")
        self.upload.path = Path(name)
        self.upload.file_name = options[b"filename"].decode("utf-8", "replace")
        self._in_file = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            assert self._file is not None
            self.upload.size += end - start
            if self.upload.size > self.limit:
                raise UploadError(f"the file is larger than {self.limit // (1024 * 1024)} MB", status=413)
            # A plain write: the OS's page cache takes 64 KB in microseconds, so this does not
            # hold up the event loop the way a database call would.
            self._file.write(data[start:end])
            return
        if len(self._data) + end - start > MAX_FIELD_BYTES:
            raise UploadError(f"the form field {self._name!r} is too long")
        self._data += data[start:end]

    def on_part_end(self) -> None:
        if self._in_file:
            assert self._file is not None
            self._file.close()
            self._file = None
            self._in_file = False
            return
        self.upload.fields.setdefault(self._name, []).append(self._data.decode("utf-8", "replace"))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


async def receive_upload(request: Request, directory: Path, limit: int) -> Upload:
    """Stream the request's multipart body (see the module docstring)."""
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UploadError("the form must be sent as multipart/form-data (a file upload)")
    receiver = _Receiver(directory, limit)
    callbacks = {
        name: getattr(receiver, name)
        for name in (
            "on_part_begin", "on_part_data", "on_part_end", "on_header_field", "on_header_value",
            "on_header_end", "on_headers_finished",
        )
    }  # fmt: skip
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except BaseException as exc:
        receiver.close()
        receiver.upload.discard()
        if isinstance(exc, FormParserError):
            raise UploadError("the upload is not a well-formed form (cut short?)") from None
        raise
    receiver.close()
    return receiver.upload
