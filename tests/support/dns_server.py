"""A tiny authoritative DNS server for tests: UDP on 127.0.0.1, a free port, records from a dict.

Usage::

    with DnsServer({"example.com": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"], "MX": ["10 mx.example.com."]}}) as dns:
        env["CADENCE_DNS_RESOLVER"] = dns.address          # "127.0.0.1:PORT"
        dns.set("_dmarc.example.com", "TXT", ["v=DMARC1; p=reject"])   # change records while running

TXT values are plain strings (split into 255-byte character-strings as DNS requires); other types
are given in zone-file text. A name with no records of the asked type answers NOERROR and no data;
an unknown name answers NXDOMAIN (RFC 8020), as a real server would.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Zone = dict[str, dict[str, list[str]]]


def _txt(value: str) -> str:
    raw = value.encode()
    chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
    return " ".join('"' + c.decode().replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


class DnsServer:
    def __init__(self, zone: Zone | None = None) -> None:
        self._zone: Zone = {}
        self._lock = threading.Lock()
        for name, records in (zone or {}).items():
            for rdtype, values in records.items():
                self.set(name, rdtype, values)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.queries: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def set(self, name: str, rdtype: str, values: list[str]) -> None:
        with self._lock:
            self._zone.setdefault(name.lower().rstrip("."), {})[rdtype.upper()] = list(values)

    def __enter__(self) -> DnsServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, client = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
            except Exception:
                continue
            self._sock.sendto(self._answer(query).to_wire(), client)

    def _answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        for question in query.question:
            name = question.name.to_text().lower().rstrip(".")
            rdtype = dns.rdatatype.to_text(question.rdtype)
            self.queries.append((name, rdtype))
            with self._lock:
                records = self._zone.get(name)
                values = list(records.get(rdtype, [])) if records else []
            if records is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
                continue
            if not values:
                continue
            texts = [_txt(v) if rdtype == "TXT" else v for v in values]
            rrset = dns.rrset.from_text_list(question.name, 60, dns.rdataclass.IN, question.rdtype, texts)
            response.answer.append(rrset)
        return response
