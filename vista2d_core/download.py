"""Download one URL into one file: resumable, verified, and once across processes.

``download(url, dest, sha256)`` leaves the whole file at ``dest`` or raises a one-line UserError that
names the URL and ``dest`` (where to put the file by hand). Bytes go to ``dest.part`` first; a transfer
cut short is continued with an HTTP Range request (within the call, up to ``attempts`` times, or by a
later call); the finished file's sha256 is checked when given (a mismatch deletes it), then it is
renamed into place. A lock file beside it (``dest.lock``, filelock) makes concurrent processes
(torchrun ranks, dask workers) download once: the others wait, then find the file in place.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from .errors import UserError
from .progress import progress_bar

log = logging.getLogger("vista2d")
_CHUNK = 1 << 20


class _Interrupted(Exception):
    """The transfer stopped midway: what arrived is kept in the ``.part`` file, to be resumed."""


def sha256_of(path: Path) -> str:
    """Hex sha256 of the file at ``path``."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, sha256: str | None = None, *, timeout: float = 30.0, attempts: int = 3) -> Path:
    """Download ``url`` to ``dest`` (parents created) unless it is there; return ``dest``.

    ``timeout``: seconds without data before a connection counts as failed; ``attempts``: transfers
    (each resuming the last) before giving up on a connection that keeps breaking.
    """
    from filelock import FileLock, Timeout

    dest.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(dest.with_name(dest.name + ".lock")))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info(f"waiting for another process to download {dest.name}")
        lock.acquire()
    try:
        if dest.is_file():  # another process finished it while we waited
            return dest
        part = dest.with_name(dest.name + ".part")
        for attempt in range(1, attempts + 1):
            try:
                _transfer(url, part, dest, timeout)
                break
            except _Interrupted as exc:
                if attempt == attempts:
                    raise UserError(f"cannot download {url} ({exc}; {attempts} attempts): run again to resume, "
                                    f"or put the file there by hand: {dest}") from None
                log.info(f"{url}: {exc}; resuming")
        if sha256:
            actual = sha256_of(part)
            if actual != sha256.lower():
                part.unlink()
                raise UserError(f"{url}: wrong checksum: expected sha256 {sha256.lower()}, got {actual}; "
                                "the download was deleted")
        os.replace(part, dest)
    finally:
        lock.release()
    return dest


def _transfer(url: str, part: Path, dest: Path, timeout: float) -> None:
    """Fetch the rest of ``url`` into ``part`` (Range from its current size); _Interrupted when cut short."""
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # nothing left after start: whole if the server's size agrees
            if exc.headers.get("Content-Range", "").rpartition("/")[2] == str(start):
                return
            part.unlink()
            raise _Interrupted("the partial download does not match the file: starting again") from None
        raise UserError(f"cannot download {url} (HTTP {exc.code} {exc.reason}): "
                        f"put the file there by hand: {dest}") from None
    except (urllib.error.URLError, OSError) as exc:  # refused, unknown host, no network, timeout
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise UserError(f"cannot download {url} ({reason}): put the file there by hand: {dest}") from None
    with response:
        resumed = response.status == 206 and response.headers.get("Content-Range", "").startswith(f"bytes {start}-")
        if response.status == 206 and not resumed:
            part.unlink()
            raise _Interrupted("the server answered with another range: starting again")
        offset = start if resumed else 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length else None
        with part.open("ab" if resumed else "wb") as f, progress_bar(transfer=True) as bar:
            task = bar.add_task(dest.name, total=total, completed=offset)
            try:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    bar.advance(task, len(chunk))
            except (OSError, http.client.HTTPException) as exc:  # reset, timeout, broken chunk
                raise _Interrupted(f"connection lost after {f.tell()} bytes ({exc!r})") from None
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Interrupted(f"connection closed after {size} of {total} bytes")
