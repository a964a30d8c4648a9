"""Log lines: the contract's fields, tracebacks in exc_info, secrets masked, records relayed from a child."""

from __future__ import annotations

import io
import json
import logging
import pickle
import sys

import pytest

from supervisor.config import LoggingSettings
from supervisor.ipc import message_to_record, record_to_message
from supervisor.logs import configure_logging, register_secret


@pytest.fixture
def capture() -> io.StringIO:
    stream = io.StringIO()
    configure_logging(LoggingSettings(level="DEBUG"), stream)
    yield stream
    for handler in logging.getLogger().handlers:
        handler.close()
    logging.getLogger().handlers.clear()


def written(stream: io.StringIO) -> str:
    """What the log's writer thread has written so far."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    return stream.getvalue()


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in written(stream).splitlines()]


def test_every_line_has_the_contract_fields(capture: io.StringIO) -> None:
    logging.getLogger("supervisor.test").info(
        "collected %s", "sql01", extra={"event": "collection.done", "tenant": "acme", "server": "sql01"}
    )
    logging.getLogger("other").warning("no event given")
    first, second = lines(capture)
    assert {"timestamp", "level", "logger", "message", "event", "pid"} <= first.keys()
    assert first["timestamp"].endswith("Z")
    assert (first["level"], first["logger"], first["message"]) == ("INFO", "supervisor.test", "collected sql01")
    assert (first["event"], first["tenant"], first["server"]) == ("collection.done", "acme", "sql01")
    assert second["event"] == "log"


def test_traceback_goes_to_exc_info_not_message(capture: io.StringIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("t").exception("it failed", extra={"event": "x"})
    [line] = lines(capture)
    assert line["message"] == "it failed"
    assert "ValueError: boom" in line["exc_info"]
    assert "Traceback" not in line["message"]


def test_secrets_are_masked_everywhere(capture: io.StringIO) -> None:
    register_secret("hunter2-secret")
    logging.getLogger("t").error(
        "login failed with hunter2-secret", extra={"event": "x", "error": "PWD={hunter2-secret};UID=sa"}
    )
    logging.getLogger("t").error("conn string PWD=plain;UID=x", extra={"event": "y"})
    output = written(capture)
    assert "hunter2" not in output
    assert "plain" not in output
    assert output.count("***") == 3


def test_a_record_relayed_from_a_child_keeps_its_fields(capture: io.StringIO) -> None:
    try:
        raise RuntimeError("child side")
    except RuntimeError:
        record = logging.getLogger("child").makeRecord(
            "child", logging.ERROR, __file__, 1, "failed %d", (3,), exc_info=sys.exc_info(),
            extra={"event": "collection.failed", "tenant": "acme"},
        )  # fmt: skip
    kind, payload = record_to_message(record)
    relayed = message_to_record(pickle.loads(pickle.dumps(payload)))
    logging.getLogger(relayed.name).handle(relayed)
    [line] = lines(capture)
    assert kind == "log"
    assert (line["message"], line["event"], line["tenant"]) == ("failed 3", "collection.failed", "acme")
    assert "RuntimeError: child side" in line["exc_info"]
    assert line["pid"] == record.process


def test_text_format_shows_control_characters_as_escapes() -> None:
    """A server's error text (ESC, BEL, CR, a newline) must not drive the terminal of someone running ``tail -f``."""
    stream = io.StringIO()
    configure_logging(LoggingSettings(level="DEBUG", format="text"), stream)
    try:
        logging.getLogger("supervisor.test").error("login failed: \x1b[31mred\x07\r\nnext", extra={"error": "\x1b]0;t"})
        try:
            raise ValueError("bad \x1b[2J")
        except ValueError:
            logging.getLogger("supervisor.test").exception("with a traceback")
        text = written(stream)
    finally:
        for handler in logging.getLogger().handlers:
            handler.close()
        logging.getLogger().handlers.clear()
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    first, *rest = text.splitlines()
    assert first.endswith("login failed: \\x1b[31mred\\x07\\r\\nnext [error=\\x1b]0;t]"), first
    assert any("ValueError: bad \\x1b[2J" in line for line in rest)


@pytest.mark.parametrize(("level", "shown"), [("INFO", False), ("WARNING", False), ("DEBUG", True)])
def test_psycopg_warnings_are_shown_only_at_debug(level: str, shown: bool) -> None:
    """During a PostgreSQL outage psycopg logged "error ignored terminating <psycopg.Pipeline …>: pipeline aborted"
    beside our own ``writer.db_unavailable`` (8 lines in 30 s on a full disk)."""
    stream = io.StringIO()
    configure_logging(LoggingSettings(level=level), stream)
    try:
        logging.getLogger("psycopg").warning("error ignored terminating <psycopg.Pipeline>: pipeline aborted")
        logging.getLogger("psycopg").error("an error of its own")
        messages = [line["message"] for line in lines(stream)]
        assert messages == (["error ignored terminating <psycopg.Pipeline>: pipeline aborted"] if shown else []) + [
            "an error of its own"
        ]
    finally:
        for handler in logging.getLogger().handlers:
            handler.close()
        logging.getLogger().handlers.clear()
        logging.getLogger("psycopg").setLevel(logging.NOTSET)
