"""A small authoritative DNS server for the tests (dnspython over UDP, in a thread): it answers TXT
queries from `records` (name -> values), NXDOMAIN for anything else, so domain verification runs against
a real resolver exchange without the machine's DNS."""

from __future__ import annotations

import socketserver
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


class DnsServer:
    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                sock.sendto(server.answer(data), self.client_address)

        self._server = socketserver.ThreadingUDPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def answer(self, data: bytes) -> bytes:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        values = self.records.get(name)
        if values is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.TXT:
            quoted = ['"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values]
            response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "TXT", *quoted))
        return response.to_wire()

    def start(self) -> DnsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
