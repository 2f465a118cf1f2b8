#!/usr/bin/env python3
"""Scans every log line the services wrote during `make test` (ERIOP_TEST_LOG_DIR, one JSON
file per test process) for personal data and secrets: emails, JWTs and bearer tokens,
passwords the tests use, password hashes, credentials in URLs, TOTP secrets, client
addresses. Exits 1, naming each hit (masked), if any line holds one.

usage: scripts/scan-logs.py DIR
"""
import json
import os
import re
import sys

PATTERNS = {
    "email": re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
    "jwt": re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\."),
    "bearer token": re.compile(r"Bearer\s+[A-Za-z0-9._~+/-]{8,}", re.I),
    "test password": re.compile(r"correct horse|battery staple|not the password", re.I),
    "password hash": re.compile(r"\$argon2(?:id|i|d)\$"),
    "credentials in a URL": re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@\"]+:[^/\s@\"]+@", re.I),
    "TOTP secret": re.compile(r"otpauth://|secret=[A-Z2-7]{16,}"),
    # Client addresses: the documentation ranges the tests give as X-Real-IP.
    "client address": re.compile(r"\b(?:192\.0\.2|198\.51\.100|203\.0\.113)\.\d{1,3}\b"),
}
# Fields that would hold a client's address whatever its value.
ADDRESS_FIELDS = {"ip", "client_ip", "remote_addr", "peer_addr", "x-real-ip", "x-forwarded-for", "addr"}


def fields(value, key=""):
    """Every (key, string) in a JSON value."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from fields(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from fields(v, key)
    elif isinstance(value, str):
        yield key, value


def mask(text):
    return text[:3] + "…" if len(text) > 3 else "…"


def main():
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(sys.argv) == 2 else 2
    directory = sys.argv[1]
    files = sorted(f for f in os.listdir(directory) if f.endswith(".log"))
    lines = hits = 0
    for name in files:
        with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                lines += 1
                try:
                    record = json.loads(line)
                except ValueError:
                    record = {"line": line}
                for key, text in fields(record):
                    found = [(what, m.group(0)) for what, p in PATTERNS.items() for m in p.finditer(text)]
                    if key.lower() in ADDRESS_FIELDS and text:
                        found.append(("client address field", text))
                    for what, match in found:
                        hits += 1
                        target = record.get("target", "?") if isinstance(record, dict) else "?"
                        print(f"log scan: {what} in {name}:{number} ({target}, field {key!r}): {mask(match)}")
    if hits:
        print(f"log scan: {hits} hit(s) in {lines} log lines of {len(files)} test processes: "
              "remove the value from the log statement (log an id instead)")
        return 1
    if lines == 0:
        print(f"log scan: no log line found in {directory}: was ERIOP_TEST_LOG_DIR passed to the tests?")
        return 1
    print(f"log scan: {lines} log lines of {len(files)} test processes, no personal data or secret")
    return 0


if __name__ == "__main__":
    sys.exit(main())
