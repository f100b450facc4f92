"""Celery's filesystem broker with atomic writes, for the zero-setup default.

kombu's filesystem transport creates the message file and then writes it; a consumer polling
the folder can move and read the file in between and gets an empty payload (JSONDecodeError
in the worker's consumer, seen in our end-to-end tests). We write to a hidden temporary name
and ``os.replace`` it into place, which is atomic on POSIX, so a consumer only ever sees
complete messages. Production uses Redis; this exists so a newcomer needs nothing but Python.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.transport import filesystem
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]  # kombu's two base classes disagree
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # A leading dot: kombu's reader skips names that do not end in ".<queue>.msg".
        temporary = os.path.join(self.data_folder_out, f".{uuid.uuid4()}.tmp")
        with open(temporary, "wb") as handle:
            handle.write(str(dumps(payload)).encode())  # type: ignore[no-untyped-call]
        os.replace(temporary, final)


class Transport(filesystem.Transport):
    Channel = Channel
