"""Addresses, settings and log formatting."""

from __future__ import annotations

import json
import logging

import pytest

from acmezone_common.addresses import HostPort
from acmezone_common.logs import JsonFormatter, TextFormatter


@pytest.mark.parametrize(
    ("text", "host", "port", "back"),
    [
        ("127.0.0.1:53", "127.0.0.1", 53, "127.0.0.1:53"),
        ("[::1]:5353", "::1", 5353, "[::1]:5353"),
        ("localhost:0", "localhost", 0, "localhost:0"),
        (":8053", "0.0.0.0", 8053, "0.0.0.0:8053"),
    ],
)
def test_host_port_round_trip(text: str, host: str, port: int, back: str) -> None:
    parsed = HostPort.parse(text)
    assert (parsed.host, parsed.port, str(parsed)) == (host, port, back)


@pytest.mark.parametrize("text", ["127.0.0.1", "::1:53", "[::1]53", "[nope]:53", "h:70000", "h:x"])
def test_host_port_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        HostPort.parse(text)


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("acmezone.test", logging.INFO, __file__, 1, "hello %s", ("x",), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_log_lines_carry_extras() -> None:
    line = JsonFormatter().format(_record(subdomain="abc", count=3))
    payload = json.loads(line)
    assert payload["message"] == "hello x"
    assert payload["level"] == "INFO"
    assert payload["logger"] == "acmezone.test"
    assert (payload["subdomain"], payload["count"]) == ("abc", 3)
    assert "\n" not in line


def test_text_log_lines_append_extras() -> None:
    line = TextFormatter().format(_record(subdomain="abc"))
    assert line.endswith("acmezone.test: hello x subdomain=abc")


def test_metrics_server_serves_and_stops_quickly() -> None:
    import urllib.request

    from prometheus_client import CollectorRegistry, Counter

    from acmezone_common.metrics import MetricsServer

    registry = CollectorRegistry()
    Counter("acmezone_test_things_total", "Things.", registry=registry).inc(3)
    for host in ("127.0.0.1", "::1"):
        server = MetricsServer(HostPort(host, 0), registry)
        bound = server.start()
        url = f"http://{bound}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert "acmezone_test_things_total 3.0" in response.read().decode()
        server.stop()
        with pytest.raises(OSError, match=r"\S"):
            urllib.request.urlopen(url, timeout=1)


def test_page_size_rule() -> None:
    from acmezone_common.errors import InvalidArgumentError
    from acmezone_common.paging import page_size

    assert [page_size(n) for n in (0, 1, 50, 1000, 5000)] == [50, 1, 50, 1000, 1000]
    with pytest.raises(InvalidArgumentError) as negative:
        page_size(-1)
    assert negative.value.reason == "INVALID_PAGE_SIZE"
    assert negative.value.field_violations[0].field == "page_size"


def test_page_tokens() -> None:
    from acmezone_common.errors import INVALID_PAGE_TOKEN, InvalidArgumentError
    from acmezone_common.paging import decode_page_token, encode_page_token, seq_after

    assert seq_after(encode_page_token((42,))) == 42
    assert seq_after("") == 0
    key = ("2026-01-01T00:00:00+00:00", "a")
    assert decode_page_token(encode_page_token(key), (str, str)) == key
    wrong_shape = (encode_page_token(("a",)), encode_page_token((1, 2)), encode_page_token((True,)))
    never_returned = encode_page_token((-1,))  # no sequence or offset is negative
    for bad in ("x", "bm9wZQ", encode_page_token((1,))[:-2] + "!!", *wrong_shape, never_returned):
        with pytest.raises(InvalidArgumentError) as refused:
            seq_after(bad)
        assert refused.value.reason == INVALID_PAGE_TOKEN
        assert refused.value.field_violations[0].field == "page_token"


def test_time_keys_resume_after_an_aware_time_and_id() -> None:
    from datetime import UTC, datetime

    from acmezone_common.errors import INVALID_PAGE_TOKEN, InvalidArgumentError
    from acmezone_common.paging import encode_page_token, time_key, time_key_after

    moment = datetime(2026, 1, 1, 12, 30, 5, 123456, tzinfo=UTC)
    assert time_key_after(encode_page_token(time_key(moment, "abc"))) == (moment, "abc")
    assert time_key_after("") is None
    for bad in (("yesterday", "a"), ("2026-01-01T00:00:00", "a"), (1, "a")):
        with pytest.raises(InvalidArgumentError) as refused:
            time_key_after(encode_page_token(bad))
        assert refused.value.reason == INVALID_PAGE_TOKEN


def test_page_of_fetches_one_more_than_it_returns() -> None:
    from acmezone_common.paging import fetch_limit, page_of, seq_after

    rows = list(range(1, 6))
    assert fetch_limit(3) == 4
    page = page_of(rows[: fetch_limit(3)], 3, lambda n: (n,))
    assert page.items == [1, 2, 3]
    assert seq_after(page.next_page_token) == 3
    last = page_of(rows[3 : 3 + fetch_limit(3)], 3, lambda n: (n,))
    assert (last.items, last.next_page_token) == ([4, 5], "")
