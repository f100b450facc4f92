"""Mail that comes back to us: bounce reports (RFC 3464) read from a folder or an IMAP mailbox and
handed to operations/bounce_events.py. (Provider webhooks arrive over HTTP: web/webhooks.py.)"""
