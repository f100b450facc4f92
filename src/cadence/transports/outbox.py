"""A transport that writes each message to ``<dir>/<message-id>.eml`` instead of sending it.

For development, demos and tests: open the files with any mail client. ``outbox://`` writes to
``<data_dir>/outbox``, ``outbox:///abs/path`` to that directory.

Each file is written under a temporary name in the same directory, flushed to disk, then renamed
over the final name with ``os.replace`` (atomic on POSIX within one filesystem): a crash leaves
either no file or the whole file, never half of one. The name comes from the Message-ID, which
is stable per delivery, so sending the same delivery twice rewrites the same file instead of
making a duplicate. Leftover ``.*.tmp`` files from a crash are ignored by readers (they are hidden
and never end in ``.eml``).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import SplitResult, unquote

from cadence.core.message import OutgoingMessage
from cadence.errors import TransientSendError
from cadence.transports.base import RefusalHook, SendResult

__all__ = ["OutboxTransport", "outbox_filename"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


def outbox_filename(message_id: str) -> str:
    """``<d7.abc@example.com>`` -> ``d7.abc@example.com.eml`` (only filesystem-safe characters)."""
    stem = _UNSAFE.sub("_", message_id.strip().strip("<>")).lstrip(".")
    if not stem:
        raise ValueError(f"cannot derive a file name from Message-ID {message_id!r}")
    return stem[:200] + ".eml"


class OutboxTransport:
    """Writes messages as ``.eml`` files; every write that succeeds is ``sent``."""

    needs_mime = True

    def __init__(self, directory: Path, *, fsync: bool = True) -> None:
        self.directory = directory
        self.fsync = fsync
        self._ready = False

    @classmethod
    def from_url(cls, url: SplitResult, params: dict[str, str], *, data_dir: Path) -> OutboxTransport:
        """``outbox://`` (``data_dir/outbox``) or ``outbox:///absolute/dir``; ``?fsync=0`` skips
        the flush to disk (faster, still atomic against process crashes, not power loss)."""
        if url.netloc:
            raise ValueError("outbox:// takes no host; use outbox:///absolute/path")
        fsync = params.pop("fsync", "1")
        if fsync not in ("0", "1"):
            raise ValueError(f"fsync={fsync!r}: expected 0 or 1")
        path = Path(unquote(url.path)) if url.path not in ("", "/") else data_dir / "outbox"
        if not path.is_absolute():
            raise ValueError(f"outbox path {path} must be absolute (outbox:///abs/path)")
        return cls(path, fsync=fsync == "1")

    def _write(self, name: str, data: bytes) -> Path:
        final = self.directory / name
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return final

    def send_many(
        self, messages: Sequence[tuple[OutgoingMessage, bytes]], on_refused: RefusalHook | None = None
    ) -> list[SendResult]:
        # Results come back all together: ``on_refused`` is not called (base.RefusalHook).
        if not self._ready:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._ready = True
        results: list[SendResult] = []
        for index, (msg, data) in enumerate(messages):
            if not data:
                raise ValueError("OutboxTransport needs the MIME bytes (needs_mime is True)")
            try:
                path = self._write(outbox_filename(msg.message_id), data)
            except OSError as exc:  # disk full, permissions: the whole outbox is unusable
                if index == 0:
                    raise TransientSendError(f"outbox {self.directory}: {exc}") from exc
                detail = f"not written: {exc}"
                return results + [SendResult("transient", detail=detail) for _ in messages[index:]]
            results.append(SendResult("sent", provider_message_id=path.name, detail=str(path)))
        return results

    def close(self) -> None:
        """Nothing to release."""
