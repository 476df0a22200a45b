"""Token-budget batch scheduler: the rows of many requests share one session run (the GPU server).

It sits between a task's preprocess and its run; the task code is the same as on Lambda::

    route ─ admit ─────── 429 + Retry-After past max_concurrent_requests, before any work
          ─ begin ─────── parse, validate, tokenize (ModelService.begin_*)      -> Pending
          ─ submit ────── queue the request's rows; wait for them, or for the client to leave
                scheduler: the oldest waiting request, plus waiting requests of the most similar
                length, while rows x longest row <= max_batch_tokens and rows <= max_batch_requests;
                a request whose client has disconnected is dropped here, before it is run; the
                batch is padded, run on the session thread, and its outputs split back per request
          ─ finish ────── postprocess and shape, exactly as unbatched          -> Answer

Batches form by themselves under load: while the session thread runs one batch, requests queue,
and the next batch takes what is waiting (no timer: a lone request runs at once). A request that
shares a batch gets back the feed rows it ran as (padded to the batch's longest row) with the
matching output rows, one (feed, output) pair, so every task's postprocess sees what it would see
had its own rows been padded wider; the attention mask makes padding inert, so answers equal the
unbatched ones within float tolerance (tests/functions/test_batching.py). A request too large to
share a batch, or one that runs alone, runs its own feeds unchanged.

One kind of bundle is never mixed: a dynamically quantized int8 graph (Lambda's ``int8-dynamic-*``
and ``int8-mixed-*`` candidates) computes one activation scale per tensor, over the whole batch, so
a request's numbers would move with its batch-mates' (by ~1e-3 in tests). Such a bundle (served by
`modelfn serve` on a Lambda bundle) still goes through the queue, the session thread, admission and
disconnect checks, but each request runs alone on its own feeds. GPU bundles (fp16, fp32) mix.
"""

from __future__ import annotations

import asyncio
import itertools
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from typing import Any, Awaitable, Callable, Iterator

from .errors import RequestError, TooManyRequests
from .service import Answer, Pending
from .tasks import Prepared

# What a full server tells callers to wait: about one batch's run on a busy GPU, rounded up to the
# header's unit. Clients back off further on repeated 429s.
RETRY_AFTER_S = 1


@dataclass(frozen=True)
class BatchLimits:
    """The scheduler's three limits (ServerSettings resolves them from arguments and environment)."""

    max_batch_tokens: int = 16384  # padded tokens per run: rows x longest row
    max_batch_requests: int = 256  # rows (inputs, question-answering windows) per run
    max_concurrent_requests: int = 512  # requests admitted at once; more are answered 429


@dataclass
class BatchStats:
    """Counters since start; :meth:`snapshot` is what GET /health shows."""

    batches: int = 0  # session runs
    requests: int = 0  # requests answered from those runs
    rows: int = 0
    tokens: int = 0  # real tokens run
    padded_tokens: int = 0  # tokens run including padding
    dropped: int = 0  # requests dropped unrun because their client had disconnected
    rejected: int = 0  # requests answered 429

    def snapshot(self, *, in_flight: int, queued: int) -> dict[str, Any]:
        out: dict[str, Any] = asdict(self)
        out["mean_batch_requests"] = round(self.requests / self.batches, 3) if self.batches else 0.0
        out["mean_batch_rows"] = round(self.rows / self.batches, 3) if self.batches else 0.0
        out["padding_ratio"] = round(1 - self.tokens / self.padded_tokens, 4) if self.padded_tokens else 0.0
        out["in_flight"], out["queued"] = in_flight, queued
        return out


class Admission:
    """Requests in flight, bounded: past ``limit`` a request is answered 429 with Retry-After before
    any work (its body is not even read). Shared by the encoder batcher and the generation scheduler;
    ``stats.rejected`` counts the refusals."""

    def __init__(self, limit: int, stats):
        self.limit = limit
        self.stats = stats
        self.in_flight = 0

    @contextmanager
    def admit(self) -> Iterator[None]:
        if self.in_flight >= self.limit:
            self.stats.rejected += 1
            raise TooManyRequests(f"the server is at its limit of {self.limit} requests in flight",
                                  retry_after=RETRY_AFTER_S, hint=f"retry after {RETRY_AFTER_S} s")
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1


class ClientClosedRequest(RequestError):
    """The client disconnected before its answer was ready; nobody reads this answer (logged as 499)."""

    status, code = 499, "client_closed_request"


class _Entry:
    __slots__ = ("prepared", "rows", "width", "shareable", "future", "gone", "seq")

    def __init__(self, prepared: Prepared, future: asyncio.Future, seq: int):
        self.prepared = prepared
        self.rows = len(prepared.encodings)
        self.width = max((len(e.ids) for e in prepared.encodings), default=0)
        # A task whose feeds are not one row per encoding, in order, cannot have its rows re-fed
        # from its encodings; it runs its own feeds, unbatched.
        self.shareable = self.rows > 0 and self.rows == sum(len(next(iter(f.values()))) for f in prepared.feeds)
        self.future = future
        self.gone = False
        self.seq = seq


# Quantization candidates whose activations are quantized with scales computed over the batch.
_BATCH_DEPENDENT_QUANTIZATION = ("int8-dynamic-", "int8-mixed-")


def mixes_requests(model) -> bool:
    """Whether rows of different requests may share a run without changing each other's answers."""
    return not model.manifest.quantization.chosen.startswith(_BATCH_DEPENDENT_QUANTIZATION)


class Batcher:
    """Queues tokenized requests and runs them in token-budget batches on one session thread.

    ``run`` (default ``model.run``) is the session call; tests inject a wrapper to hold a batch.
    ``mix`` (default :func:`mixes_requests`) says whether different requests may share a run.
    Use from one event loop; :meth:`start` may be skipped (the first submit starts the scheduler).
    """

    def __init__(self, model, limits: BatchLimits | None = None, *,
                 run: Callable[[dict], dict] | None = None, mix: bool | None = None):
        self.model = model
        self.limits = limits or BatchLimits()
        self.mix = mixes_requests(model) if mix is None else mix
        self.stats = BatchStats()
        self._run = run or model.run
        self._queue: list[_Entry] = []
        self._admission = Admission(self.limits.max_concurrent_requests, self.stats)
        self._seq = itertools.count()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        # One thread: runs are serialized on the device, and the event loop never waits on one.
        self._session_thread = ThreadPoolExecutor(1, thread_name_prefix="modelfn-session")

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the scheduler task on the running loop."""
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._schedule(), name="modelfn-batcher")

    async def warm_up(self, service) -> None:
        """The task's sample request (every task has one, functions/tasks) answered once, its runs on
        the session thread, so the first request does not pay for lazy allocations, kernel selection or
        (TensorRT) the engine build; and a bundle that cannot answer its own task never says ready.
        Not counted in the stats."""
        loop = asyncio.get_running_loop()
        pending = await loop.run_in_executor(None, service.begin_predict_json, dict(service.task.sample))
        outputs = await loop.run_in_executor(self._session_thread, self._run_each, pending.prepared.feeds)
        pending.finish(outputs)

    async def stop(self) -> None:
        """Stop scheduling (after the server has drained its requests); waits for a run in progress."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        for entry in self._queue:
            entry.future.cancel()
        self._queue.clear()
        await asyncio.get_running_loop().run_in_executor(None, self._session_thread.shutdown)

    def snapshot(self) -> dict[str, Any]:
        """The counters, plus requests in flight and waiting now."""
        return self.stats.snapshot(in_flight=self._admission.in_flight, queued=len(self._queue))

    # -- per request -------------------------------------------------------------------------
    def admit(self):
        """Count a request in flight for its whole life; TooManyRequests (429) past the limit."""
        return self._admission.admit()

    async def serve(self, request, begin: Callable[[bytes], Pending],
                    read: Callable[[Any], Awaitable[bytes]] | None = None) -> Answer:
        """The whole path of one HTTP request: admit, read the body, begin, batch, finish.

        ``request`` is a Starlette request (its ``body()`` and ASGI ``receive``); ``read`` reads its body
        (default: whole, unbounded; the app passes its size-checked reader); ``begin`` turns the body
        into a Pending (a ModelService ``begin_*`` method) and raises RequestError for bad input.
        """
        with self.admit():
            body = await (read(request) if read is not None else request.body())
            pending = begin(body)
            feeds, outputs = await self.submit(pending.prepared, request.receive)
            return pending.finish(outputs, feeds)

    async def submit(self, prepared: Prepared, receive: Callable | None = None) -> tuple[list[dict] | None, list[dict]]:
        """Queue a request's rows; (feeds, outputs) once its batch ran (feeds None: its own feeds).

        With ``receive`` (the ASGI channel, body already read) the client's disconnect is watched
        while the request waits; a request whose client left is never run (ClientClosedRequest).
        """
        await self.start()
        entry = _Entry(prepared, asyncio.get_running_loop().create_future(), next(self._seq))
        entry.shareable = entry.shareable and self.mix
        self._queue.append(entry)
        self._wake.set()
        if receive is None:
            return await entry.future
        if not await done_unless_gone(entry.future, receive):
            entry.gone = True  # still queued: the scheduler drops it; already running: its answer is discarded
            raise ClientClosedRequest("the client disconnected before the answer was ready")
        return entry.future.result()

    # -- the scheduler -----------------------------------------------------------------------
    async def _schedule(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                # One loop turn before cutting the batch: handlers whose requests arrived together
                # queue too, instead of the first running alone (free at concurrency 1).
                await asyncio.sleep(0)
                continue
            batch = self._next_batch()
            if batch:
                await self._execute(batch)

    def _next_batch(self) -> list[_Entry]:
        live = []
        for entry in self._queue:
            if entry.gone:
                self.stats.dropped += 1
                entry.future.cancel()
            elif not entry.future.done():
                live.append(entry)
        if not live:
            self._queue = []
            return []
        anchor, limits = live[0], self.limits  # the oldest request always goes next: nothing starves
        chosen = [anchor]
        rows, width = anchor.rows, anchor.width
        if anchor.shareable and rows <= limits.max_batch_requests and rows * width <= limits.max_batch_tokens:
            # Closest lengths first (ties: oldest first) keeps the padding of the batch small.
            for entry in sorted(live[1:], key=lambda e: (abs(e.width - anchor.width), e.seq)):
                grown_rows, grown_width = rows + entry.rows, max(width, entry.width)
                if (entry.shareable and grown_rows <= limits.max_batch_requests
                        and grown_rows * grown_width <= limits.max_batch_tokens):
                    chosen.append(entry)
                    rows, width = grown_rows, grown_width
        taken = {id(e) for e in chosen}
        self._queue = [e for e in live if id(e) not in taken]
        return chosen

    async def _execute(self, batch: list[_Entry]) -> None:
        loop = asyncio.get_running_loop()
        try:
            if len(batch) == 1:  # alone: exactly the unbatched path
                feeds = batch[0].prepared.feeds
                outputs = await loop.run_in_executor(self._session_thread, self._run_each, feeds)
                results = [(None, outputs)]
                padded = sum(_rows_of(f) * _width_of(f) for f in feeds)
            else:
                encodings = [enc for entry in batch for enc in entry.prepared.encodings]
                feed, output = await loop.run_in_executor(self._session_thread, self._run_rows, encodings)
                results, start = [], 0
                for entry in batch:
                    stop = start + entry.rows
                    results.append(([_slice(feed, start, stop)], [_slice(output, start, stop)]))
                    start = stop
                padded = _rows_of(feed) * _width_of(feed)
        except Exception as exc:  # noqa: BLE001 - a model fault answers every request of the batch
            for entry in batch:
                if entry.gone:
                    entry.future.cancel()
                elif not entry.future.done():
                    entry.future.set_exception(exc)
            return
        stats = self.stats
        stats.batches += 1
        stats.requests += len(batch)
        stats.rows += sum(e.rows for e in batch)
        stats.tokens += sum(e.prepared.tokens for e in batch)
        stats.padded_tokens += padded
        for entry, result in zip(batch, results):
            if not entry.future.done():
                entry.future.set_result(result)

    # -- on the session thread ---------------------------------------------------------------
    def _run_each(self, feeds: list[dict]) -> list[dict]:
        return [self._run(feed) for feed in feeds]

    def _run_rows(self, encodings: list) -> tuple[dict, dict]:
        feed = self.model.feed(encodings)
        return feed, self._run(feed)


async def done_unless_gone(work: asyncio.Future, receive: Callable) -> bool:
    """Wait for ``work`` or for the client to disconnect, whichever comes first; whether ``work`` is done
    (False: the client left first, and ``work`` goes on unless the caller stops it)."""
    watcher = asyncio.ensure_future(client_gone(receive))
    try:
        await asyncio.wait((work, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    return work.done()


async def client_gone(receive: Callable) -> None:
    """Returns when the ASGI channel reports the client gone (the request body was read before)."""
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
    except Exception:  # noqa: BLE001 - a channel that cannot be watched: wait for the answer instead
        await asyncio.Event().wait()


def _slice(arrays: dict, start: int, stop: int) -> dict:
    return {name: array[start:stop] for name, array in arrays.items()}


def _rows_of(feed: dict) -> int:
    return len(next(iter(feed.values())))


def _width_of(feed: dict) -> int:
    first = next(iter(feed.values()))
    return first.shape[1] if first.ndim > 1 else 1


__all__ = ["Admission", "Batcher", "BatchLimits", "BatchStats", "ClientClosedRequest", "RETRY_AFTER_S",
           "client_gone", "done_unless_gone", "mixes_requests"]
