"""Crossing between Tornado coroutines and pykka actors without blocking either.

The caller makes a ``concurrent.futures.Future``, tells the actor (``defer``),
and awaits the future on the loop (``handoff.loop_future``). The actor claims the
future with ``set_running_or_notify_cancel()`` before it commits to anything,
so a caller that already gave up never swallows a message.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import functools
from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, cast, overload

import pykka

from hyperhive.actors.handoff import loop_future
from hyperhive.errors import HiveError, Unavailable

__all__ = ["Answering", "Handle", "Parking", "Reply", "answer", "answers", "call", "claim", "fail", "parks",
           "resolve"]

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")
A = TypeVar("A", bound=pykka.Actor)
Reply = cf.Future


def claim(fut: Reply[Any] | None) -> bool:
    """Claim a reply future before acting on it; False if the caller gave up."""
    if fut is None:
        return True
    if fut.done():
        return False
    try:
        return fut.set_running_or_notify_cancel()
    except RuntimeError:  # already running: claimed once before
        return False


def resolve(fut: Reply[Any] | None, value: Any = None) -> None:
    """Complete a claimed future (no-op when there is no caller)."""
    if fut is not None and not fut.done():
        fut.set_result(value)


def fail(fut: Reply[Any] | None, exc: BaseException) -> None:
    if fut is not None and not fut.done():
        if not fut.running():
            fut.set_running_or_notify_cancel()
        if not fut.done():
            fut.set_exception(exc)


def answer(fut: Reply[Any] | None, fn: Callable[[], T]) -> None:
    """Claim ``fut``, run ``fn`` and complete it with the result or the error."""
    if not claim(fut):
        return
    try:
        resolve(fut, fn())
    except HiveError as exc:
        fail(fut, exc)
    except Exception as exc:  # noqa: BLE001 - the caller gets it; the actor lives
        fail(fut, exc)


async def call(
    method: Any,
    *args: Any,
    timeout: float = 30.0,
    on_orphan: Callable[[Any], None] | None = None,
    **kwargs: Any,
) -> Any:
    """Tell ``method`` (a pykka proxy method) with a reply future and await it.

    ``on_orphan(result)`` runs if the actor produced a result the caller can
    no longer take (timeout or cancellation raced its completion): the recv
    path uses it to put messages back.

    No Task of its own and no ``asyncio.timeout``: the deadline is a timer
    on the loop that fails the awaited future, so an op awaiting this may run
    inline (``Op.inline``). The reply reaches the loop through ``to_loop``: a
    commit's replies come in one hand-over (``handoff``).
    """
    fut: Reply[Any] = cf.Future()
    try:
        method.defer(*args, reply=fut, **kwargs)
    except pykka.ActorDeadError:
        raise Unavailable("the daemon is shutting down") from None
    loop = asyncio.get_running_loop()
    waited = loop_future(fut, loop)
    timer = loop.call_later(timeout, _expire, waited)
    try:
        return await waited
    except _Expired:
        _rescue(fut, on_orphan)
        raise Unavailable(f"no reply within {timeout:g}s") from None
    except asyncio.CancelledError:
        _rescue(fut, on_orphan)
        raise
    finally:
        timer.cancel()


class _Expired(Exception):
    """The deadline passed (never raised past ``call``)."""


def _expire(waited: asyncio.Future[Any]) -> None:
    if not waited.done():
        waited.set_exception(_Expired())


def _rescue(fut: Reply[Any], on_orphan: Callable[[Any], None] | None) -> None:
    fut.cancel()
    if on_orphan is None:
        return

    def done(f: Reply[Any]) -> None:
        if not f.cancelled() and f.exception() is None:
            on_orphan(f.result())

    fut.add_done_callback(done)


# --- the one reply helper and typed handles ---------------------------------
#
# An actor method that answers is written as a plain method returning its value
# (or raising) and marked ``@answers``; one that parks its caller (recv, a turn
# slot) takes the reply future as its first argument and is marked ``@parks``.
# Either way the wire convention stays the keyword ``reply=``: pykka proxies,
# ``call`` and a direct call all pass it so. ``Handle[A]`` is the typed side:
# ``await Handle(proxy).ask(Broker.recent, agent, 20)`` is checked against
# ``Broker.recent``'s own parameters and returns its type.


class _ReplyMethod(Generic[A, P, R]):
    """A method descriptor told with ``reply=``: what the body gets is the subclass's."""

    fn: Callable[..., object]

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Self: ...
    @overload
    def __get__(self, obj: A, owner: type | None = None) -> Callable[P, None]: ...
    def __get__(self, obj: A | None, owner: type | None = None) -> Self | Callable[P, None]:
        if obj is None:
            return self
        return functools.partial(self.__call__, obj)

    def __call__(self, obj: A, *args: P.args, **kwargs: P.kwargs) -> None:
        self._run(obj, cast("Reply[R] | None", kwargs.pop("reply", None)), *args, **kwargs)

    def _run(self, obj: A, reply: Reply[R] | None, /, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError


class Answering(_ReplyMethod[A, P, R]):
    """``@answers``: claims the reply future, runs the body, completes the
    future with its value or its error (a caller that gave up gets no work
    done for it). Told without a reply, errors are the body's to log."""

    def __init__(self, fn: Callable[Concatenate[A, P], R]) -> None:
        self.fn = fn
        functools.update_wrapper(self, fn)

    def _run(self, obj: A, reply: Reply[R] | None, /, *args: Any, **kwargs: Any) -> None:
        answer(reply, lambda: self.fn(obj, *args, **kwargs))


class Parking(_ReplyMethod[A, P, R]):
    """``@parks``: the body gets the reply future (or None) first and completes
    it when it can: now, or later from another message."""

    def __init__(self, fn: Callable[Concatenate[A, Reply[R] | None, P], None]) -> None:
        self.fn = fn
        functools.update_wrapper(self, fn)

    def _run(self, obj: A, reply: Reply[R] | None, /, *args: Any, **kwargs: Any) -> None:
        self.fn(obj, reply, *args, **kwargs)


def answers(fn: Callable[Concatenate[A, P], R]) -> Answering[A, P, R]:
    return Answering(fn)


def parks(fn: Callable[Concatenate[A, Reply[R] | None, P], None]) -> Parking[A, P, R]:
    return Parking(fn)


class Handle(Generic[A]):
    """A typed way to an actor: ``ask`` awaits a reply, ``tell`` does not,
    ``future`` hands back the reply future (for a done-callback, never to
    block on from an actor)."""

    __slots__ = ("_on_orphan", "_proxy", "_timeout")

    def __init__(self, proxy: pykka.ActorProxy[A], timeout: float = 30.0,
                 on_orphan: Callable[[Any], None] | None = None) -> None:
        self._proxy = proxy
        self._timeout = timeout
        self._on_orphan = on_orphan

    @property
    def proxy(self) -> pykka.ActorProxy[A]:
        return self._proxy

    def within(self, timeout: float, *, on_orphan: Callable[[Any], None] | None = None) -> Handle[A]:
        """The same actor with another reply deadline (and orphan rescue)."""
        return Handle(self._proxy, timeout, on_orphan)

    async def ask(self, method: Answering[A, P, R] | Parking[A, P, R], /,
                  *args: P.args, **kwargs: P.kwargs) -> R:
        bound = getattr(self._proxy, method.fn.__name__)
        return cast(R, await call(bound, *args, timeout=self._timeout, on_orphan=self._on_orphan, **kwargs))

    def future(self, method: Answering[A, P, R] | Parking[A, P, R], /,
               *args: P.args, **kwargs: P.kwargs) -> Reply[R]:
        fut: Reply[R] = cf.Future()
        try:
            getattr(self._proxy, method.fn.__name__).defer(*args, reply=fut, **kwargs)
        except pykka.ActorDeadError:
            fail(fut, Unavailable("the daemon is shutting down"))
        return fut

    def forward(self, method: Answering[A, P, R], reply: Reply[R] | None, /, *args: P.args, **kwargs: P.kwargs) -> None:
        """Tell ``method`` with a caller's own reply future (checked against the method
        like ``ask``): the actor answers that caller directly."""
        try:
            getattr(self._proxy, method.fn.__name__).defer(*args, reply=reply, **kwargs)
        except pykka.ActorDeadError:
            fail(reply, Unavailable("the daemon is shutting down"))

    def tell(self, method: Answering[A, P, Any] | Parking[A, P, Any] | Callable[Concatenate[A, P], object], /,
             *args: P.args, **kwargs: P.kwargs) -> None:
        """Fire and forget; a stopped actor is not an error (the daemon is
        shutting down and the message would have nowhere to go)."""
        name = method.fn.__name__ if isinstance(method, (Answering, Parking)) else method.__name__
        try:
            getattr(self._proxy, name).defer(*args, **kwargs)
        except pykka.ActorDeadError:
            pass
