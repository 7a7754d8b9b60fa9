"""Benchmark: the web app's peak memory (VmHWM, from /proc) while it answers one hostile bulk-load
upload, each in a fresh server process (werkzeug, as `nezabyt web`) on a fresh SQLite file. The
files are the ones the security review sent: a 50 MB CSV, a 10 MB CSV past the row limit, the
largest file the limits let through (200,000 rows), and a 0.4 MB .xlsx that unpacks to 147 MB.

Run: python -m bench.import_memory [--only NAME]. One JSON line per file: HTTP status, peak RSS of
the server over its own idle peak, seconds.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

MB = 1024 * 1024
SECRET = "bench-import-memory-secret"


def csv_of(size: int) -> bytes:
    """ID rows of about 40 bytes, as the review's CSV (50 MB, 1.34 M rows), up to `size` bytes."""
    out, total, i = [b"ID;Status;Date;Type;Note\n"], 0, 1
    while total < size:
        line = f"{i};HOT;01.01.2000;contact;row {i:08d}\n".encode()
        out.append(line)
        total += len(line)
        i += 1
    return b"".join(out)


def rows_csv(rows: int) -> bytes:
    return b"ID;Status;Date;Type;Note\n" + b"".join(
        f"{i};HOT;01.01.2000;contact;row {i:08d}\n".encode() for i in range(1, rows + 1))


def xlsx_bomb(rows: int = 3_000_000) -> bytes:
    """A real workbook whose sheet repeats one row: 0.4 MB zipped, 147 MB and 3 M rows unzipped."""
    from openpyxl import Workbook

    out = io.BytesIO()
    book = Workbook()
    book.active.append(["ID", "Status"])
    book.save(out)
    source = zipfile.ZipFile(io.BytesIO(out.getvalue()))
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as target:
        for item in source.infolist():
            if item.filename != "xl/worksheets/sheet1.xml":
                target.writestr(item, source.read(item))
                continue
            head, _, tail = source.read(item).decode().partition("</sheetData>")
            head = re.sub(r'<dimension ref="[^"]*"', f'<dimension ref="A1:B{rows + 1}"', head)  # read to the end
            with target.open(item.filename, "w") as sheet:
                sheet.write(head.encode())
                chunk = b'<row><c t="inlineStr"><is><t>1</t></is></c></row>' * 10_000
                for _ in range(rows // 10_000):
                    sheet.write(chunk)
                sheet.write(b"</sheetData>" + tail.encode())
    return bomb.getvalue()


FILES = {
    "csv_50mb": ("big.csv", lambda: csv_of(50 * MB)),
    "csv_10mb_rows": ("rows.csv", lambda: csv_of(10 * MB - 4096)),
    "csv_200k_rows": ("allowed.csv", lambda: rows_csv(200_000)),
    "xlsx_bomb": ("bomb.xlsx", xlsx_bomb),
}

SERVER = """
import sys
from werkzeug.serving import make_server
from addon.config import Settings
from addon.db import upgrade_database
from addon.models import Portal, PortalSettings
from addon.options import Options
from addon.services import build_services
from addon.web import create_app
from settings_ui.access import PageTokens, PageUser

url, port = sys.argv[1], int(sys.argv[2])
upgrade_database(url)
services = build_services(Settings.from_env(env={"DATABASE_URL": url, "NEZABYT_SECRET_KEY": %r}))
with services.sessions() as s:
    p = Portal(member_id="bench", domain="bench.bitrix24.test", client_endpoint="https://bench.bitrix24.test/rest/",
               server_endpoint="https://oauth.bitrix.info/rest/")
    s.add(p); s.flush()
    s.add(PortalSettings(portal_id=p.id, version=1, data=Options().to_dict(), field_items={}))
    s.commit()
    token = PageTokens(services.settings.secret_key).issue(PageUser(p.id, 1, True, "en", p.domain))
print(token, flush=True)
make_server("127.0.0.1", port, create_app(services), threaded=True).serve_forever()
""" % SECRET


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def post(port: int, token: str, filename: str, content: bytes, timeout: float) -> int | str:
    """The upload as a browser sends it (multipart), over a socket; the status line's code, or
    what stopped the exchange."""
    boundary = "benchboundary1234567890"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"t\"\r\n\r\n{token}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + len(content) + len(tail)
    request = (f"POST /ui/import?t={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
               f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {length}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(request + head)
            view = memoryview(content)
            for i in range(0, len(content), MB):
                sock.sendall(view[i:i + MB])
            sock.sendall(tail)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered (413) before the body was sent: read the answer
        try:
            status = sock.recv(64).split(b" ", 2)[1].decode()
        except (OSError, IndexError) as exc:
            return f"no answer: {exc.__class__.__name__}"
    return int(status)


def measure(name: str, timeout: float) -> dict:
    filename, make = FILES[name]
    content = make()
    folder = Path(tempfile.mkdtemp(prefix="nezabyt-import-memory-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-c", SERVER, f"sqlite:///{folder / 'db.sqlite3'}", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=os.getcwd())
    try:
        token = server.stdout.readline().strip()
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        idle = peak_rss_mb(server.pid)
        t0 = time.perf_counter()
        status = post(port, token, filename, content, timeout)
        seconds = time.perf_counter() - t0
        peak = peak_rss_mb(server.pid)
    finally:
        server.kill()
        server.wait()
    return {"file": name, "bytes": len(content), "status": status, "idle_rss_mb": round(idle),
            "peak_rss_mb": round(peak), "request_mb": round(peak - idle), "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=sorted(FILES))
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    for name in [args.only] if args.only else FILES:
        print(json.dumps(measure(name, args.timeout)), flush=True)


if __name__ == "__main__":
    main()
