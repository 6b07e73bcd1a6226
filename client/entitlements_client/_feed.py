"""The change-feed reader: long-polls ``/v1/changes`` and applies each page to the
decision cache, so cached answers live until their user or resource changes.
Pure: it yields the I/O it needs (see ``_flow``)."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Generator
from typing import Final

import httpx
import orjson

from ._cache import DecisionCache
from ._flow import Action, Send, Sleep

__all__ = ["MAX_FEED_WAIT", "ChangeFeed"]

logger = logging.getLogger("entitlements_client")

#: The longest a poll is held open by the service (seconds).
MAX_FEED_WAIT: Final = 25.0


class ChangeFeed:
    """Follows the service's change feed into ``cache``.

    ``authorization`` gives the ``Authorization`` header value (the service
    token) for each poll; ``closed`` says when to stop. A poll is held up to
    ``min(MAX_FEED_WAIT, staleness / 2)`` seconds, plus ``timeout`` for the answer.
    """

    def __init__(
        self,
        url: str,
        cache: DecisionCache,
        *,
        staleness: float,
        timeout: float,
        authorization: Callable[[], str],
        closed: Callable[[], bool],
        clock: Callable[[], float],
    ) -> None:
        self.url = url
        self.cache = cache
        self.staleness = staleness
        self.timeout = timeout
        self.wait = min(MAX_FEED_WAIT, staleness / 2)
        self._authorization = authorization
        self._closed = closed
        self._clock = clock

    def follow(self) -> Generator[Action, object, None]:
        """Long-poll forever, applying each page to the cache. Returns only when the
        feed cannot be used at all (then entries live ``staleness``).

        The first poll, and the first after a failure, does not wait: the cache is
        fresh as soon as the feed has caught up once.
        """
        failures = 0
        live = False
        while not self._closed():
            cursor = self.cache.cursor
            assert cursor is not None
            hold = self.wait if live else 0.0
            timeout = hold + self.timeout
            outcome: object = None
            try:
                authorization = self._authorization()
            except Exception:
                logger.warning("change feed: no service token", exc_info=True)
            else:
                request = httpx.Request(
                    "GET",
                    self.url,
                    params={"since": cursor, "wait": f"{hold:g}"},
                    headers={"Authorization": authorization, "Accept": "application/json"},
                    extensions={"timeout": httpx.Timeout(timeout).as_dict()},
                )
                started = self._clock()
                outcome = yield Send(request, timeout)
            if isinstance(outcome, httpx.Response) and outcome.status_code in (403, 404):
                logger.warning(
                    "change feed refused (%s): cached decisions now live %.3g s",
                    outcome.status_code,
                    self.staleness,
                )
                self.cache.unfollow()
                return
            if isinstance(outcome, httpx.Response) and outcome.status_code == 200:
                try:
                    more, empty = self.cache.apply_page(orjson.loads(outcome.content))
                except ValueError:
                    logger.warning("change feed: unreadable page")
                else:
                    failures = 0
                    live = not more
                    # A server that does not hold the poll open must not make us spin.
                    if hold and empty and not more and self._clock() - started < 0.05:
                        yield Sleep(0.05)
                    continue
            elif isinstance(outcome, httpx.Response):
                logger.info("change feed answered %s", outcome.status_code)
            elif outcome is not None:
                logger.info("change feed unreachable: %s", type(outcome).__name__)
            failures += 1
            live = False
            cap = min(self.staleness / 2, 0.05 * 2 ** min(failures, 8))
            yield Sleep(random.uniform(cap / 2, cap))
