"""Local files the agent trusts (the policy, the tokens): read safely, and re-read when they change.

Owns the ownership/permission check and the change detection (inode, size, mtime), so an edit
or an atomic replace (`mv new policy.yaml`) takes effect on the next request, and `reload()`
(SIGHUP) forces it. It must not know what the files mean: a `parse` function turns text into
a value or raises ValueError. Fail closed: a file that is missing, unsafe or does not parse
makes `get()` raise FileProblem until it is fixed; the last good value is never reused.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class FileProblem(Exception):
    """The file cannot be trusted or read; the message names the file and what is wrong."""


def read_trusted(path: Path) -> str:
    """The text of a file only root (or the agent's own user) can change.

    A policy or token file that another local user could edit would hand that user the NVA's
    routing: refuse it rather than read it.
    """
    # One open file for the checks and the read (a file swapped after a check is never read), and
    # O_NONBLOCK so a FIFO cannot block the open; nothing is read before the checks pass (a FIFO
    # or /dev/zero would block or never end).
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise FileProblem(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    with os.fdopen(fd, encoding="utf-8") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileProblem(f"{path}: not a regular file")
        if st.st_uid not in (0, os.geteuid()):
            raise FileProblem(f"{path}: owned by uid {st.st_uid}; it must be owned by root")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise FileProblem(f"{path}: writable by group or others (mode {stat.S_IMODE(st.st_mode):o}); chmod go-w")
        try:
            return f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise FileProblem(f"{path}: cannot be read: {exc}") from exc


class Watched(Generic[T]):
    """A parsed file, re-parsed when its inode, size or mtime change, or on `reload()`."""

    def __init__(self, path: Path, parse: Callable[[str], T], what: str) -> None:
        self.path = path
        self._parse = parse
        self._what = what
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int, int] | None = None
        self._value: T | None = None
        self._problem: FileProblem | None = None
        self.reload()

    def _stat(self) -> tuple[int, int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode

    def reload(self) -> None:
        with self._lock:
            self._signature = self._stat()
            try:
                text = read_trusted(self.path)
                value = self._parse(text)
            except FileProblem as exc:
                self._value, self._problem = None, exc
            except ValueError as exc:
                self._value, self._problem = None, FileProblem(f"{self.path}: {exc}")
            else:
                self._value, self._problem = value, None
        if self._problem is not None:
            log.error("%s not usable, refusing until it is fixed: %s", self._what, self._problem)
        else:
            log.info("%s read from %s", self._what, self.path)

    def get(self) -> T:
        if self._stat() != self._signature:
            self.reload()
        value, problem = self._value, self._problem
        if problem is not None or value is None:
            raise problem or FileProblem(f"{self.path}: not loaded")
        return value
