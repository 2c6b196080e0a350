#!/usr/bin/env python3
"""dkimpy over a corpus directory (the DKIM differential suite, CI only): keys from dns.tsv,
no network. Usage: dkimpy.py CORPUS_DIR. Exit 1 on any failure."""
import os
import sys

import dkim

d = sys.argv[1]
records = {}
for line in open(os.path.join(d, "dns.tsv"), encoding="utf-8"):
    name, value = line.rstrip("\n").split("\t", 1)
    records[name.lower()] = value.encode()


def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    return records.get(name.rstrip(".").lower())


n = bad = 0
for f in sorted(os.listdir(d)):
    if not f.endswith(".eml"):
        continue
    n += 1
    msg = open(os.path.join(d, f), "rb").read()
    try:
        ok = dkim.DKIM(msg).verify(dnsfunc=dnsfunc)
    except Exception as e:  # a crash on our output is a failure too
        print("FAIL", f, e)
        ok = None
    if ok is False:
        print("FAIL", f)
    if not ok:
        bad += 1
print("dkimpy: %d cases, %d failed" % (n, bad))
sys.exit(1 if bad else 0)
