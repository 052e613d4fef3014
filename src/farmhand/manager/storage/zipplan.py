"""A job's zip (outputs.zip, inputs.zip) laid out before it is sent, so any range of it
can be served: a 30 GB download cut off at 29 GB resumes with `Range`, not from zero.

Every byte of the zip follows from its entries (name, size, CRC-32, blob) and one
timestamp, all known before the first byte is sent:

- entries are stored (ZIP_STORED), not deflated: images are compressed already, and a
  stored entry's size is its file's;
- each entry's CRC-32 is in its local header, before its bytes (no data descriptors):
  the blob store takes it as a blob is written (`blobs.py`, the `blobs.crc32` column),
  and a blob stored before that has it taken once, by its first zip (`fill_crc32s`);
- ZIP64 records where a size or an offset needs them (past 2 GiB, as zipfile does, or
  more than 65,534 entries), and not otherwise, so small zips open anywhere;
- one timestamp for every entry, the job's creation (see `ZipPlan`).

So the zip's length is exact (`Content-Length`), two downloads of one job's zip are the
same bytes, and its `ETag` (`ZipPlan.etag`) names them: a client that has part of it
resumes with `Range` and `If-Range` (`api/ranges.py`), and a part of another zip (a
frame rendered again, another template) is never spliced on.

A range reads only the files it touches, each opened when its turn comes (see
`archive.py` on why not all up front), and memory stays constant whatever the job's
size (a few chunks; the layout itself is a few integers per entry). A file that is gone
when its turn comes (its job purged meanwhile) ends the answer with `EntryVanished`:
what was sent then reads as the broken zip it is.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from farmhand.manager.db.engine import Database
from farmhand.manager.db.models import Blob, JobFile
from farmhand.manager.storage.archive import EntryVanished

CHUNK = 1024 * 1024
LAYOUT = "farmhand-zip-1"
"""The layout's version, part of every ETag: a change to how the bytes are laid out (a
header field, the order of records) must change it, or a client resuming a zip of the
old layout would splice new bytes onto old ones."""

_ZIP64_LIMIT = (1 << 31) - 1
"""Sizes and offsets past this get ZIP64 records, as zipfile writes them: some readers
take the 32-bit fields as signed."""
_COUNT_LIMIT = 0xFFFF - 1
"""More entries than this get a ZIP64 end record (0xFFFF itself means "see ZIP64")."""
_FULL32 = 0xFFFFFFFF
_UTF8 = 0x0800
"""General purpose flag bit 11: the name is UTF-8 (set for a name outside ASCII)."""
_UNIX = 3
_FILE_MODE = 0o100644 << 16
"""A regular file, rw-r--r--, in the external attributes (unzip on POSIX applies it)."""

_LOCAL = struct.Struct("<4s5H3L2H")
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_END = struct.Struct("<4s4H2LH")
_END64 = struct.Struct("<4sQ2H2L4Q")
_LOCATOR64 = struct.Struct("<4sLQL")


@dataclass(frozen=True)
class ZipEntry:
    """One file of a zip: its name in it, and its blob's SHA-256, size and CRC-32."""

    name: str
    sha256: str
    size: int
    crc32: int


class ZipPlan:
    """The layout of a zip of `entries`, every entry stamped `stamp`, their bytes read
    from `path_for(sha256)` (the blob store's file).

    The stamp is the job's creation time, not each file's: a file rendered again keeps
    the zip's other bytes, and the bytes stay the same between two downloads, which a
    resumed one needs. Not the DOS epoch (1980-01-01) either, which file managers show
    as a wrong date on every extracted frame: the job's creation is a true "made no
    earlier than". It is written twice: as a DOS date (local time in the format, here
    UTC: the manager's clock) and as an "extended timestamp" in UTC, which Info-ZIP
    unzip and 7-Zip set on the extracted file. The stamp is part of the ETag."""

    def __init__(
        self, entries: Sequence[ZipEntry], stamp: datetime, path_for: Callable[[str], Path]
    ) -> None:
        self.entries = entries
        self._path_for = path_for
        stamp = stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)
        stamp = stamp.astimezone(UTC)
        self._stamp = stamp
        clamped = min(
            max(stamp, datetime(1980, 1, 1, tzinfo=UTC)), datetime(2107, 12, 31, tzinfo=UTC)
        )
        self._dos_time = (clamped.hour << 11) | (clamped.minute << 5) | (clamped.second // 2)
        self._dos_date = ((clamped.year - 1980) << 9) | (clamped.month << 5) | clamped.day
        self._unix_time = min(max(int(stamp.timestamp()), 0), _FULL32)
        self._headers: list[int] = []
        """Where each entry's local header begins."""
        offset = 0
        for index, entry in enumerate(entries):
            self._headers.append(offset)
            offset += self._local_length(index) + entry.size
        self._central_start = offset
        self._centrals: list[int] = []
        """Where each entry's central directory record begins."""
        for index in range(len(entries)):
            self._centrals.append(offset)
            offset += self._central_length(index)
        self._end_start = offset
        self._end = self._end_records()
        self.size = offset + len(self._end)
        """The zip's length in bytes."""
        described = json.dumps(
            [LAYOUT, stamp.isoformat(), [[entry.name, entry.sha256] for entry in entries]],
            ensure_ascii=True,
        )
        self.etag = f'"zip-{hashlib.sha256(described.encode()).hexdigest()}"'
        """A strong validator: two zips with one ETag are the same bytes (their names,
        contents, stamp and layout are), so a part of one resumes the other. Names and
        contents suffice (a template shows in the names; sizes and CRCs follow from the
        contents)."""

    # ------------------------------------------------------------------ records

    def _zip64_size(self, index: int) -> bool:
        return self.entries[index].size > _ZIP64_LIMIT

    def _local_extra(self, index: int) -> bytes:
        extra = self._timestamp_extra()
        if self._zip64_size(index):
            size = self.entries[index].size
            extra += struct.pack("<2H2Q", 0x0001, 16, size, size)
        return extra

    def _timestamp_extra(self) -> bytes:
        """The "extended timestamp" field (0x5455): the modification time, in UTC."""
        return struct.pack("<2HBL", 0x5455, 5, 1, self._unix_time)

    def _name(self, index: int) -> tuple[bytes, int]:
        """The entry's name as stored, and its flags: UTF-8 (bit 11) beyond ASCII."""
        name = self.entries[index].name
        if name.isascii():
            return name.encode("ascii"), 0
        return name.encode("utf-8"), _UTF8

    def _local_length(self, index: int) -> int:
        return _LOCAL.size + len(self._name(index)[0]) + len(self._local_extra(index))

    def _local_header(self, index: int) -> bytes:
        entry = self.entries[index]
        name, flags = self._name(index)
        extra = self._local_extra(index)
        zip64 = self._zip64_size(index)
        size = _FULL32 if zip64 else entry.size
        return (
            _LOCAL.pack(
                b"PK\x03\x04",
                45 if zip64 else 20,
                flags,
                0,  # stored
                self._dos_time,
                self._dos_date,
                entry.crc32,
                size,
                size,
                len(name),
                len(extra),
            )
            + name
            + extra
        )

    def _central_fields(self, index: int) -> tuple[int, int, bytes]:
        """The size and offset as the central record says them (0xFFFFFFFF: in the
        ZIP64 field), and its extra fields."""
        entry, offset = self.entries[index], self._headers[index]
        zip64 = b""
        size = entry.size
        if entry.size > _ZIP64_LIMIT:
            zip64 += struct.pack("<2Q", entry.size, entry.size)
            size = _FULL32
        if offset > _ZIP64_LIMIT:
            zip64 += struct.pack("<Q", offset)
            offset = _FULL32
        extra = self._timestamp_extra()
        if zip64:
            extra += struct.pack("<2H", 0x0001, len(zip64)) + zip64
        return size, offset, extra

    def _central_length(self, index: int) -> int:
        _, _, extra = self._central_fields(index)
        return _CENTRAL.size + len(self._name(index)[0]) + len(extra)

    def _central_record(self, index: int) -> bytes:
        entry = self.entries[index]
        name, flags = self._name(index)
        size, offset, extra = self._central_fields(index)
        version = 45 if len(extra) > len(self._timestamp_extra()) else 20
        return (
            _CENTRAL.pack(
                b"PK\x01\x02",
                (_UNIX << 8) | version,
                version,
                flags,
                0,  # stored
                self._dos_time,
                self._dos_date,
                entry.crc32,
                size,
                size,
                len(name),
                len(extra),
                0,  # no comment
                0,  # disk 0
                0,  # internal attributes
                _FILE_MODE,
                offset,
            )
            + name
            + extra
        )

    def _end_records(self) -> bytes:
        count = len(self.entries)
        start, length = self._central_start, self._end_start - self._central_start
        end = b""
        if count > _COUNT_LIMIT or start > _ZIP64_LIMIT or length > _ZIP64_LIMIT:
            end += _END64.pack(
                b"PK\x06\x06", _END64.size - 12, (_UNIX << 8) | 45, 45, 0, 0, count, count,
                length, start,
            )  # fmt: skip
            end += _LOCATOR64.pack(b"PK\x06\x07", 0, self._end_start, 1)
            count, length, start = min(count, 0xFFFF), min(length, _FULL32), min(start, _FULL32)
        return end + _END.pack(b"PK\x05\x06", 0, 0, count, count, length, start, 0)

    # ------------------------------------------------------------------ bytes

    def iter_bytes(self, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        """The zip's bytes from `start`, `length` of them (None: to the end), in chunks
        of about `CHUNK`: only the files the range touches are read. `EntryVanished`
        if one of them is gone (or shorter than its blob was) when its turn comes."""
        stop = self.size if length is None else min(self.size, start + length)
        return _gathered(self._pieces(start, stop))

    def _pieces(self, position: int, stop: int) -> Iterator[bytes]:
        index = bisect_right(self._headers, position) - 1
        while position < stop and 0 <= index < len(self.entries):
            entry, header_start = self.entries[index], self._headers[index]
            header = self._local_header(index)
            data_start = header_start + len(header)
            if position < data_start:
                upto = min(stop, data_start)
                yield header[position - header_start : upto - header_start]
                position = upto
            data_end = data_start + entry.size
            if data_start <= position < min(stop, data_end):
                upto = min(stop, data_end)
                yield from self._file_bytes(entry, position - data_start, upto - position)
                position = upto
            index += 1
        if position < stop and position < self._end_start:
            index = bisect_right(self._centrals, position) - 1
            while position < min(stop, self._end_start):
                record_start = self._centrals[index]
                record = self._central_record(index)
                upto = min(stop, record_start + len(record))
                yield record[position - record_start : upto - record_start]
                position = upto
                index += 1
        if position < stop:
            yield self._end[position - self._end_start : stop - self._end_start]

    def _file_bytes(self, entry: ZipEntry, offset: int, count: int) -> Iterator[bytes]:
        """`count` bytes of the entry's file from `offset`, the file opened only now."""
        path = self._path_for(entry.sha256)
        try:
            source = path.open("rb")
        except FileNotFoundError:
            raise EntryVanished(entry.name, path) from None
        with source:
            source.seek(offset)
            while count:
                chunk = source.read(min(CHUNK, count))
                if not chunk:  # shorter than its blob: never a zip that looks whole
                    raise EntryVanished(entry.name, path)
                count -= len(chunk)
                yield chunk


def _gathered(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """Small pieces (headers, the files of a job of small frames) gathered into chunks
    of about `CHUNK`: each chunk of a streamed answer is a trip to a thread and a send."""
    held: list[bytes] = []
    size = 0
    for piece in pieces:
        if len(piece) >= CHUNK:
            if held:
                yield b"".join(held)
                held, size = [], 0
            yield piece
            continue
        held.append(piece)
        size += len(piece)
        if size >= CHUNK:
            yield b"".join(held)
            held, size = [], 0
    if held:
        yield b"".join(held)


def crc32_of(path: Path) -> int:
    """The CRC-32 of a file's bytes, read chunk by chunk (a blob stored before its
    CRC-32 was kept)."""
    crc = 0
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def blob_facts(session: Session, job_id: int) -> dict[str, tuple[int, int | None]]:
    """Size and CRC-32 (None: not taken yet) of every blob that is a file of the job."""
    query = select(Blob.sha256, Blob.size, Blob.crc32).where(
        Blob.sha256.in_(select(JobFile.sha256).where(JobFile.job_id == job_id))
    )
    return {sha: (size, crc) for sha, size, crc in session.execute(query)}


def store_crc32s(
    db: Database, path_for: Callable[[str], Path], hashes: Iterable[str]
) -> dict[str, int]:
    """The CRC-32 of each of these blobs, which had none stored (stored before it was
    kept), taken now and stored, so that the next zip holding them reads them only to
    send them.

    Each file is read outside any transaction (a big one takes a while, and the write
    lock would hold every other writer back meanwhile), then all are stored in one
    short write, where none was stored meanwhile. `FileNotFoundError` if a file is gone
    (its job purged meanwhile), before any answer has begun."""
    taken = {sha: crc32_of(path_for(sha)) for sha in sorted(set(hashes))}
    if taken:
        with db.transaction() as session:
            session.connection().execute(  # Core: one statement for all of them
                update(Blob)
                .where(Blob.sha256 == bindparam("sha"), Blob.crc32.is_(None))
                .values(crc32=bindparam("crc")),
                [{"sha": sha, "crc": crc} for sha, crc in taken.items()],
            )
    return taken
