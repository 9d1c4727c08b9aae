"""The receiver's files backend (``files``): rotating NDJSON files that any tool can load.

Layout of the folder::

    documents-000001.ndjson   the documents, one per line, the stored bytes exactly (``cat``, ``jq``,
    documents-000002.ndjson   Elasticsearch's bulk loaders... read them as they are)
    index-000001.ndjson       one line per line of the documents file of the same number:
    index-000002.ndjson         {"seq", "request", "received_at", "kind", "key", "session", "index",
                                 "offset", "length"} — where the document is, and what it is
    requests.ndjson           one line per request: the fields of ``RequestRecord``; it grows with
                              every request (only the documents rotate): its start may be cut
                              while no receiver runs, keeping its last line (the last request id,
                              which tells committed documents from a crash's leftovers)
    .lock                     held (flock) while a store has the folder open: one writer only

A read-only store (``read_only=True``, what the ``received`` commands open) takes no lock and
changes nothing, so it reads the folder while a receiver writes to it: it sees the requests
committed when it opened, and leaves any uncommitted tail to the writer.

The index is the envelope of each document, kept beside the documents so that they stay plain
NDJSON and so that opening the store reads only the small index and request lines, never a session.
On open, the index files are scanned into an in-memory map ``(kind, key) -> where its latest
version is`` (a few hundred bytes of memory per stored key); reads then seek straight to the bytes.
Of the requests, only counts and the last ``RECENT_REQUESTS`` records are kept in memory.

Commit protocol of a save, all on one I/O thread (so the event loop never blocks on a disk):
1. the new document lines are appended to the current documents file, then fsync'd;
2. their index lines are appended to the index file, then fsync'd;
3. the request's line is appended to ``requests.ndjson``, then fsync'd: this line is the commit.
A save that fails on the way truncates the three files back to where they were. A crash leaves at
most an uncommitted tail, which the next open finds, logs and truncates: a torn (unterminated or
unparsable) last line, index lines whose request has no line in ``requests.ndjson``, and document
bytes that no kept index line points to. So the files hold whole requests only, for this store and
for other tools. Beyond what a crash can do: a documents file cut short (by hand, by a full disk
elsewhere) loses the documents it no longer holds, with a warning, and the open goes on; whole
committed lines after an unreadable one are damage, and the open refuses rather than truncate them.

Duplicates, in the order of the request's documents: a document whose key is known (stored, or
earlier in the same request) writes nothing when it keeps (``Document.replaces`` false); when it
replaces, it is appended and its index line, later in the files, is the one reads use. As in the
SQL backends a replaced document keeps the seq of its first version (its place in "newest first").

Rotation: a save that would take the current documents file past ``rotate_bytes`` starts the next
pair of files (unless the current one is empty: a bigger save gets a file of its own); the folder is
fsync'd so the new names survive a power cut too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import errno
import fcntl
import itertools
import logging
import os
import re
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from sessionexport.folders import make_private_dir
from sessionexport.receiver.store.records import (
    DOCUMENT,
    LEGACY,
    SESSION,
    Counts,
    Document,
    RequestInfo,
    RequestRecord,
    SaveResult,
    StoredDocument,
)
from sessionexport.store.base import StoreError, StoreFull

T = TypeVar("T")
log = logging.getLogger(__name__)

ROTATE_BYTES = 100 * 1024 * 1024
REQUESTS_FILE = "requests.ndjson"
RECENT_REQUESTS = 1000  # request records kept in memory: as many as one read may ask for
OPEN_FILES = 16  # descriptors kept open at most (the current pair, requests.ndjson, files read lately)
_NUMBERED = re.compile(r"^(?:documents|index)-(\d+)\.ndjson$")
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # no room: a disk, a quota, a file-size limit


def documents_file(number: int) -> str:
    return f"documents-{number:06d}.ndjson"


def index_file(number: int) -> str:
    return f"index-{number:06d}.ndjson"


@dataclass(slots=True)
class _Entry:
    """One index line: a version of a document and where its bytes are."""

    seq: int
    request: int
    received_at: int
    kind: str
    key: str
    session: str | None
    index: str | None
    file: int
    offset: int
    length: int

    def line(self) -> bytes:
        # Spelled out, not dataclasses.asdict (which deep-copies every field, once per document);
        # "file" is implied by the index file's number.
        fields = {
            "seq": self.seq,
            "request": self.request,
            "received_at": self.received_at,
            "kind": self.kind,
            "key": self.key,
            "session": self.session,
            "index": self.index,
            "offset": self.offset,
            "length": self.length,
        }
        return orjson.dumps(fields) + b"\n"


@dataclass(slots=True)
class _Tail:
    """How much of a file is committed, as found by the scan on open."""

    path: Path
    keep: int
    size: int


class FilesReceivedStore:
    def __init__(self, folder: Path, rotate_bytes: int = ROTATE_BYTES, *, read_only: bool = False) -> None:
        self.folder = folder
        self.rotate_bytes = rotate_bytes
        self.read_only = read_only
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._state: _State | None = None

    async def open(self) -> None:
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="files-store")
        try:
            state = await asyncio.wrap_future(executor.submit(self._load))
        except BaseException:
            executor.shutdown()
            raise
        self._executor, self._state = executor, state

    async def close(self) -> None:
        if self._executor is None or self._state is None:
            return
        state, executor = self._state, self._executor
        self._state = self._executor = None
        await asyncio.wrap_future(executor.submit(state.close))
        executor.shutdown()

    async def save(self, request: RequestInfo, documents: Sequence[Document]) -> SaveResult:
        return await self._run(lambda state: state.save(request, documents))

    async def refuse(self, request: RequestInfo, status: int, error: str) -> int:
        return await self._run(lambda state: state.refuse(request, status, error))

    async def counts(self) -> Counts:
        return await self._run(lambda state: state.counts())

    async def documents(
        self,
        *,
        user_session_id: str | None = None,
        request_id: int | None = None,
        kind: str | None = None,
        limit: int = 20,
        before_seq: int | None = None,
    ) -> list[StoredDocument]:
        return await self._run(
            lambda state: state.documents(user_session_id, request_id, kind, limit, before_seq)
        )

    async def requests(self, limit: int = 20) -> list[RequestRecord]:
        return await self._run(lambda state: state.requests(limit))

    async def _run(self, fn: Callable[[_State], T]) -> T:
        """Run on the I/O thread: one at a time, so the state needs no lock and the loop never blocks."""
        if self._executor is None or self._state is None:
            raise StoreError("store is not open")
        state = self._state

        def call() -> T:
            try:
                return fn(state)
            except OSError as exc:
                full = exc.errno in _FULL
                raise (StoreFull if full else StoreError)(f"files store {self.folder}: {exc}") from exc

        return await asyncio.wrap_future(self._executor.submit(call))

    def _load(self) -> _State:
        try:
            return _State.load(self.folder, self.rotate_bytes, self.read_only)
        except OSError as exc:
            raise StoreError(f"cannot open files store {self.folder}: {exc}") from exc


class _State:
    """Everything the store knows, owned by the I/O thread."""

    def __init__(self, folder: Path, rotate_bytes: int, lock_fd: int | None) -> None:
        self.folder = folder
        self.rotate_bytes = rotate_bytes
        self.lock_fd = lock_fd  # None: read-only, the folder may have a writer
        self.entries: dict[tuple[str, str], _Entry] = {}  # insertion order is seq order
        self.kinds: Counter[str] = Counter()
        # Requests: counted, the last RECENT_REQUESTS kept for reading (the file holds them all).
        self.recent: deque[RequestRecord] = deque(maxlen=RECENT_REQUESTS)
        self.request_count = self.refused_count = self.last_request = 0
        self.next_seq = 1
        self.current = 1  # the documents/index pair appended to
        self.fds: OrderedDict[str, int] = OrderedDict()  # the most recently used last
        self.broken: str | None = None

    # -- opening: scan, drop the uncommitted tail ----------------------------------------------
    @classmethod
    def load(cls, folder: Path, rotate_bytes: int, read_only: bool = False) -> _State:
        if read_only and not folder.is_dir():
            raise StoreError(f"{folder} does not exist: nothing was received there")
        if not read_only:
            _make_folder(folder)
        state = cls(folder, rotate_bytes, None if read_only else _lock(folder))
        try:
            state._scan()
        except BaseException:
            state.close()
            raise
        return state

    def _scan(self) -> None:
        tail = _committed_lines(
            self.folder / REQUESTS_FILE, _REQUEST_FIELDS, lambda _: True, self._count_request
        )
        self._drop(tail)
        numbers = _file_numbers(self.folder)
        for number in numbers:
            self._scan_pair(number)
        # In the order first seen, keys are in seq order unless an older pair of files was removed:
        # a replaced document is then first seen in a later file than keys with higher seqs.
        # (Sorting what is sorted already takes one pass.)
        self.entries = dict(sorted(self.entries.items(), key=lambda item: item[1].seq))
        self.current = max(numbers, default=1)
        self.kinds = Counter(kind for kind, _ in self.entries)
        self.next_seq = 1 + max((entry.seq for entry in self.entries.values()), default=0)

    def _count_request(self, line: dict[str, Any]) -> None:
        self.request_count += 1
        self.refused_count += line["status"] >= 400
        self.last_request = line["id"]
        self.recent.append(RequestRecord(**line))

    def _scan_pair(self, number: int) -> None:
        data_path = self.folder / documents_file(number)
        data_size = data_path.stat().st_size if data_path.exists() else 0
        data_end = 0

        def whole(line: dict[str, Any]) -> bool:
            # Requests commit in the order of their ids: one up to the last committed one is committed
            # (also when older request lines were trimmed from the file by hand); the one after it
            # is what a crash left uncommitted. Any later one means requests.ndjson lost its end:
            # truncating the index to it would drop committed documents.
            if line["request"] > self.last_request + 1 and self.lock_fd is not None:
                raise StoreError(
                    f"{index_file(number)} holds documents of request {line['request']}, but"
                    f" {REQUESTS_FILE} ends at request {self.last_request}: it was cut at its end or"
                    " replaced; restore it (the documents are kept until then)"
                )
            return bool(line["request"] <= self.last_request and line["offset"] + line["length"] < data_size)

        def take(line: dict[str, Any]) -> None:
            nonlocal data_end
            entry = _Entry(file=number, **line)
            self.entries[(entry.kind, entry.key)] = entry  # a later version replaces, in place
            data_end = max(data_end, entry.offset + entry.length + 1)

        tail = _committed_lines(self.folder / index_file(number), _INDEX_FIELDS, whole, take)
        self._drop(tail)
        self._drop(_Tail(data_path, data_end, data_size))

    def _drop(self, tail: _Tail) -> None:
        """An uncommitted tail is truncated by the writer; a reader leaves it (it may be a save under way)."""
        if self.lock_fd is not None:
            _truncate(tail)

    # -- writing -------------------------------------------------------------------------------
    def save(self, request: RequestInfo, documents: Sequence[Document]) -> SaveResult:
        self._check_writable()
        _check_one_line(documents)
        request_id = self._next_request_id()
        created, versions = self._versions(documents)
        number = self._file_for(sum(len(doc.body) + 1 for doc in versions.values()))
        entries = self._place(number, request_id, request.received_at, versions)
        record = _record(request, request_id, 200, None, len(documents), sum(created))
        self._commit(number, list(versions.values()), entries, record)
        self._remember(entries, record)
        return SaveResult(request_id, created)

    def refuse(self, request: RequestInfo, status: int, error: str) -> int:
        self._check_writable()
        record = _record(request, self._next_request_id(), status, error, 0, 0)
        self._commit(self.current, [], [], record)
        self._remember([], record)
        return record.id

    def _versions(self, documents: Sequence[Document]) -> tuple[list[bool], dict[tuple[str, str], Document]]:
        """Per document whether its key is new, and the version of each key to append: its first
        document, then the last of the later ones that replace."""
        created: list[bool] = []
        versions: dict[tuple[str, str], Document] = {}
        for doc in documents:
            key = (doc.kind, doc.key)
            known = key in self.entries or key in versions
            created.append(not known)
            if doc.replaces or not known:
                versions[key] = doc
        return created, versions

    def _file_for(self, size: int) -> int:
        """The documents file to append ``size`` bytes to: the next one when the current one would pass the limit."""
        current = self._size(documents_file(self.current))
        if current > 0 and current + size > self.rotate_bytes:
            self.current += 1
        return self.current

    def _place(
        self, number: int, request_id: int, at: int, versions: dict[tuple[str, str], Document]
    ) -> list[_Entry]:
        """Index entries for the versions, appended to documents file ``number``; known keys keep their seq."""
        offset = self._size(documents_file(number))
        seq = self.next_seq
        entries = []
        for (kind, key), doc in versions.items():
            known = self.entries.get((kind, key))
            if known is None:
                entry_seq, seq = seq, seq + 1
            else:
                entry_seq = known.seq
            session, index, length = doc.user_session_id, doc.index, len(doc.body)
            entry = _Entry(entry_seq, request_id, at, kind, key, session, index, number, offset, length)
            entries.append(entry)
            offset += len(doc.body) + 1
        return entries

    def _commit(
        self, number: int, docs: list[Document], entries: list[_Entry], record: RequestRecord
    ) -> None:
        """Append documents, then their index, then the request line (the commit), each fsync'd; undo on failure."""
        writes = [
            (documents_file(number), b"\n".join([*(doc.body for doc in docs), b""]) if docs else b""),
            (index_file(number), b"".join(entry.line() for entry in entries)),
            (REQUESTS_FILE, orjson.dumps(record) + b"\n"),
        ]
        writes = [(name, data) for name, data in writes if data]
        sizes = {name: self._size(name) for name, _ in writes}
        try:
            for name, data in writes:
                self._append(name, data)
        except OSError:
            self._roll_back(sizes)
            raise

    def _remember(self, entries: list[_Entry], record: RequestRecord) -> None:
        for entry in entries:
            key = (entry.kind, entry.key)
            if key not in self.entries:
                self.kinds[entry.kind] += 1
            self.entries[key] = entry  # a new version takes the old one's place: seq order holds
            self.next_seq = max(self.next_seq, entry.seq + 1)
        self.request_count += 1
        self.refused_count += record.status >= 400
        self.last_request = record.id
        self.recent.append(record)

    def _append(self, name: str, data: bytes) -> None:
        fd = self._fd(name)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)

    def _roll_back(self, sizes: dict[str, int]) -> None:
        try:
            for name, size in sizes.items():
                os.ftruncate(self._fd(name), size)
                os.fsync(self._fd(name))
        except OSError as exc:
            # The files may now end in a partial save: refuse writes until a reopen has scanned them.
            self.broken = str(exc)
            log.error("files store %s: cannot undo a failed save: %s", self.folder, exc)

    def _check_writable(self) -> None:
        if self.lock_fd is None:
            raise StoreError(f"files store {self.folder} is open read-only")
        if self.broken is not None:
            raise StoreError(
                f"files store {self.folder} must be reopened after a failed write: {self.broken}"
            )

    def _next_request_id(self) -> int:
        return self.last_request + 1

    # -- reading -------------------------------------------------------------------------------
    def counts(self) -> Counts:
        kinds = self.kinds
        return Counts(kinds[SESSION], kinds[LEGACY], kinds[DOCUMENT], self.request_count, self.refused_count)

    def documents(
        self,
        user_session_id: str | None,
        request_id: int | None,
        kind: str | None,
        limit: int,
        before_seq: int | None = None,
    ) -> list[StoredDocument]:
        found: list[_Entry] = []
        for entry in reversed(self.entries.values()):
            if len(found) >= limit:
                break
            if (before_seq is None or entry.seq < before_seq) and _matches(
                entry, user_session_id, request_id, kind
            ):
                found.append(entry)
        return [self._stored(entry) for entry in found]

    def requests(self, limit: int) -> list[RequestRecord]:
        return list(itertools.islice(reversed(self.recent), max(limit, 0)))

    def _stored(self, entry: _Entry) -> StoredDocument:
        body = os.pread(self._fd(documents_file(entry.file)), entry.length, entry.offset)
        if len(body) != entry.length:
            raise StoreError(
                f"files store {self.folder}: {documents_file(entry.file)} is shorter than its index"
            )
        return StoredDocument(
            entry.seq,
            entry.request,
            entry.received_at,
            entry.kind,
            entry.key,
            entry.session,
            entry.index,
            body,
        )

    # -- files ---------------------------------------------------------------------------------
    def _fd(self, name: str) -> int:
        """The file's descriptor, kept open while it is among the ``OPEN_FILES`` used last (every
        pair of files ever written would otherwise hold two until the store closes): appends
        always go to the end, preads read anywhere."""
        fd = self.fds.get(name)
        if fd is not None:
            self.fds.move_to_end(name)
            return fd
        path = self.folder / name
        new = self.lock_fd is not None and not path.exists()
        flags = os.O_RDONLY if self.lock_fd is None else os.O_RDWR | os.O_APPEND | os.O_CREAT
        fd = self.fds[name] = os.open(path, flags, 0o644)
        if new:
            _fsync_dir(self.folder)  # the new name must survive a power cut, not only its bytes
        while len(self.fds) > OPEN_FILES:
            os.close(self.fds.popitem(last=False)[1])
        return fd

    def _size(self, name: str) -> int:
        return os.fstat(self._fd(name)).st_size

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # releases the flock


def _record(
    request: RequestInfo, request_id: int, status: int, error: str | None, documents: int, stored: int
) -> RequestRecord:
    return RequestRecord(
        request_id,
        request.received_at,
        request.method,
        request.path,
        request.content_type,
        request.size,
        request.client,
        request.principal,
        status,
        documents,
        stored,
        documents - stored,
        error,
    )


def _matches(entry: _Entry, user_session_id: str | None, request_id: int | None, kind: str | None) -> bool:
    return (
        (user_session_id is None or entry.session == user_session_id)
        and (request_id is None or entry.request == request_id)
        and (kind is None or entry.kind == kind)
    )


def _check_one_line(documents: Sequence[Document]) -> None:
    for doc in documents:
        if b"\n" in doc.body or b"\r" in doc.body:
            raise StoreError(f"document {doc.key!r} spans lines: the files store keeps one document per line")


# -- the scan on open --------------------------------------------------------------------------
_REQUEST_FIELDS = frozenset(field.name for field in dataclasses.fields(RequestRecord))
_INDEX_FIELDS = frozenset(field.name for field in dataclasses.fields(_Entry)) - {"file"}


def _committed_lines(
    path: Path,
    fields: frozenset[str],
    keep: Callable[[dict[str, Any]], bool],
    take: Callable[[dict[str, Any]], None],
) -> _Tail:
    """``take`` each of the file's lines up to the first that is torn, unparsable or not to keep;
    return how much that is. Read line by line: the file is never held whole.

    After a crash only the last write can be partial, so whole lines to keep after a bad one mean
    damage, not a crash: refuse, rather than truncate committed data away.
    """
    if not path.exists():
        return _Tail(path, 0, 0)
    end = 0
    with path.open("rb") as file:
        pieces = iter(file)
        for piece in pieces:
            line = _parse(piece, fields) if piece.endswith(b"\n") else None  # unterminated: torn
            if line is None or not keep(line):
                break
            take(line)
            end += len(piece)
        for piece in pieces:
            if piece.endswith(b"\n") and (line := _parse(piece, fields)) is not None and keep(line):
                raise StoreError(f"{path} is damaged: committed lines follow an unreadable one at byte {end}")
        size = file.seek(0, os.SEEK_END)
    return _Tail(path, end, size)


def _parse(piece: bytes, fields: frozenset[str]) -> dict[str, Any] | None:
    try:
        line = orjson.loads(piece)
    except orjson.JSONDecodeError:
        return None
    return line if isinstance(line, dict) and line.keys() == fields else None


def _truncate(tail: _Tail) -> None:
    if tail.keep >= tail.size:
        return
    log.warning(
        "files store: dropping %d uncommitted bytes at the end of %s", tail.size - tail.keep, tail.path
    )
    with tail.path.open("r+b") as file:
        file.truncate(tail.keep)
        os.fsync(file.fileno())


def _file_numbers(folder: Path) -> list[int]:
    return sorted({int(match[1]) for name in os.listdir(folder) if (match := _NUMBERED.match(name))})


def _make_folder(folder: Path) -> None:
    if folder.is_dir():
        return
    make_private_dir(folder)
    _fsync_dir(folder.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock(folder: Path) -> int:
    """Hold the folder's lock file: two writers appending to the same files would interleave saves."""
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(f"{folder} is in use by another receiver") from None
    return fd
