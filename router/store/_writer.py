"""Group commits: one thread owns the SQLite connection and commits batches.

An fsync'd commit per attempt caps a durable router near a thousand attempts a
second, whatever the providers could take. Operations are gathered on the event
loop during one iteration and handed to one thread in a single put (waking a
thread costs more than the SQL), which runs whatever has accumulated in one
``BEGIN IMMEDIATE`` transaction and commits once: each caller still waits for
its own durable commit, and no transaction is ever held across an ``await``.
If an operation fails, the whole batch is rolled back and its operations are run
again one by one, so one failure spoils nothing else. Whatever happens (a full disk,
an I/O error, a damaged file), every waiting caller is settled with the error and
the thread carries on: the store never hangs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar, Union

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], Any]
AnyFuture = Union["asyncio.Future[Any]", "concurrent.futures.Future[Any]"]
Job = tuple[Operation, AnyFuture]
Settled = tuple[AnyFuture, Any, BaseException | None]
_MAX_BATCH = 512


class GroupCommitWriter:
    """Runs operations on one connection in batched transactions, from a thread."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._queue: queue.SimpleQueue[list[Job] | None] = queue.SimpleQueue()  # None: stop
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gathering: list[Job] = []

    async def start(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="backchannel-store", daemon=True
        )
        self._thread.start()
        await ready

    async def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(None)
        await asyncio.to_thread(thread.join)

    async def run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``operation`` in the next group commit and wait until it is durable."""
        if self._thread is None or self._loop is None:
            raise RuntimeError("store is not open")
        if not self._thread.is_alive():
            raise sqlite3.OperationalError("the store's writer has stopped")
        future: asyncio.Future[T] = self._loop.create_future()
        if not self._gathering:
            self._loop.call_soon(self._hand_over)
        self._gathering.append((operation, future))
        return await future

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run_blocking(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``operation`` on the writer's connection and wait for it here, blocking the
        calling thread (the event loop's, for a synchronous reader): the writer needs
        nothing from the loop to run it, so this cannot deadlock."""
        if self._thread is None or not self._thread.is_alive():
            raise sqlite3.OperationalError("the store's writer has stopped")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put([(operation, future)])
        return future.result()

    def _hand_over(self) -> None:
        batch, self._gathering = self._gathering, []
        self._queue.put(batch)

    def _run(self, ready: asyncio.Future[None]) -> None:
        loop = self._loop
        assert loop is not None
        try:
            connection = self._connect()
        except Exception as exc:  # reported to start(), which re-raises in the caller
            failed: list[Settled] = [(ready, None, exc)]
            loop.call_soon_threadsafe(_settle, failed)
            return
        opened: list[Settled] = [(ready, None, None)]
        loop.call_soon_threadsafe(_settle, opened)
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    break
                batch = list(first)
                while len(batch) < _MAX_BATCH:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        self._queue.put(None)
                        break
                    batch.extend(item)
                try:
                    settled = _commit(connection, batch)
                except BaseException as exc:  # every caller must hear of it
                    settled = [(future, None, exc) for _, future in batch]
                # A blocked reader waits in a thread of its own: answered from here, since
                # the loop it would otherwise be answered on may be the one it blocks.
                blocking: list[Settled] = []
                waiting: list[Settled] = []
                for entry in settled:
                    is_blocking = isinstance(entry[0], concurrent.futures.Future)
                    (blocking if is_blocking else waiting).append(entry)
                _settle(blocking)
                if waiting:
                    loop.call_soon_threadsafe(_settle, waiting)
        finally:
            connection.close()


def _commit(db: sqlite3.Connection, batch: list[Job]) -> list[Settled]:
    """Run a batch in one transaction; return (future, result, error) for each operation."""
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        return [(future, None, exc) for _, future in batch]
    settled: list[Settled] = []
    try:
        for operation, future in batch:
            settled.append((future, operation(db), None))
        db.execute("COMMIT")
    except Exception as exc:
        _roll_back(db)
        if len(batch) == 1 or _fatal(exc):
            # A full disk or a damaged file fails every operation alike: one attempt each
            # would only fail again, slowly.
            return [(future, None, exc) for _, future in batch]
        # Rare: find which operation failed by running each in a transaction of its own.
        return [entry for job in batch for entry in _commit(db, [job])]
    return settled


def _roll_back(db: sqlite3.Connection) -> None:
    # SQLite may already have rolled back on its own (SQLITE_FULL, SQLITE_IOERR): a second
    # ROLLBACK would raise "no transaction is active" and must not kill the writer.
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")


def _fatal(exc: Exception) -> bool:
    """Errors of the file or the disk, not of one operation."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError)


def _settle(settled: list[Settled]) -> None:
    for future, result, error in settled:
        if future.done():  # the caller was cancelled; the write stands regardless
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
