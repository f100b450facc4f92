"""DKIM signatures (RFC 6376), computed the way dkimpy computes them, signed by OpenSSL.

dkimpy is the reference we verify against, but its RSA is pure Python (~10 ms per 2048-bit
signature). :class:`DkimSigner` reproduces ``dkim.DKIM.sign`` step for step, reusing dkimpy's
own helpers for the parts that must match bit for bit (``rfc822_parse``, ``fold``,
``hash_headers``, ``RE_BTAG``, the relaxed header canonicalization and trailing-line rules), and
hands only the final digest to ``cryptography`` (RSASSA-PKCS1-v1_5 over SHA-256, RFC 8017 §8.2,
which is deterministic, so the signature equals dkimpy's for the same input and ``t=``). Two
deliberate differences from ``dkim.sign``:

* ``t=`` comes from the caller (the message's Date), not the clock: this module is pure. Without
  a timestamp the tag is omitted (it is RECOMMENDED, not required: RFC 6376 §3.5).
* the relaxed *body* canonicalization (§3.4.4) uses ``bytes.replace`` instead of dkimpy's two
  regex passes, ~5x faster on a 40 KB body and equal by construction (tested against dkimpy's
  ``Relaxed.canonicalize_body`` on adversarial whitespace).

Pure: takes the private key as bytes, does no I/O, reads no clock.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

import dkim
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from dkim.canonicalization import Relaxed, correct_empty_body, strip_trailing_lines

from cadence.errors import ConfigError

__all__ = ["DEFAULT_SIGNED_HEADERS", "DkimSigner", "relaxed_body"]

#: Header fields covered by ``h=``. RFC 8058 §4 requires List-Unsubscribe and
#: List-Unsubscribe-Post to be signed for one-click to be honoured; dkimpy's default list omits
#: the latter. A field named here but absent from the message is signed as empty, which stops
#: anyone adding it later (RFC 6376 §5.4.2); "from" is listed twice for the same reason
#: (dkimpy's FROZEN default): a second From header would break the signature.
DEFAULT_SIGNED_HEADERS: tuple[str, ...] = (
    "from",
    "reply-to",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "from",
)

_CANONICALIZE = b"relaxed/relaxed"


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.4 relaxed body canonicalization, byte-for-byte what dkimpy produces.

    dkimpy: strip ``[\\t ]+`` before CRLF, then compress ``[\\t ]+`` to one space. Here: tabs
    become spaces, runs of spaces are halved until none is left, then the single space a line
    may end with is dropped. Both leave every WSP run as one space and none before a CRLF.
    """
    if b"\t" in body:
        body = body.replace(b"\t", b" ")
    while b"  " in body:
        body = body.replace(b"  ", b" ")
    if b" \r\n" in body:
        body = body.replace(b" \r\n", b"\r\n")
    return bytes(correct_empty_body(strip_trailing_lines(body)))


def _split(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """dkimpy's ``rfc822_parse``, run on the header block only when the message is pure CRLF
    (the body is then already what rfc822_parse would rebuild); otherwise on everything."""
    end = message.find(b"\r\n\r\n")
    if end >= 0:
        body = message[end + 4 :]
        if body.count(b"\n") == body.count(b"\r\n"):
            headers, _ = dkim.rfc822_parse(message[: end + 4])
            return headers, body
    headers, body = dkim.rfc822_parse(message)
    return headers, bytes(body)


class DkimSigner:
    """Signs messages for one domain and selector with an RSA key (rsa-sha256, relaxed/relaxed).

    ``private_key_pem`` is a PEM RSA key (PKCS#1 or PKCS#8, unencrypted), at least 1024 bits
    (RFC 8301 §3.2; 2048 recommended). The key is parsed once; one signer serves a process.
    """

    def __init__(
        self,
        private_key_pem: bytes,
        selector: str,
        domain: str,
        headers: Sequence[str] = DEFAULT_SIGNED_HEADERS,
    ) -> None:
        try:
            key = serialization.load_pem_private_key(private_key_pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ConfigError(f"DKIM private key: not an unencrypted PEM private key ({exc})") from exc
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError("DKIM private key: only RSA keys are supported (rsa-sha256)")
        if key.key_size < 1024:
            raise ConfigError(f"DKIM private key: {key.key_size} bits; RFC 8301 requires at least 1024")
        include = tuple(h.strip().lower() for h in headers)
        if "from" not in include:
            raise ConfigError("DKIM headers: From must be signed (RFC 6376 §5.4)")
        for name in include:
            if not name or any(c in name for c in ":; \t\r\n"):
                raise ConfigError(f"DKIM headers: {name!r} is not a header field name")
        self._key = key
        self.selector = selector
        self.domain = domain
        self.headers = include
        self._include = tuple(h.encode("ascii") for h in include)
        self._selector = selector.encode("ascii")
        self._domain = domain.encode("idna")

    def sign(self, message: bytes, *, timestamp: int | None = None) -> bytes:
        """Return the ``DKIM-Signature:`` header field, folded and ending in CRLF, to prepend.

        ``message`` is the complete message (CRLF line ends; bare LFs are read as dkimpy reads
        them). ``timestamp`` becomes ``t=``.
        """
        headers, body = _split(message)
        return self._sign(headers, body, timestamp)

    def sign_parts(self, header_block: bytes, body: bytes, *, timestamp: int | None = None) -> bytes:
        """:meth:`sign` for a caller holding the header block (ending in CRLF) and a body that
        uses only CRLF line ends, as build_mime does; skips re-splitting the message."""
        headers, _ = dkim.rfc822_parse(header_block + b"\r\n")
        return self._sign(headers, body, timestamp)

    def _sign(self, headers: list[list[bytes]], body: bytes, timestamp: int | None) -> bytes:
        bodyhash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
        # The same tags in the same order as dkim.DKIM.sign (dkimpy 1.1), so the header text,
        # and therefore the signature, is identical for the same t=.
        fields: list[tuple[bytes, bytes]] = [
            (b"v", b"1"),
            (b"a", b"rsa-sha256"),
            (b"c", _CANONICALIZE),
            (b"d", self._domain),
            (b"i", b"@" + self._domain),
            (b"q", b"dns/txt"),
            (b"s", self._selector),
        ]
        if timestamp is not None:
            fields.append((b"t", str(int(timestamp)).encode("ascii")))
        fields += [
            (b"h", b" : ".join(self._include)),
            (b"bh", bodyhash),
            # dkimpy's trick: a 60-char placeholder makes b= fold onto its own line, so putting
            # the real value in later does not move the folds of the tags before it.
            (b"b", b"0" * 60),
        ]
        # dkim.DomainSigner.gen_header: fold, empty b=, then hash the selected headers and the
        # signature header itself (without its trailing CRLF) -- RFC 6376 §3.7.
        value = dkim.fold(b"; ".join(b"=".join(f) for f in fields), namelen=len(b"DKIM-Signature"))
        value = dkim.RE_BTAG.sub(b"\\1", value)
        hasher = hashlib.sha256()
        dkim.hash_headers(
            hasher,
            Relaxed,
            Relaxed.canonicalize_headers(headers),
            self._include,
            (b"DKIM-Signature", b" " + value),
            dict(fields),
        )
        signature = self._key.sign(hasher.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        fields[-1] = (b"b", base64.b64encode(signature))
        value = b"; ".join(b"=".join(f) for f in fields) + b"\r\n"
        return b"DKIM-Signature: " + bytes(dkim.fold(value, namelen=len(b"DKIM-Signature"), linesep=b"\r\n"))
