"""In-process wake-ups for long-polls: writers ``notify`` a topic, waiters re-check the DB.

Thread-safe: writers run in the threadpool, waiters on an event loop. A waiter subscribes
*before* checking the database and clears its flag before each re-check, so a notification
can never fall between the check and the wait. Across several hub processes the wake-up is
lost, which is why long-polls also re-check on a timer (``HubSettings.recheck_seconds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

T = TypeVar("T")


def node_topic(node_id: int) -> str:
    return f"node:{node_id}"


def study_topic(study_id: int) -> str:
    return f"study:{study_id}"


class Subscription:
    """One waiter's flag, bound to the event loop it was created on."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def clear(self) -> None:
        self._event.clear()

    def wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # loop already closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float) -> bool:
        """True if woken, False if ``timeout`` seconds passed first."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout=max(timeout, 0.0))
        except TimeoutError:
            return False
        return True


class Notifier:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, set[Subscription]] = defaultdict(set)

    @contextlib.contextmanager
    def subscribe(self, topic: str) -> Iterator[Subscription]:
        sub = Subscription()
        with self._lock:
            self._subs[topic].add(sub)
        try:
            yield sub
        finally:
            with self._lock:
                subs = self._subs.get(topic)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del self._subs[topic]

    def notify(self, *topics: str) -> None:
        with self._lock:
            subs = [sub for topic in topics for sub in self._subs.get(topic, ())]
        for sub in subs:
            sub.wake()

    def waiting(self, topic: str) -> int:
        with self._lock:
            return len(self._subs.get(topic, ()))


async def long_poll(
    notifier: Notifier,
    topic: str,
    check: Callable[[], T],
    done: Callable[[T], bool],
    *,
    wait: float,
    recheck: float,
    gone: Callable[[], Awaitable[bool]] | None = None,
) -> T | None:
    """Run ``check`` (in the threadpool) until ``done`` or ``wait`` seconds; return the last value.

    Sleeps on the topic between checks, waking on ``notify`` or every ``recheck`` seconds.
    Returns None without checking again once ``gone()`` says the caller has disconnected, so
    a check with side effects (claiming a task) never runs for a client that left.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    with notifier.subscribe(topic) as sub:
        while True:
            sub.clear()
            if gone is not None and await gone():
                return None
            value = await run_in_threadpool(check)
            remaining = deadline - loop.time()
            if done(value) or remaining <= 0:
                return value
            await sub.wait(min(remaining, recheck))
