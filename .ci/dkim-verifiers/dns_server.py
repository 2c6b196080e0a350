#!/usr/bin/env python3
"""A tiny authoritative DNS server for the DKIM differential suite (CI only).

Answers TXT queries from a TSV file (name TAB value, one record a line) over UDP and TCP on
127.0.0.1:PORT; every other name or type gets NXDOMAIN / an empty answer. Standard library
only, so CI needs no extra package. Usage: dns_server.py RECORDS.tsv PORT
"""
import socket
import struct
import sys
import threading

records = {}
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.rstrip("\n")
    if line:
        name, value = line.split("\t", 1)
        records.setdefault(name.rstrip(".").lower(), []).append(value.encode())
port = int(sys.argv[2])


def answer(query):
    if len(query) < 12:
        return None
    qid, flags, qdcount = struct.unpack("!HHH", query[:6])
    pos = 12
    labels = []
    while pos < len(query) and query[pos] != 0:
        n = query[pos]
        labels.append(query[pos + 1:pos + 1 + n].decode("ascii", "replace"))
        pos += 1 + n
    pos += 1
    qtype, qclass = struct.unpack("!HH", query[pos:pos + 4])
    question = query[12:pos + 4]
    name = ".".join(labels).lower()
    rrs = []
    if name in records and qtype == 16:
        for value in records[name]:
            chunks = b"".join(
                bytes([len(value[i:i + 255])]) + value[i:i + 255]
                for i in range(0, len(value), 255)
            )
            rrs.append(struct.pack("!HHHIH", 0xC00C, 16, 1, 300, len(chunks)) + chunks)
    rcode = 0 if name in records else 3
    out_flags = 0x8400 | (flags & 0x0100) | rcode
    header = struct.pack("!HHHHHH", qid, out_flags, 1, len(rrs), 0, 0)
    return header + question + b"".join(rrs)


def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    while True:
        data, addr = s.recvfrom(4096)
        reply = answer(data)
        if reply:
            s.sendto(reply, addr)


def tcp():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(16)
    while True:
        c, _ = s.accept()
        try:
            n = struct.unpack("!H", c.recv(2))[0]
            data = b""
            while len(data) < n:
                chunk = c.recv(n - len(data))
                if not chunk:
                    break
                data += chunk
            reply = answer(data)
            if reply:
                c.sendall(struct.pack("!H", len(reply)) + reply)
        except Exception:
            pass
        finally:
            c.close()


threading.Thread(target=tcp, daemon=True).start()
print("ready", flush=True)
udp()
