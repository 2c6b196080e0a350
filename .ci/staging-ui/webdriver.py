#!/usr/bin/env python3
"""Drives the simulator's web page in headless Chromium through chromedriver (W3C WebDriver,
spoken with urllib: no client library to install). Opens the list, waits for its WebSocket,
sends a message (swaks, via the relay), sees the row appear live, opens it, reads the verdict
card, and screenshots each view into the folder given.

Usage: webdriver.py <base URL> <chromedriver URL> <screenshot dir> <send command...>
"""
import base64
import json
import subprocess
import sys
import time
import urllib.request

base, driver, shots = sys.argv[1], sys.argv[2], sys.argv[3]
send = sys.argv[4:]


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(driver + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"{}").get("value")


def wait(what, fn, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
    "binary": "/usr/bin/chromium",
    "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"]}}}}
session = call("POST", "/session", caps)["sessionId"]
s = f"/session/{session}"


def js(script, *args):
    return call("POST", s + "/execute/sync", {"script": script, "args": list(args)})


def shot(name):
    png = base64.b64decode(call("GET", s + "/screenshot"))
    with open(f"{shots}/{name}.png", "wb") as f:
        f.write(png)
    print(f"screenshot {shots}/{name}.png")


try:
    call("POST", s + "/url", {"url": base + "/"})
    wait("the live WebSocket", lambda: js("return document.body.dataset.live === 'yes'"))
    before = js("return document.querySelectorAll('#messages tbody tr').length")
    out = subprocess.run(send, check=True, capture_output=True, text=True).stdout
    msg_id = next(l.split("250 Ok ")[1].strip() for l in out.splitlines() if "250 Ok " in l)
    # The row appears without a reload: pushed by /api/events.
    wait("the new row", lambda: js("return !!document.querySelector(`tr[data-id='${arguments[0]}']`)", msg_id))
    after = js("return document.querySelectorAll('#messages tbody tr').length")
    assert after == before + 1, (before, after)
    status = js("return document.getElementById('status').textContent")
    assert "new:" in status, status
    shot("list")
    # Filter by verdict with the form (keyboard-reachable controls, labelled).
    labels = js("return Array.from(document.querySelectorAll('label')).map(l => l.htmlFor)")
    assert "query" in labels and "tag" in labels, labels
    # Open the message from the list.
    js("document.querySelector(`tr[data-id='${arguments[0]}'] a`).click()", msg_id)
    wait("the message view", lambda: js("return location.pathname.startsWith('/view/')"))
    wait("the tabs", lambda: js("return document.querySelectorAll('[role=tab]').length === 5"))
    card = js("return document.getElementById('verdict-summary').textContent")
    assert "DMARC pass" in card, card
    dkim = js("return Array.from(document.querySelectorAll('.card.dkim h3')).map(h => h.textContent)")
    assert any("yours" in h for h in dkim) and any("SES" in h for h in dkim), dkim
    shot("view-authentication")
    for tab in ["html", "text", "headers", "raw"]:
        js("document.getElementById('tab-' + arguments[0]).click()", tab)
        wait(tab, lambda: js("return !document.getElementById(arguments[0]).hidden", tab))
        shot(f"view-{tab}")
    # Keyboard: ArrowRight from the last tab wraps to the first.
    js("const t = document.getElementById('tab-raw'); t.focus(); "
       "t.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowRight', bubbles: true}))")
    assert js("return document.activeElement.id") == "tab-auth"
    # The HTML body's frame is sandboxed: no scripts, no same-origin.
    assert js("return document.querySelector('iframe.body').getAttribute('sandbox')") == ""
    print(f"webdriver OK: {msg_id}")
finally:
    call("DELETE", s)
