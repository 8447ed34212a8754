"""A member import file kept in the database (every host can read it), in ordered chunks, until its job ends."""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from tortoise import fields
from tortoise.models import Model

CHUNK_BYTES = 256 * 1024


async def file_chunks(upload: BinaryIO) -> AsyncIterator[bytes]:
    """A local file (the CLI's, a bench's) as upload chunks, each read in a thread so the loop keeps running."""
    while chunk := await asyncio.to_thread(upload.read, CHUNK_BYTES):
        yield chunk


BOM = b"\xef\xbb\xbf"


class ImportChunk(Model):
    id = fields.BigIntField(primary_key=True)
    upload_key = fields.CharField(max_length=32)
    seq = fields.IntField()
    data = fields.BinaryField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "import_chunk"
        unique_together = (("upload_key", "seq"),)
        table_description = "A member import file, 256 KiB a row in order, deleted when its job finishes or fails."


@dataclass(frozen=True)
class StoredUpload:
    key: str
    size: int
    head: bytes  # the first chunk: enough to check the header before a job is created


async def store_upload(*, body: AsyncIterable[bytes]) -> StoredUpload:
    """Save a file as it arrives, in 256 KiB rows (never all in memory); nothing is kept if it fails part-way."""
    key, buffer, seq, size, head = secrets.token_hex(16), bytearray(), 0, 0, b""
    try:
        async for piece in body:
            buffer += piece
            size += len(piece)
            while len(buffer) >= CHUNK_BYTES:
                chunk = bytes(buffer[:CHUNK_BYTES])
                del buffer[:CHUNK_BYTES]
                await ImportChunk.create(upload_key=key, seq=seq, data=chunk)
                head, seq = head or chunk, seq + 1
        if buffer:
            await ImportChunk.create(upload_key=key, seq=seq, data=bytes(buffer))
            head = head or bytes(buffer)
    except BaseException:
        await delete_upload(key=key)
        raise
    return StoredUpload(key=key, size=size, head=head)


async def read_chunk(*, key: str, seq: int) -> bytes | None:
    """One chunk of an upload, or None past its end."""
    chunk = await ImportChunk.filter(upload_key=key, seq=seq).first()
    return None if chunk is None else bytes(chunk.data)


async def delete_upload(*, key: str) -> int:
    """Drop an upload's chunks (the caller's transaction, if any); returns how many."""
    return await ImportChunk.filter(upload_key=key).delete()


async def list_stale_uploads(*, before: datetime, limit: int = 100) -> list[str]:
    """Keys of uploads whose first chunk was written before `before`."""
    rows = ImportChunk.filter(seq=0, created_at__lt=before).order_by("id").limit(limit)
    return [str(key) for key in await rows.values_list("upload_key", flat=True)]


class UploadLines:
    """An upload's lines from a byte offset (a record boundary), as text; iterate it from a worker thread.

    Chunks are fetched one at a time through the event loop, so a large file is never held in memory; `consumed`
    is the byte offset after the last line handed out, i.e. the resume point once the CSV reader ends a record.
    """

    def __init__(
        self,
        key: str,
        start: int,
        loop: asyncio.AbstractEventLoop,
        on_chunk: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.key, self.loop, self.on_chunk = key, loop, on_chunk
        self.seq, self.skip = divmod(start, CHUNK_BYTES)
        self.consumed = start
        self.pending: deque[bytes] = deque()
        self.carry = b""
        self.eof = False
        self.at_start = start == 0

    def __iter__(self) -> UploadLines:
        return self

    def __next__(self) -> str:
        while not self.pending:
            if self.eof:
                raise StopIteration
            self._fill()
        raw = self.pending.popleft()
        self.consumed += len(raw)
        if self.at_start:  # utf-8-sig: an Excel BOM opens the file, not the first column's name
            self.at_start = False
            raw = raw.removeprefix(BOM)
        # surrogateescape: a stray non-UTF-8 byte rejects its row instead of stopping the whole file
        return raw.decode("utf-8", "surrogateescape")

    async def _fetch(self, seq: int) -> bytes | None:
        if self.on_chunk is not None:
            await self.on_chunk()
        return await read_chunk(key=self.key, seq=seq)

    def _fill(self) -> None:
        data = asyncio.run_coroutine_threadsafe(self._fetch(self.seq), self.loop).result()
        if data is None:
            self.eof = True
            if self.carry:
                self.pending.append(self.carry)
                self.carry = b""
            return
        self.seq += 1
        data, self.skip = self.carry + data[self.skip :], 0
        lines = data.splitlines(keepends=True)  # \n, \r\n and \r end a line, as open(newline="") splits
        # the last piece has no end yet, or ends in \r whose \n may open the next chunk
        self.carry = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
        self.pending.extend(lines)
