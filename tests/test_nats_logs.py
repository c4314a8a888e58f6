"""Reconnect loops log an outage, not every attempt: the ``Outage`` helper with a fake clock, and a
real ``NatsSubscriber`` against a port where nothing listens until a real nats-server starts there."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from nats_fixture import NatsServer, free_port, stop_event_line

from ccarchive.logs import Outage, format_span
from ccarchive.service.nats import NatsSubscriber

WAIT_TIMEOUT = 20.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Records(logging.Handler):
    """Keeps the records of one logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.WARNING) -> list[str]:
        return [r.getMessage() for r in list(self.records) if r.levelno >= level]


def _capture(name: str) -> Iterator[Records]:
    logger = logging.getLogger(name)
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def outage_log() -> Iterator[Records]:
    logger = logging.getLogger("test_nats_logs.outage")
    logger.propagate = False
    yield from _capture(logger.name)


@pytest.fixture
def nats_log() -> Iterator[Records]:
    yield from _capture("ccarchive.service.nats")


def _wait_for(condition: Callable[[], object], what: str, timeout: float = WAIT_TIMEOUT) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)  # polling interval of a bounded wait


# ----------------------------------------------------------------------------------------------
# the helper, with a fake clock


def test_outage_logs_first_failure_then_one_line_per_interval_then_recovery(outage_log: Records) -> None:
    clock = FakeClock()
    outage = Outage(logging.getLogger("test_nats_logs.outage"), "NATS nats://h:4222", note="events are lost",
                    clock=clock)
    assert not outage.down
    outage.failed("connection refused")
    assert outage.down
    assert outage_log.messages() == [
        "NATS nats://h:4222: connection refused; retrying (failures are summarised every 5 min); events are lost"]
    assert outage_log.records[0].levelno == logging.WARNING

    for step in range(1, 150):  # an attempt every 2 s: silence until 5 minutes have passed
        clock.now = 2.0 * step
        outage.failed("connection refused")
    assert len(outage_log.records) == 1
    clock.now = 300.0
    outage.failed("timed out")
    assert outage_log.messages()[1:] == [
        "NATS nats://h:4222: still down after 5 min, 150 failures since the last report; last error: timed out"]

    for step in range(151, 1801):  # the rest of the hour: one line per 5 minutes
        clock.now = 2.0 * step
        outage.failed("connection refused")
    assert len(outage_log.records) == 13  # t = 0, 300, ..., 3600: instead of 1,800
    assert outage_log.messages()[-1] == ("NATS nats://h:4222: still down after 1 h, 150 failures since the "
                                         "last report; last error: connection refused")

    clock.now = 3725.0
    outage.recovered()
    assert not outage.down
    assert outage_log.messages()[-1] == ("NATS nats://h:4222: recovered after 1 h 2 min down "
                                         "(1801 failures; last error: connection refused)")
    assert outage_log.records[-1].levelno == logging.WARNING  # who saw the outage sees its end
    outage.recovered()
    assert len(outage_log.records) == 14

    clock.now = 4000.0  # a new outage starts with a first line of its own
    outage.failed("connection lost")
    assert outage_log.messages()[-1].startswith("NATS nats://h:4222: connection lost; retrying")
    clock.now = 4001.5
    outage.recovered()
    assert outage_log.messages()[-1] == ("NATS nats://h:4222: recovered after 1.5 s down "
                                         "(1 failure; last error: connection lost)")
    assert outage.failures == 1802


def test_outage_interval_and_level_are_settings(outage_log: Records) -> None:
    clock = FakeClock()
    outage = Outage(logging.getLogger("test_nats_logs.outage"), "store", every=10.0, level=logging.ERROR,
                    clock=clock)
    for t in range(0, 31):
        clock.now = float(t)
        outage.failed(f"error {t}")
    assert [r.levelno for r in outage_log.records] == [logging.ERROR] * 4  # t = 0, 10, 20, 30
    assert outage_log.messages()[-1] == "store: still down after 30 s, 10 failures since the last report; " \
        "last error: error 30"


@pytest.mark.parametrize(("seconds", "text"), [
    (0.04, "0.0 s"), (1.5, "1.5 s"), (42.9, "42 s"), (300, "5 min"), (432, "7 min 12 s"),
    (3600, "1 h"), (11100, "3 h 5 min"),
])
def test_format_span(seconds: float, text: str) -> None:
    assert format_span(seconds) == text


# ----------------------------------------------------------------------------------------------
# a real subscriber, a real nats-server


def test_subscriber_logs_one_warning_per_outage_and_one_recovery_line(tmp_path: Path, nats_log: Records) -> None:
    port = free_port()  # nothing listens here until the server starts
    stops: list[str] = []
    sub = NatsSubscriber(f"nats://127.0.0.1:{port}", "ccarchive.test.events", stops.append, reconnect_wait=0.05)
    server = NatsServer(tmp_path)
    sub.start()
    try:
        # down at start-up: nats-py retries every 50 ms, one WARNING says so
        _wait_for(lambda: sub.outage.failures >= 40, "40 failed connection attempts")
        warnings = nats_log.messages()
        assert len(warnings) == 1, warnings
        assert warnings[0].startswith(f"NATS nats://127.0.0.1:{port}: cannot connect: ")
        assert "stop events published meanwhile are lost" in warnings[0]
        assert not sub.connected.is_set()

        server.start(port)
        _wait_for(sub.connected.is_set, "the subscriber to connect")
        recoveries = [m for m in nats_log.messages() if "recovered after" in m]
        assert len(recoveries) == 1 and len(nats_log.messages()) == 2
        server.publish("ccarchive.test.events", stop_event_line(1, "fritz", 1_700_000_000, 1_700_000_600))
        _wait_for(lambda: len(stops) == 1, "the first stop event")

        # the server goes away after that: nats-py's reconnect callbacks, the same two lines
        failures = sub.outage.failures
        server.stop()
        _wait_for(lambda: sub.outage.failures >= failures + 40, "40 failed reconnection attempts")
        warnings = nats_log.messages()[2:]
        assert len(warnings) == 1 and "connection lost" in warnings[0], warnings
        assert not sub.connected.is_set()

        server.start(port)
        _wait_for(sub.connected.is_set, "the subscriber to reconnect")
        assert len([m for m in nats_log.messages() if "recovered after" in m]) == 2
        assert len(nats_log.messages()) == 4
        server.publish("ccarchive.test.events", stop_event_line(2, "fritz", 1_700_000_000, 1_700_000_600))
        _wait_for(lambda: len(stops) == 2, "the stop event after the reconnect")
    finally:
        sub.stop()
        server.stop()
    assert '"jobId":2' in stops[1]


def test_subscriber_stops_while_the_server_is_unreachable(nats_log: Records) -> None:
    sub = NatsSubscriber(f"nats://127.0.0.1:{free_port()}", "ccarchive.test.events", lambda payload: None,
                         reconnect_wait=0.05)
    sub.start()
    try:
        _wait_for(lambda: sub.outage.failures >= 3, "failed connection attempts")
    finally:
        sub.stop(timeout=WAIT_TIMEOUT)
    assert not sub._thread.is_alive()  # stop() ended the connection attempts instead of timing out
    assert len(nats_log.messages()) == 1
