"""Pure pieces of ``server show``, ``server list`` and ``server set``: text charts, the window, error text cut
at a word, the encryption hint, ``server set`` taking every option of ``server add``."""

from __future__ import annotations

import argparse
import datetime as dt

import pytest

from supervisor import charts
from supervisor.children.odbc_driver import CERTIFICATE_HINT, ENCRYPT_HINT, connection_hint, with_hint
from supervisor.cli.main import build_parser
from supervisor.cli.options import copy_options
from supervisor.cli.server_listing import shorten
from supervisor.cli.show_cmd import parse_since
from supervisor.errors import UsageError


def test_sparkline_is_scaled_to_its_own_values() -> None:
    assert charts.sparkline([41, 42, 43, 44]) == "▁▃▆█"
    assert charts.sparkline([0, 100]) == "▁█"
    assert charts.sparkline([5, None, 5]) == "▄ ▄"  # flat: half height; a gap is blank
    assert charts.sparkline([None, None]) == "  "
    assert set(charts.sparkline([149.9, 150.1, 150.0])) <= {"▄", "▅"}  # noise is not blown up to full height


def test_area_chart_fills_columns_up_to_their_value() -> None:
    rows = charts.area_chart([10, 20, None, 30], rows=2)
    assert len(rows) == 2 and all(len(row) == 4 for row in rows)
    top, bottom = rows
    assert bottom[0] == "▁" and top[0] == " "  # the lowest value is the smallest bar, not nothing
    assert top[3] == "█" and bottom[3] == "█"  # the highest reaches the top
    assert top[2] == " " and bottom[2] == " "  # no data
    assert bottom[1] == "█" and top[1] in charts.BLOCKS[:5]


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.4237, "0.42"), (7.5, "7.5"), (43.0, "43"), (1234.4, "1,234"), (12345, "12.3k"), (4.5e6, "4.5M"), (None, "-")],
)
def test_numbers_for_labels(value: float | None, text: str) -> None:
    assert charts.number(value) == text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("1h", 3600), ("1h30m", 5400), ("7d", 604800), ("2w", 1209600), ("1.5h", 5400),
     ("1d2h3m4s", 93784)],
)
def test_since_durations(text: str, seconds: int) -> None:
    assert parse_since(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "1", "h", "5x", "1h 30m", "-1h", "0s", "99999d", "1h;drop", "1h1h", "30m1h"])
def test_bad_since_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="--since"):
        parse_since(text)


def test_error_text_is_cut_at_a_word() -> None:
    text = "[08001] [FreeTDS][SQL Server]Unable to connect to data source (0) (SQLDriverConnect)"
    short = shorten(text, 48)
    assert len(short) <= 48 and short.endswith("…")
    assert text.startswith(short[:-1]) and text[len(short) - 1] == " "  # cut before a space, not mid-word
    assert shorten("short", 48) == "short"
    assert shorten("a  b\nc", 48) == "a b c"


def test_encryption_hint_only_with_encryption_on_and_a_reached_server() -> None:
    bare = "[08001] [FreeTDS][SQL Server]Unable to connect to data source (0) (SQLDriverConnect)"
    assert connection_hint(bare, "yes") == ENCRYPT_HINT and "--encrypt optional" in ENCRYPT_HINT
    assert connection_hint("[08001] Encryption not supported on SQL Server. (20)", "strict") == ENCRYPT_HINT
    assert connection_hint(bare, "no") is None and connection_hint(bare, "optional") is None
    unreachable = "[08S01] Unable to connect: Adaptive Server is unavailable or does not exist (20009)"
    assert connection_hint(unreachable, "yes") is None
    freetds_timeout = "[HYT00] [FreeTDS][SQL Server]Timeout expired (0) (SQLDriverConnect)"  # a lossy link
    assert connection_hint(freetds_timeout, "yes") is None
    assert connection_hint("[HYT00] Login timeout expired (0)", "yes") is None
    assert connection_hint("SSL routines: certificate verify failed", "yes") == CERTIFICATE_HINT
    assert with_hint(bare, "yes") == f"{bare} ({ENCRYPT_HINT})"
    assert with_hint(with_hint(bare, "yes"), "yes") == with_hint(bare, "yes")


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: action for action in parser._actions for flag in action.option_strings if flag != "-h"}


def test_server_set_takes_every_option_of_server_add() -> None:
    parser = build_parser()
    server = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["server"]
    actions = next(a for a in server._actions if isinstance(a, argparse._SubParsersAction)).choices
    add, set_ = _options(actions["add"]), _options(actions["set"])
    assert set(add) <= set(set_)
    for flag, action in add.items():
        twin = set_[flag]
        assert (twin.dest, twin.choices, twin.type, twin.nargs) == (
            action.dest,
            action.choices,
            action.type,
            action.nargs,
        )
        assert twin.required is False and twin.default is argparse.SUPPRESS
    given = parser.parse_args(["server", "set", "acme", "sql01", "--port", "1533"])
    assert given.port == 1533 and not hasattr(given, "host") and not hasattr(given, "interval")
    with pytest.raises(SystemExit):  # the mutually exclusive password sources stay exclusive
        parser.parse_args(["server", "set", "acme", "sql01", "--password-env", "X", "--password-stdin"])


def test_copy_options_copies_options_added_later() -> None:
    source, target = argparse.ArgumentParser(), argparse.ArgumentParser()
    source.add_argument("tenant")
    source.add_argument("--host", required=True)
    source.add_argument("--new-option", type=int, default=7)
    assert copy_options(source, target) == ["host", "new_option"]
    assert vars(target.parse_args([])) == {}
    assert vars(target.parse_args(["--new-option", "3"])) == {"new_option": 3}


def test_bridging_fills_buckets_between_collections_but_not_an_outage() -> None:
    from supervisor.history import bridge

    every_third = [1.0, None, None, 4.0, None, None, 7.0, None, None, 10.0]
    assert bridge(every_third) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    missed_one = [1.0, None, None, 4.0, None, None, None, None, None, 10.0, None, None, 13.0]
    bridged = bridge(missed_one)
    assert bridged[1:3] == [2.0, 3.0] and bridged[4:9] == [None] * 5  # a missing collection stays a gap
    assert bridge([None, 1.0, None, 2.0]) == [None, 1.0, None, 2.0]  # too few values to know the spacing


def test_a_header_too_long_for_80_columns_puts_the_collection_part_on_its_own_line() -> None:
    """A five-digit port and a two-digit age made the first line 81 columns (found by test_server_views)."""
    import datetime as dt
    from types import SimpleNamespace

    from supervisor.cli.show_text import _header

    now = dt.datetime(2026, 12, 2, 1, 0, 0)
    info = SimpleNamespace(
        interval_seconds=None, enabled=True, status_changed_at=now - dt.timedelta(seconds=12), tenant="a",
        name="a-ok", host="127.0.0.1", port=10587, status="online", removed_at=None, last_success_at=now,
        last_error=None, last_error_class=None,
    )
    data = SimpleNamespace(info=info, now=now, tenant="a", latest=None, hint=None)
    lines = _header(data)  # type: ignore[arg-type]
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0] == "a / a-ok  127.0.0.1:10587  online for 12s"
    assert lines[1] == "(collection enabled, default interval)"
    info.port = 1433
    assert _header(data)[0] == "a / a-ok  127.0.0.1:1433  online for 12s  (collection enabled, default interval)"  # type: ignore[arg-type]
