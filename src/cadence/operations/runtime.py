"""What one process needs to send: settings, clock, campaigns, renderer, transport, DKIM signer.

Built once per process (a Celery worker process, the CLI) and reused: the transport keeps its
SMTP connection open across batches, the renderer keeps compiled variants.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from jinja2 import FileSystemLoader

from cadence.clock import Clock
from cadence.config import Settings
from cadence.core.render import Renderer
from cadence.files.catalog import CampaignCatalog
from cadence.transports.base import Transport
from cadence.transports.registry import open_transport

if TYPE_CHECKING:  # imported when a key is configured: dkimpy and OpenSSL cost a worker ~15 MB (issue 15)
    from cadence.core.dkim import DkimSigner, DkimSigners

__all__ = [
    "Runtime",
]


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    catalog: CampaignCatalog
    renderer: Renderer
    # How this process hands committed delivery ids to the workers (a send task per call; the web
    # app sets it when a worker sends its transactional emails). None: it sends them itself
    # (operations/transactional.hand_over).
    enqueue: Callable[[list[int]], None] | None = field(default=None, repr=False)
    _transport: Transport | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        return cls(
            settings=settings,
            clock=settings.clock(),
            catalog=CampaignCatalog(
                settings.campaigns_dir, base_url=settings.base_url, sender_file=settings.sender_file
            ),
            renderer=Renderer(FileSystemLoader(str(settings.templates_dir))),
        )

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            self._transport = open_transport(
                self.settings.email_url, data_dir=self.settings.data_dir, redis_url=self.settings.redis_url
            )
        return self._transport

    @cached_property
    def signer(self) -> DkimSigner | DkimSigners | None:
        dkim = self.settings.dkim
        if dkim is None:
            return None
        from cadence.core.dkim import DkimSigner, DkimSigners

        signers = [DkimSigner(k.key_file.read_bytes(), k.selector, dkim.domain, source=k.variable) for k in dkim.keys]
        return signers[0] if len(signers) == 1 else DkimSigners(signers)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
