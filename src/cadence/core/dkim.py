"""DKIM signatures (RFC 6376, RFC 8463), computed the way dkimpy computes them, signed by OpenSSL.

dkimpy is the reference we verify against, but its RSA is pure Python (~10 ms per 2048-bit
signature). :class:`DkimSigner` reproduces ``dkim.DKIM.sign`` step for step, reusing dkimpy's
own helpers for the parts that must match bit for bit (``rfc822_parse``, ``fold``,
``select_headers``, ``RE_BTAG``, the trailing-line rules), and
hands only the final digest to ``cryptography`` (RSASSA-PKCS1-v1_5 over SHA-256, RFC 8017 §8.2,
which is deterministic, so the signature equals dkimpy's for the same input and ``t=``). Two
deliberate differences from ``dkim.sign``:

* ``t=`` comes from the caller (the message's Date), not the clock: this module is pure. Without
  a timestamp the tag is omitted (it is RECOMMENDED, not required: RFC 6376 §3.5).
* the relaxed canonicalizations, of the body (§3.4.4) and of the header fields (§3.4.2), use
  ``bytes.replace`` instead of dkimpy's regex passes (~5x faster on a 40 KB body; a regex call
  per header field cost ~100 µs a message), equal by construction and tested against dkimpy's
  ``Relaxed`` on adversarial whitespace; only the fields named in ``h=`` are canonicalized.

Keys are RSA (``rsa-sha256``) or Ed25519 (``ed25519-sha256``, RFC 8463: PureEdDSA over the same
SHA-256 header digest, a 64-byte signature, a 32-byte public key in DNS). :class:`DkimSigners`
adds several signatures to one message (RFC 6376 §4.2 / RFC 8463 §4: sign with both during the
transition; a receiver that does not know ed25519 ignores that signature and uses the RSA one);
both use SHA-256 over the same relaxed body, so the body is canonicalized and hashed once.

Pure: takes the private key as bytes, does no I/O, reads no clock.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from functools import lru_cache

import dkim
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils
from dkim.canonicalization import correct_empty_body, strip_trailing_lines

from cadence.errors import ConfigError

__all__ = [
    "DEFAULT_SIGNED_HEADERS",
    "DkimSigner",
    "DkimSigners",
    "body_hash",
    "key_algorithm",
    "parse_header_block",
    "relaxed_body",
    "relaxed_header",
]

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
RSA_SHA256 = "rsa-sha256"
ED25519_SHA256 = "ed25519-sha256"


def _load_key(private_key_pem: bytes, source: str) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{source}: not an unencrypted PEM private key ({exc})") from exc
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 1024:
            raise ConfigError(f"{source}: {key.key_size} bits; RFC 8301 requires at least 1024")
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise ConfigError(f"{source}: only RSA (rsa-sha256) and Ed25519 (ed25519-sha256, RFC 8463) keys can sign DKIM")


def key_algorithm(private_key_pem: bytes, source: str = "DKIM private key") -> str:
    """``"rsa-sha256"`` or ``"ed25519-sha256"`` for a PEM private key; ConfigError naming
    ``source`` for anything else (not PEM, encrypted, another key type, RSA under 1024 bits)."""
    key = _load_key(private_key_pem, source)
    return RSA_SHA256 if isinstance(key, rsa.RSAPrivateKey) else ED25519_SHA256


_SPACES = re.compile(rb" +")


def _compress_wsp(data: bytes) -> bytes:
    """Every run of WSP (tab or space) as one space: dkimpy's ``re.sub(b"[\\t ]+", b" ", ...)``.

    Tabs become spaces; then one ``find`` scan jumps from run to run of two or more spaces and the
    kept slices are joined. A regex scan of a 20 KB body costs ~500 µs and repeated
    ``replace("  ", " ")`` passes ~40 µs each, against ~15 µs for one scan (issue 15)."""
    if b"\t" in data:
        data = data.replace(b"\t", b" ")
    start = data.find(b"  ")
    if start < 0:
        return data
    kept: list[bytes] = []
    keep_from = 0
    while start >= 0:
        end = _SPACES.match(data, start).end()  # type: ignore[union-attr]  # matches: data[start] is a space
        kept.append(data[keep_from : start + 1])
        keep_from = end
        start = data.find(b"  ", end)
    kept.append(data[keep_from:])
    return b"".join(kept)


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.4 relaxed body canonicalization, byte-for-byte what dkimpy produces.

    dkimpy: strip ``[\\t ]+`` before CRLF, then compress ``[\\t ]+`` to one space. Here: every WSP
    run becomes one space, then the single space a line may end with is dropped. Both leave every
    WSP run as one space and none before a CRLF.
    """
    body = _compress_wsp(body)
    if b" \r\n" in body:
        body = body.replace(b" \r\n", b"\r\n")
    return bytes(correct_empty_body(strip_trailing_lines(body)))


def relaxed_header(name: bytes, value: bytes) -> bytes:
    """RFC 6376 §3.4.2 relaxed header canonicalization of one field, as dkimpy's
    ``Relaxed.canonicalize_headers`` computes it (unfold ``\\r?\\n``, compress WSP, strip, lowercase
    the name), as the bytes ``name:value`` CRLF that are hashed."""
    if b"\n" in value:
        # Removing CRLF then LF is re.sub(b"\r?\n", b"") exactly: a lone CR is kept by both.
        value = value.replace(b"\r\n", b"").replace(b"\n", b"")
    return name.lower().rstrip() + b":" + _compress_wsp(value).strip() + b"\r\n"


def _signed_headers(headers: list[list[bytes]], include: Sequence[bytes]) -> bytes:
    """The relaxed fields named by ``h=``, in dkimpy's selection order (the last unused instance
    of each name, RFC 6376 §5.4.2), concatenated: what precedes the signature field in the hash.
    Selecting before canonicalizing is equivalent: rfc822_parse names carry no trailing space."""
    return b"".join(_relaxed_field(name, value) for name, value in dkim.select_headers(headers, include))


# Most signed fields are the same in every message of a campaign (From, Reply-To, Subject, Date,
# MIME-Version, List-Id, List-Unsubscribe-Post): their canonical form is remembered. The
# per-recipient ones (To, Message-ID, List-Unsubscribe, the boundary) churn through the cache.
_relaxed_field = lru_cache(maxsize=1024)(relaxed_header)


# A field name as rfc822_parse's ``([\x21-\x7e]+?):`` reads it: printable ASCII up to the first colon.
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")


def parse_header_block(block: bytes) -> list[list[bytes]]:
    """``dkim.rfc822_parse(block + CRLF)[0]``: the ``[name, value]`` fields of a header block.

    build_mime's header blocks (CRLF line ends only, one field per line plus folded
    continuations) are split here with ``bytes.split`` and ``partition`` (~3 µs instead of ~17 µs
    for dkimpy's regex split and a regex match per line, issue 15); anything else (a bare LF, an
    empty line, a line that is not ``name:`` or a continuation) goes to rfc822_parse itself, so
    the answer is always dkimpy's. tests/test_dkim.py compares the two on adversarial blocks.
    """
    if block.endswith(b"\r\n") and block.count(b"\n") == block.count(b"\r\n"):
        headers: list[list[bytes]] = []
        for line in block[:-2].split(b"\r\n"):
            first = line[:1]
            if first == b" " or first == b"\t":
                if not headers:
                    break
                headers[-1][1] += line + b"\r\n"
                continue
            name, colon, value = line.partition(b":")
            if not colon or not _FIELD_NAME.fullmatch(name):
                break
            headers.append([name, value + b"\r\n"])
        else:
            return headers
    headers, _ = dkim.rfc822_parse(block + b"\r\n")
    return headers


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


def body_hash(body: bytes) -> bytes:
    """The ``bh=`` value: base64 SHA-256 of the relaxed body (the same for rsa- and ed25519-sha256)."""
    return base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())


class DkimSigner:
    """Signs messages for one domain and selector with one key, relaxed/relaxed.

    ``private_key_pem`` is an unencrypted PEM key: RSA (PKCS#1 or PKCS#8), at least 1024 bits
    (RFC 8301 §3.2; 2048 recommended), signing rsa-sha256; or Ed25519 (PKCS#8, as
    ``openssl genpkey -algorithm ed25519`` writes it), signing ed25519-sha256 (RFC 8463). The key
    is parsed once into an OpenSSL key object; one signer serves a process. ``source`` names the
    key in errors (the setting it came from).
    """

    def __init__(
        self,
        private_key_pem: bytes,
        selector: str,
        domain: str,
        headers: Sequence[str] = DEFAULT_SIGNED_HEADERS,
        *,
        source: str = "DKIM private key",
    ) -> None:
        key = _load_key(private_key_pem, source)
        include = tuple(h.strip().lower() for h in headers)
        if "from" not in include:
            raise ConfigError("DKIM headers: From must be signed (RFC 6376 §5.4)")
        for name in include:
            if not name or any(c in name for c in ":; \t\r\n"):
                raise ConfigError(f"DKIM headers: {name!r} is not a header field name")
        self._key = key
        self.algorithm = RSA_SHA256 if isinstance(key, rsa.RSAPrivateKey) else ED25519_SHA256
        self._algorithm = self.algorithm.encode("ascii")
        self.selector = selector
        self.domain = domain
        self.headers = include
        self._include = tuple(h.encode("ascii") for h in include)
        self._selector = selector.encode("ascii")
        self._domain = domain.encode("idna")
        self._key_bytes = (key.key_size + 7) // 8 if isinstance(key, rsa.RSAPrivateKey) else 64
        self._layouts: dict[int | None, _Layout] = {}

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
        return self._sign(parse_header_block(header_block), body, timestamp)

    def _sign(self, headers: list[list[bytes]], body: bytes, timestamp: int | None) -> bytes:
        return self.signature_header(_signed_headers(headers, self._include), body_hash(body), timestamp)

    def signature_header(self, signed_headers: bytes, bodyhash: bytes, timestamp: int | None) -> bytes:
        """The DKIM-Signature field, given the canonical ``h=`` fields from ``_signed_headers``
        and the ``bh=`` value from :func:`body_hash` (both shareable by signers of one message)."""
        layout = self._layouts.get(timestamp)
        if layout is None:
            if len(self._layouts) >= 64:  # one timestamp per batch: keep the recent ones
                self._layouts.clear()
            layout = self._layouts[timestamp] = _Layout.measure(self, timestamp)
        if layout.fits(bodyhash):
            hasher = hashlib.sha256(signed_headers)
            hasher.update(layout.canonical_before_bh)
            hasher.update(bodyhash)
            hasher.update(layout.canonical_after_bh)
            signature = base64.b64encode(self._key_sign(hasher.digest()))
            if len(signature) == layout.signature_length:
                return layout.fill(bodyhash, signature)
        return self._signature_header_by_folding(signed_headers, bodyhash, timestamp)

    def _key_sign(self, digest: bytes) -> bytes:
        if isinstance(self._key, rsa.RSAPrivateKey):
            return self._key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        # RFC 8463 §3: PureEdDSA over the SHA-256 digest of the headers, as dkimpy verifies it.
        return self._key.sign(digest)

    def _fields(self, bodyhash: bytes, timestamp: int | None, b: bytes) -> list[tuple[bytes, bytes]]:
        # The same tags in the same order as dkim.DKIM.sign (dkimpy 1.1), so the header text,
        # and therefore the signature, is identical for the same t=.
        fields: list[tuple[bytes, bytes]] = [
            (b"v", b"1"),
            (b"a", self._algorithm),
            (b"c", _CANONICALIZE),
            (b"d", self._domain),
            (b"i", b"@" + self._domain),
            (b"q", b"dns/txt"),
            (b"s", self._selector),
        ]
        if timestamp is not None:
            fields.append((b"t", str(int(timestamp)).encode("ascii")))
        fields += [(b"h", b" : ".join(self._include)), (b"bh", bodyhash), (b"b", b)]
        return fields

    def _canonical_unsigned(self, bodyhash: bytes, timestamp: int | None) -> bytes:
        """The signature field as it is hashed (RFC 6376 §3.7): dkim.DomainSigner.gen_header
        folds it with dkimpy's trick (a 60-char b= placeholder makes b= fold onto its own line,
        so putting the real value in later does not move the folds before it), empties b= and
        canonicalizes it (relaxed), without its trailing CRLF."""
        value = dkim.fold(
            b"; ".join(b"=".join(f) for f in self._fields(bodyhash, timestamp, b"0" * 60)),
            namelen=len(b"DKIM-Signature"),
        )
        value = dkim.RE_BTAG.sub(b"\\1", value)
        return relaxed_header(b"DKIM-Signature", b" " + value)[:-2]

    def _folded(self, bodyhash: bytes, timestamp: int | None, signature: bytes) -> bytes:
        value = b"; ".join(b"=".join(f) for f in self._fields(bodyhash, timestamp, signature)) + b"\r\n"
        return b"DKIM-Signature: " + bytes(dkim.fold(value, namelen=len(b"DKIM-Signature"), linesep=b"\r\n"))

    def _signature_header_by_folding(self, signed_headers: bytes, bodyhash: bytes, timestamp: int | None) -> bytes:
        """signature_header the way dkimpy builds it, step by step (the reference; _Layout
        replays it for the usual case)."""
        hasher = hashlib.sha256(signed_headers)
        hasher.update(self._canonical_unsigned(bodyhash, timestamp))
        return self._folded(bodyhash, timestamp, base64.b64encode(self._key_sign(hasher.digest())))


# Stand-ins for bh= and b= when a layout is measured: neither is WSP, CR, LF nor base64.
_BH_MARK, _B_MARK = 0x01, 0x02
_BASE64 = re.compile(rb"[A-Za-z0-9+/]+=*")


class _Layout:
    """Where bh= and b= land in one signer's DKIM-Signature field for one ``t=`` (issue 15).

    Folding (dkim.fold) and relaxed canonicalization depend only on where the spaces are and on
    lengths, and base64 values hold no spaces and have a fixed length (44 characters for a
    SHA-256 ``bh=``, 344 for an RSA-2048 ``b=``, 88 for Ed25519). So the field is built once by
    the reference code with stand-in bytes in place of both values, and each message only pours
    its own values into the same places: ~25 µs less per signature than folding twice and
    canonicalizing. A layout whose stand-ins did not come out whole (a fold inside ``bh=``) is
    not used; tests/test_dkim.py compares both paths.
    """

    def __init__(self, canonical: bytes | None, folded: bytes, bh_length: int, signature_length: int) -> None:
        self.usable = canonical is not None
        before, _, after = (canonical or b"").partition(bytes([_BH_MARK]) * bh_length)
        self.canonical_before_bh, self.canonical_after_bh = before, after
        self.bh_length, self.signature_length = bh_length, signature_length
        # The folded field as literal pieces and (which value, from, to) slices of the values.
        self._pieces: list[bytes | tuple[int, int, int]] = []
        used = {_BH_MARK: 0, _B_MARK: 0}
        i = 0
        while i < len(folded):
            mark = folded[i]
            if mark in used:
                j = i
                while j < len(folded) and folded[j] == mark:
                    j += 1
                self._pieces.append((mark, used[mark], used[mark] + j - i))
                used[mark] += j - i
            else:
                j = i
                while j < len(folded) and folded[j] not in used:
                    j += 1
                self._pieces.append(folded[i:j])
            i = j
        if used != {_BH_MARK: bh_length, _B_MARK: signature_length}:
            self.usable = False

    @classmethod
    def measure(cls, signer: DkimSigner, timestamp: int | None) -> _Layout:
        bh_length = 44  # base64 of a SHA-256 digest
        signature_length = 88 if signer.algorithm == ED25519_SHA256 else 4 * -(-(signer._key_bytes) // 3)
        canonical = signer._canonical_unsigned(bytes([_BH_MARK]) * bh_length, timestamp)
        if canonical.count(bytes([_BH_MARK])) != bh_length or bytes([_BH_MARK]) * bh_length not in canonical:
            canonical_or_none: bytes | None = None
        else:
            canonical_or_none = canonical
        folded = signer._folded(bytes([_BH_MARK]) * bh_length, timestamp, bytes([_B_MARK]) * signature_length)
        return cls(canonical_or_none, folded, bh_length, signature_length)

    def fits(self, bodyhash: bytes) -> bool:
        return self.usable and len(bodyhash) == self.bh_length and _BASE64.fullmatch(bodyhash) is not None

    def fill(self, bodyhash: bytes, signature: bytes) -> bytes:
        values = {_BH_MARK: bodyhash, _B_MARK: signature}
        return b"".join(p if isinstance(p, bytes) else values[p[0]][p[1] : p[2]] for p in self._pieces)


class DkimSigners:
    """Several signatures on one message, in the order given (the first ends up on top).

    RFC 8463 §4 recommends signing with both RSA and Ed25519 while receivers catch up; each
    signature is independent (none covers another), so a verifier checks whichever it can. The
    header block is parsed and canonicalized once and the body hashed once for all of them.
    """

    def __init__(self, signers: Sequence[DkimSigner]) -> None:
        if not signers:
            raise ValueError("DkimSigners needs at least one signer")
        self.signers = tuple(signers)

    def sign(self, message: bytes, *, timestamp: int | None = None) -> bytes:
        """Every DKIM-Signature field for ``message``, concatenated, to prepend (see DkimSigner.sign)."""
        headers, body = _split(message)
        return self._sign(headers, body, timestamp)

    def sign_parts(self, header_block: bytes, body: bytes, *, timestamp: int | None = None) -> bytes:
        """:meth:`DkimSigner.sign_parts` for every signer."""
        return self._sign(parse_header_block(header_block), body, timestamp)

    def _sign(self, headers: list[list[bytes]], body: bytes, timestamp: int | None) -> bytes:
        bodyhash = body_hash(body)
        by_list: dict[tuple[bytes, ...], bytes] = {}  # signers with the same h= share the header bytes
        out = []
        for signer in self.signers:
            if signer._include not in by_list:
                by_list[signer._include] = _signed_headers(headers, signer._include)
            out.append(signer.signature_header(by_list[signer._include], bodyhash, timestamp))
        return b"".join(out)
