"""Ways out: one module per transport, all behind :class:`cadence.transports.base.Transport`.

OWNER of the individual transports: delivery work (issue 4). ``open_transport(url)`` in
``registry.py`` picks one from ``CADENCE_EMAIL_URL``.
"""
