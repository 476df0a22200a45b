"""Concurrent generation on the GPU server: a bounded number of generators at once, the rest queued.

The encoder batcher (functions/batching.py) merges rows of many requests into one session run; a
generative answer is a loop of runs whose length nobody knows in advance, so the GPU server runs
each request on a generator of its own instead, several at once (onnxruntime-genai's generators
are independent: each holds its own KV cache and search state), on a pool of threads so the event
loop never waits on a decoding step::

    route ─ admit ─── 429 + Retry-After past max_concurrent_requests, before the body is read
          ─ wait ──── for one of max_concurrent_generations slots; a client that leaves while
                      waiting is dropped unrun (499, logged)
          ─ run ───── the service's route (chat, completions, predict) on the pool: a whole answer,
                      or the first step of a stream, whose later pieces are decoded on the pool too;
                      a whole answer whose client leaves stops at its next token
          ─ release ─ when the answer is built, or the stream ends, fails or its client leaves
                      (the generator is closed, so its KV cache is freed at once)

Each generator allocates its KV cache for the whole context window, so the slot count bounds GPU
memory: ``max_concurrent_generations`` x KV bytes per generator must fit beside the weights.
Answers do not depend on the other requests in flight: nothing is shared between generators.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import asdict, dataclass
from typing import Any

from .. import deadline as deadlines
from ..batching import Admission, ClientClosedRequest, done_unless_gone
from ..service import Answer

_END = object()


@dataclass(frozen=True)
class GenerationLimits:
    """The scheduler's two limits (ServerSettings resolves them from arguments and environment)."""

    max_concurrent_generations: int = 1  # generators decoding at once (each holds a KV cache)
    max_concurrent_requests: int = 512  # requests admitted at once, waiting included; more are answered 429


@dataclass
class GenerationStats:
    """Counters since start; :meth:`snapshot` is what GET /health shows."""

    requests: int = 0  # requests that got a slot and ran
    streams: int = 0  # of those, streamed answers
    completed: int = 0  # answers finished (streams: the last piece sent)
    dropped: int = 0  # requests dropped unrun because their client had disconnected while waiting
    abandoned: int = 0  # answers whose client left before the end (the generation was stopped)
    rejected: int = 0  # requests answered 429


class GenerationScheduler:
    """Runs generation requests on at most ``max_concurrent_generations`` threads at once.

    Use from one event loop. ``warm_up`` runs one short generation so the first request does not
    pay for lazy allocations (on CUDA: kernel selection, the KV cache's first allocation).
    """

    def __init__(self, limits: GenerationLimits | None = None):
        self.limits = limits or GenerationLimits()
        self.stats = GenerationStats()
        self._admission = Admission(self.limits.max_concurrent_requests, self.stats)
        self._slots = asyncio.Semaphore(self.limits.max_concurrent_generations)
        self._running = 0
        self._pool = ThreadPoolExecutor(self.limits.max_concurrent_generations, thread_name_prefix="modelfn-generate")

    async def warm_up(self, service) -> None:
        """One generated token through the service's completions route, on the pool."""
        body = b'{"prompt": "modelfn warm-up", "max_tokens": 1, "temperature": 0}'
        await asyncio.get_running_loop().run_in_executor(
            self._pool, service.completions, "application/json", body)

    async def stop(self) -> None:
        """Stop the pool (after the server has drained its requests)."""
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown)

    def snapshot(self) -> dict[str, Any]:
        """The counters, plus generators running and requests waiting for one now."""
        out: dict[str, Any] = asdict(self.stats)
        out["running"] = self._running
        out["waiting"] = self._admission.in_flight - self._running
        out["max_concurrent_generations"] = self.limits.max_concurrent_generations
        return out

    async def serve(self, request, call: Callable[[bytes], Answer], *,
                    read: Callable[[Any], Awaitable[bytes]] | None = None, budget_ms: int | None = None) -> Answer:
        """The whole path of one HTTP request: admit, read the body, wait for a slot, run ``call``.

        ``request`` is a Starlette request; ``read`` reads its body (default: whole, unbounded; the
        app passes its size-checked reader); ``call`` is a ModelService route (body -> Answer) and
        raises RequestError for bad input; ``budget_ms`` bounds its time (functions/deadline.py). A
        streamed answer keeps its slot until the stream ends; a whole answer whose client leaves
        stops at its next token (its deadline is cancelled) and frees its slot.
        """
        with self._admission.admit():
            body = await (read(request) if read is not None else request.body())
            await self._acquire(request.receive)
            handed_over = False
            try:
                self._running += 1
                self.stats.requests += 1
                deadline = deadlines.Deadline.for_request(None, budget_ms)
                answer = await self._run(call, body, deadline, request.receive)
                if answer.stream is None:
                    self.stats.completed += 1
                    return answer
                self.stats.streams += 1
                handed_over = True
                return answer._replace(stream=self._hold(answer.stream))
            finally:
                if not handed_over:
                    self._release()

    async def _run(self, call: Callable[[bytes], Answer], body: bytes, deadline: deadlines.Deadline,
                   receive: Callable) -> Answer:
        """``call`` on the pool under ``deadline``, watching the client meanwhile: if it leaves, the
        deadline is cancelled, the run is waited for (it ends at its next token) and the request is a
        ClientClosedRequest."""
        run = asyncio.get_running_loop().run_in_executor(self._pool, _in_scope, deadline, call, body)
        if not await done_unless_gone(run, receive):
            deadline.cancel()
            self.stats.abandoned += 1
            with suppress(Exception):  # a 504 for nobody, or the model's fault: its client has gone
                await asyncio.shield(run)
            raise ClientClosedRequest("the client disconnected before the answer was ready; its generation "
                                      "was stopped")
        return run.result()

    async def _acquire(self, receive: Callable) -> None:
        """A slot, or ClientClosedRequest if the client leaves while waiting for one."""
        if not self._slots.locked():
            await self._slots.acquire()
            return
        slot = asyncio.ensure_future(self._slots.acquire())
        if not await done_unless_gone(slot, receive):
            slot.cancel()
            self.stats.dropped += 1
            raise ClientClosedRequest("the client disconnected while waiting for a generator")

    def _release(self) -> None:
        self._running -= 1
        self._slots.release()

    async def _hold(self, stream: Iterator) -> AsyncIterator:
        """The stream's pieces, each decoded on the pool; the slot is released when it ends, fails
        or is abandoned (Starlette closes this generator when the client leaves).

        Each piece's successor is decoded while the piece is sent, so when a client leaves right
        after the last piece (an OpenAI client closes its connection at ``data: [DONE]``), the step
        that found the end has run and the answer counts as completed, not abandoned."""
        pieces, finished = iter(stream), False
        # A concurrent future, not run_in_executor's: if the client leaves mid-step, the step still
        # runs to its end on its thread, and the close below must wait for it (a Python generator
        # cannot be closed while another thread is inside it).
        step = self._pool.submit(next, pieces, _END)
        try:
            while True:
                piece = await asyncio.wrap_future(step)
                if piece is _END:
                    finished = True
                    self.stats.completed += 1
                    return
                step = self._pool.submit(next, pieces, _END)
                yield piece
        finally:
            try:
                if not finished:
                    # Counted before the wait: under Starlette's (anyio's) cancellation every await
                    # here raises again, so nothing after it is sure to run.
                    ended = _found_the_end(step)
                    if ended:
                        self.stats.completed += 1
                    else:
                        self.stats.abandoned += 1
                    try:
                        closing = self._pool.submit(_close_after, step, pieces)
                    except RuntimeError:  # the pool has stopped (SIGTERM past the drain): its steps are over
                        with suppress(Exception):
                            _close_after(step, pieces)
                    else:
                        with suppress(Exception):  # the stream's own fault was already reported to its client
                            await asyncio.shield(asyncio.wrap_future(closing))
                    if not ended and _found_the_end(step):  # the last step was still running
                        self.stats.abandoned -= 1
                        self.stats.completed += 1
            finally:
                self._release()


def _in_scope(deadline: deadlines.Deadline, call: Callable[[bytes], Answer], body: bytes) -> Answer:
    with deadlines.scope(deadline):
        return call(body)


def _found_the_end(step: Future) -> bool:
    """Whether a stream's last step ran and found no more pieces: every piece had been sent."""
    return step.done() and not step.cancelled() and step.exception() is None and step.result() is _END


def _close_after(step: Future | None, pieces: Iterator) -> None:
    """Close a stream's generator once its step in progress (if any) is over: frees the generator
    and its KV cache now, not when the garbage collector gets to it."""
    if step is not None:
        wait((step,))
    close = getattr(pieces, "close", None)
    if close is not None:
        close()


__all__ = ["GenerationLimits", "GenerationScheduler", "GenerationStats"]
