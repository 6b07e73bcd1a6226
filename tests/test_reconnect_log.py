"""Reconnect failures in the log: one line each, at most one per interval (issue 10).

What a running ``serve`` logs during a real outage is in test_embedded_cli.py;
here, the exact rule, on real log records through the logging machinery.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator

import pytest

from entitlements.store.reconnect_log import OneLinePerInterval, quiet_reconnect_failures

MESSAGE = "Failed to restore the pool connection floor; retrying"


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, Collect]]:
    log = logging.getLogger(f"test.reconnect.{uuid.uuid4().hex}")
    log.propagate = False
    collect = Collect()
    log.addHandler(collect)
    yield log, collect
    log.removeHandler(collect)


def fail_to_connect(log: logging.Logger) -> None:
    try:
        raise ConnectionRefusedError(111, "Connect call failed\n('127.0.0.1', 5432)")
    except ConnectionRefusedError:
        log.warning(MESSAGE, exc_info=True)


def test_one_line_naming_the_error_then_one_per_interval(
    logger: tuple[logging.Logger, Collect],
) -> None:
    log, collect = logger
    log.addFilter(OneLinePerInterval(every=0.3))
    for _ in range(20):
        fail_to_connect(log)
    assert collect.lines == [
        f"WARNING {log.name}: {MESSAGE}: ConnectionRefusedError: "
        "[Errno 111] Connect call failed ('127.0.0.1', 5432)"
    ]
    time.sleep(0.35)
    fail_to_connect(log)
    assert len(collect.lines) == 2
    assert collect.lines[1].endswith("(19 more in the last 0.3 s not logged)")
    assert all("\n" not in line and "Traceback" not in line for line in collect.lines)


def test_a_record_without_an_error_passes_unchanged(
    logger: tuple[logging.Logger, Collect],
) -> None:
    log, collect = logger
    log.addFilter(OneLinePerInterval(every=0.3))
    log.warning("Pool.close() is taking over %d seconds to complete", 60)
    assert collect.lines == [
        f"WARNING {log.name}: Pool.close() is taking over 60 seconds to complete"
    ]


def test_installed_once_on_asyncpgs_pool_logger() -> None:
    quiet_reconnect_failures()
    quiet_reconnect_failures()
    pool_logger = logging.getLogger("asyncpg.pool")
    assert sum(isinstance(f, OneLinePerInterval) for f in pool_logger.filters) == 1
