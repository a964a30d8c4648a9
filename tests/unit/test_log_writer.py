"""The log output never blocks the code that logs: a reader that stops reading costs dropped lines (counted
in one ``log.dropped`` line when it reads again), not a stuck supervisor; a renamed or deleted log file is
reopened at its path."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from supervisor.config import LoggingSettings
from supervisor.errors import ConfigError
from supervisor.log_writer import DROPPED_EVENT, LogFile, NonBlockingLogHandler
from supervisor.logs import ContractJsonFormatter, open_log_file


def record(number: int) -> logging.LogRecord:
    line = logging.LogRecord("supervisor.test", logging.INFO, __file__, 0, "line %d", (number,), None)
    line.event = "test.line"
    return line


def handler_for(
    stream: io.TextIOBase | None, path: Path | None = None, capacity: int = 1 << 20
) -> NonBlockingLogHandler:
    handler = NonBlockingLogHandler(LogFile(str(path) if path else None, stream), capacity=capacity)  # type: ignore[arg-type]
    handler.setFormatter(ContractJsonFormatter())
    return handler


@pytest.fixture
def stuck_pipe() -> Iterator[tuple[io.TextIOWrapper, int]]:
    """A pipe whose reader reads nothing until the test does: a write to it blocks once it is full."""
    read_fd, write_fd = os.pipe()
    writer = os.fdopen(write_fd, "w", encoding="utf-8")
    yield writer, read_fd
    os.close(read_fd)
    if not writer.closed:
        writer.close()


def read_all(read_fd: int, into: list[bytes]) -> None:
    while chunk := os.read(read_fd, 65536):
        into.append(chunk)


def test_logging_goes_on_while_the_reader_is_stuck_and_the_loss_is_reported(
    stuck_pipe: tuple[io.TextIOWrapper, int],
) -> None:
    stream, read_fd = stuck_pipe
    handler = handler_for(stream, capacity=20_000)  # about 100 lines
    emitted = threading.Event()

    def log_many() -> None:
        for number in range(20_000):  # about 3 MB: far more than the pipe (64 KiB) and the queue hold
            handler.handle(record(number))
        emitted.set()

    threading.Thread(target=log_many, daemon=True).start()
    assert emitted.wait(60), "logging blocked on the stuck reader"
    received: list[bytes] = []
    reader = threading.Thread(target=read_all, args=(read_fd, received), daemon=True)
    reader.start()  # the reader is back
    handler.flush()
    handler.handle(record(-1))
    handler.close()
    stream.close()
    reader.join(30)
    lines = [json.loads(line) for line in b"".join(received).decode().splitlines()]
    reports = [line for line in lines if line["event"] == DROPPED_EVENT]
    written = [line for line in lines if line["event"] == "test.line"]
    assert sum(report["dropped"] for report in reports) == 20_000 - (len(written) - 1) > 0
    assert {report["level"] for report in reports} == {"WARNING"}
    numbers = [int(line["message"].split()[1]) for line in written]
    assert numbers[-1] == -1 and numbers[:-1] == sorted(numbers[:-1])
    assert lines.index(reports[-1]) < lines.index(written[-1])  # reported before the line that came after it


def test_a_renamed_or_deleted_log_file_is_reopened(tmp_path: Path) -> None:
    path = tmp_path / "collector.log"
    handler = handler_for(None, path)
    handler.handle(record(1))
    handler.flush()
    path.rename(tmp_path / "collector.log.1")
    handler.handle(record(2))
    handler.flush()
    assert "line 1" in (tmp_path / "collector.log.1").read_text()
    assert "line 2" not in (tmp_path / "collector.log.1").read_text()
    assert "line 2" in path.read_text()
    path.unlink()
    handler.handle(record(3))
    handler.close()
    assert [json.loads(line)["message"] for line in path.read_text().splitlines()] == ["line 3"]


def test_a_forked_copy_writes_nothing(tmp_path: Path) -> None:
    """A child inherits the parent's handler: logging or stopping through it must not write the parent's
    held lines a second time."""
    path = tmp_path / "collector.log"
    handler = handler_for(None, path)
    pid = os.fork()
    if pid == 0:
        handler.handle(record(99))
        handler.close()
        os._exit(0)
    os.waitpid(pid, 0)
    handler.handle(record(1))
    handler.close()
    assert [json.loads(line)["message"] for line in path.read_text().splitlines()] == ["line 1"]


class FillingDisk(LogFile):
    """A log file with ``room`` bytes left: a write takes what fits (a short write), then fails with ``error``."""

    def __init__(self, room: int, error: int) -> None:
        super().__init__(None, io.StringIO())
        self.room = room
        self.error = error
        self.out = bytearray()

    def ready(self, timeout: float) -> bool:
        return True

    def write_some(self, data: bytes) -> int:
        if self.room <= 0:
            raise OSError(self.error, os.strerror(self.error))
        taken = data[: self.room]
        self.room -= len(taken)
        self.out += taken
        return len(taken)


@pytest.mark.parametrize(("error", "capacity_lines"), [(errno.ENOSPC, 100), (errno.ENOSPC, 4), (errno.EIO, 100)])
def test_a_failing_log_file_costs_only_counted_lines_and_glues_none_to_a_half_one(
    error: int, capacity_lines: int
) -> None:
    """A full disk (ENOSPC) holds the lines until it has room again, as for a slow reader (up to the capacity;
    beyond, dropped and counted); another error loses what is held, counted. Before: any error lost the lines
    held; the half line a short write left was followed straight by the next (neither parsed); and the notice's
    count fell back to 1 each time writing it failed too (33 lines lost, 1 reported)."""
    disk = FillingDisk(0, error)
    line_length = len(ContractJsonFormatter().format(record(0))) + 1
    handler = NonBlockingLogHandler(disk, capacity=capacity_lines * line_length)
    handler.setFormatter(ContractJsonFormatter())
    disk.room = 2 * line_length + line_length // 2  # two lines and a half, then it fails
    for number in range(20):
        handler.handle(record(number))
        handler.write_pending()  # the parent's loop turning: the notice fails too
    disk.room = 1 << 20
    handler.handle(record(20))
    lines = disk.out.decode().splitlines()
    parsed = []
    for line in lines:
        with contextlib.suppress(ValueError):
            parsed.append(json.loads(line))
    written = [int(entry["message"].split()[1]) for entry in parsed if entry["event"] == "test.line"]
    dropped = sum(entry["dropped"] for entry in parsed if entry["event"] == DROPPED_EVENT)
    assert len(parsed) >= len(lines) - 1, lines  # at most one line does not parse: a cut one, on its own
    assert written == sorted(written) and written[:2] == [0, 1], written
    assert dropped == 21 - len(written), (dropped, written)  # every line not written is counted
    if error == errno.ENOSPC and capacity_lines > 21:
        assert written == list(range(21)) and len(parsed) == len(lines)  # nothing lost, nothing cut


def messages(path: Path) -> list[str]:
    return [json.loads(line)["message"] for line in path.read_text().splitlines()]


def read_available(read_fd: int) -> bytes:
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(read_fd, 65536):
            chunks.append(chunk)
    return b"".join(chunks)


def returns_soon(call: Callable[[], object], fifo: Path) -> bool:
    """Whether ``call`` returns within 5 s; if it waits for the FIFO's reader instead, one comes, to end it."""
    done = threading.Thread(target=call, daemon=True)
    done.start()
    done.join(5)
    if done.is_alive():
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        done.join(5)
        return False
    return True


def test_a_fifo_with_no_reader_is_an_error_at_start_not_a_wait(tmp_path: Path) -> None:
    """Before: ``open()`` waited for a reader, SIGTERM with it (only SIGKILL ended ``run``)."""
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            open_log_file(LoggingSettings(file=str(fifo)))
        except Exception as exc:  # what it raises is what the test checks
            errors.append(exc)

    assert returns_soon(open_it, fifo), "opening the log waited for the FIFO's reader"
    assert [type(error) for error in errors] == [ConfigError]
    assert str(errors[0]) == (
        f"invalid logging.file = {str(fifo)!r}: cannot open it: a FIFO with no reader (start its reader first)"
    )


def test_a_fifo_replaced_by_one_with_no_reader_holds_the_lines_until_it_has_one(tmp_path: Path) -> None:
    """Before: the parent's loop waited in ``open()`` of the new FIFO (no /healthz, no SIGTERM)."""
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    old_reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    handler = handler_for(None, fifo)
    handler.handle(record(1))
    assert b"line 1" in read_available(old_reader)
    fifo.unlink()
    os.mkfifo(fifo)
    os.close(old_reader)
    assert returns_soon(lambda: handler.handle(record(2)), fifo), "logging waited for the new FIFO's reader"
    handler.write_pending()  # a turn of the loop: still no reader
    new_reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    handler.write_pending()
    lines = [json.loads(line) for line in read_available(new_reader).decode().splitlines()]
    handler.close()
    os.close(new_reader)
    assert [line["message"] for line in lines] == ["line 2"]


@pytest.mark.parametrize("capacity_lines", [100, 3])
def test_lines_logged_while_the_log_folder_is_deleted_go_to_the_file_made_again(
    tmp_path: Path, capacity_lines: int
) -> None:
    """Held (up to the capacity; beyond, dropped and counted) until the path opens again. Before: written to
    the deleted file, lost without a word."""
    folder = tmp_path / "logs"
    folder.mkdir()
    path = folder / "collector.log"
    line_length = len(ContractJsonFormatter().format(record(0))) + 1
    handler = handler_for(None, path, capacity=capacity_lines * line_length)
    handler.handle(record(0))
    shutil.rmtree(folder)
    for number in range(1, 11):
        handler.handle(record(number))
        handler.write_pending()
    folder.mkdir()
    handler.write_pending()  # the loop's next turn
    handler.handle(record(11))
    handler.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    written = [int(line["message"].split()[1]) for line in lines if line["event"] == "test.line"]
    dropped = sum(line["dropped"] for line in lines if line["event"] == DROPPED_EVENT)
    if capacity_lines > 11:
        assert written == list(range(1, 12)) and dropped == 0
    else:
        assert written == [1, 2, 3, 11] and dropped == 7
        assert lines[3]["event"] == DROPPED_EVENT  # where the gap is


def test_a_renamed_log_file_is_written_on_while_its_path_cannot_be_opened(tmp_path: Path) -> None:
    path = tmp_path / "collector.log"
    handler = handler_for(None, path)
    handler.handle(record(1))
    path.rename(tmp_path / "collector.log.1")
    path.mkdir()  # the path cannot be opened for writing
    handler.handle(record(2))
    handler.close()
    assert messages(tmp_path / "collector.log.1") == ["line 1", "line 2"]


def test_at_stop_the_lines_held_wait_for_the_log_folder_too(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    path = folder / "collector.log"
    handler = handler_for(None, path)
    handler.handle(record(0))
    shutil.rmtree(folder)
    handler.handle(record(1))
    threading.Timer(0.3, folder.mkdir).start()
    handler.close()  # waits up to FLUSH_TIMEOUT
    assert messages(path) == ["line 1"]
