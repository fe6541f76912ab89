"""Dynamic batching of stream steps: the frames of concurrent stream sessions run as one batch.

Why: a stream step on one frame is a few hundred small ops (A0 at 172²: about 5 ms on 2 cores,
mostly per-op overhead and depthwise convolutions too small to keep the cores busy), so stepping
8 sessions together costs far less than stepping them one after another. Each session keeps its
own state, as in Triton's sequence batcher with the "oldest" strategy: the waiting sessions' state
tensors are stacked along the batch dimension (``torch.cat`` per key; ``frame_count`` becomes a
per-clip ``(B,)`` counter, so streams that started at different times share a batch), the model
steps once, and the new state is split back into one ``(1, ...)`` copy per session.

When a batch runs: the oldest waiting request goes as soon as every session inside a push
(``active``) is waiting, or ``max_batch`` requests for its model are waiting, or ``max_wait_ms``
after it arrived or the worker became free, whichever comes first. A lone stream therefore never
waits, and concurrent ones wait at most ``max_wait_ms`` for each other. Ensemble members are
different models: a batch holds the requests for the oldest request's member, the others wait
for the next one.

One worker thread runs the batches. The first request starts it and it ends after ``idle_s``
without requests, so nothing has to stop it when a server goes away. It holds ``lock`` around each
model call: the lock every other use of the same models takes (the server's one model lock).

The worker also makes new streams' zero states, prepares the frames (resize, crop: given raw,
with ``prepare``) and copies each session's new state out of the batch's tensors, so the sessions'
own threads run no torch operation big enough to go parallel. That matters on a small machine:
OpenMP gives every thread that runs a parallel op a pool of its own, kept until the thread ends,
and once libgomp manages more threads than there are cores it stops letting them spin between
ops, so at every op the workers sleep and are woken. On 2 cores with 2 torch threads, any second
pool (a request thread's, or the main thread's from loading the model: see ``in_passing_thread``)
made a batch-1 A0 step about 3x slower and a batch of 8 about 2x slower.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from torch import Tensor

from movinet.models.movinet import MoViNet, State

Step = Callable[[Tensor, State], tuple[Tensor, State]]


@dataclass
class _Call:
    """Other model work (a whole video's prediction) run on the worker, in turn with the batches."""

    fn: Callable
    arrived: float = field(default_factory=time.monotonic)
    future: Future = field(default_factory=Future)


@dataclass
class _Request:
    member: int
    frames: Tensor | np.ndarray  # prepared (1, 3, 1, S, S), or raw uint8 (1, H, W, 3) for ``prepare``
    state: State | None  # batch 1; None: a new stream (zero state, made by the worker)
    arrived: float = field(default_factory=time.monotonic)
    future: Future = field(default_factory=Future)


class StreamBatcher:
    """Steps stream states of batch 1 in batches: ``logits, state = batcher.step(member, frames, state)``.

    ``models``: one stream step per ensemble member that takes any batch size (the
    ``optimize_for_inference`` models: a traced step is fixed to one batch size, and tracing each
    size as it comes would stall every stream for seconds). ``batch_one``: where a batch holds one
    request, the traced batch-1 steps are faster (no per-op Python overhead); a function giving them
    (called under ``lock``, as tracing must be), or None to use ``models`` for every batch.
    ``prepare``: raw uint8 frames ``(n, H, W, 3)`` -> ``(3, n, S, S)``, for requests that bring raw frames.
    """

    def __init__(
        self,
        models: Sequence[MoViNet | Step],
        image_size: int | tuple[int, int],
        device: torch.device | str = "cpu",
        lock: threading.Lock | None = None,
        max_batch: int = 8,
        max_wait_ms: float = 3.0,
        idle_s: float = 10.0,
        batch_one: Callable[[], Sequence[Step]] | None = None,
        prepare: Callable[[np.ndarray], Tensor] | None = None,
    ) -> None:
        self.models, self.batch_one, self.prepare = list(models), batch_one, prepare
        self.image_size, self.device = image_size, device
        self.lock = lock if lock is not None else threading.Lock()
        self.max_batch, self.max_wait, self.idle_s = max_batch, max_wait_ms / 1e3, idle_s
        self.steps = self.batches = 0  # requests and batches run: steps / batches is the mean batch
        self._queue: deque[_Request | _Call] = deque()
        self._cond = threading.Condition()
        self._active = 0
        self._worker: threading.Thread | None = None

    def init_state(self, member: int) -> State:
        """A new stream's zero state (batch 1) for ``member``; ``step`` makes it for a None state."""
        return self.models[member].init_state(1, self.image_size, self.device)

    @contextmanager
    def active(self) -> Iterator[None]:
        """Marks the caller as a stream that is about to step: batches wait for it (up to
        ``max_wait_ms``) rather than leave without it. A session holds it for a whole push."""
        with self._cond:
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()  # a batch waiting for this stream need not wait any longer

    def step(self, member: int, frames: Tensor | np.ndarray, state: State | None) -> tuple[Tensor, State]:
        """``member``'s step on one frame from ``state`` (None: a new stream's), run in a batch; blocks
        until done. ``frames``: prepared ``(1, 3, 1, S, S)`` or raw uint8 ``(1, H, W, 3)``."""
        return self._submit(_Request(member, frames, state))

    def call(self, fn: Callable, *args, **kwargs):
        """``fn(*args, **kwargs)`` on the worker, between batches and under ``lock``: the server's other
        model work runs on the same thread as the batches (one OpenMP pool, see above). ``fn`` must
        not use this batcher (the worker would wait for itself)."""
        return self._submit(_Call(partial(fn, *args, **kwargs)))

    def _submit(self, request: _Request | _Call):
        with self._cond:
            self._queue.append(request)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="movinet-stream-batcher", daemon=True)
                self._worker.start()
            self._cond.notify_all()
        return request.future.result()

    def _work(self) -> None:
        while (batch := self._collect()) is not None:
            self._execute(batch)

    def _collect(self) -> list[_Request] | None:
        """The next batch, once it is due; None (and the worker ends) after ``idle_s`` without requests."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._queue, timeout=self.idle_s):
                self._worker = None  # under the condition: a request arriving now starts a new worker
                return None
            first = self._queue[0]
            if isinstance(first, _Call):
                return [self._queue.popleft()]
            # From when the worker is free, not from the oldest arrival: requests that queued during
            # the last batch would be overdue at once, and the sessions that batch just answered
            # (back within a millisecond or so) would miss the next one: two half batches in turn.
            deadline = max(first.arrived, time.monotonic()) + self.max_wait
            while not self._due(first.member) and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            batch = [r for r in self._queue if self._for(r, first.member)][: self.max_batch]
            for request in batch:
                self._queue.remove(request)
            return batch

    @staticmethod
    def _for(request: _Request | _Call, member: int) -> bool:
        return isinstance(request, _Request) and request.member == member

    def _due(self, member: int) -> bool:  # the caller holds self._cond
        same = sum(self._for(r, member) for r in self._queue)
        return same >= self.max_batch or len(self._queue) >= self._active

    def _execute(self, batch: list) -> None:
        try:
            with self.lock, torch.inference_mode():
                results = [batch[0].fn()] if isinstance(batch[0], _Call) else self._run(batch)
        except BaseException as exc:  # the callers see the error; the worker goes on
            for request in batch:
                request.future.set_exception(exc)
            return
        if isinstance(batch[0], _Request):
            self.steps, self.batches = self.steps + len(batch), self.batches + 1
        for request, result in zip(batch, results):
            request.future.set_result(result)

    def _run(self, batch: list[_Request]) -> list[tuple[Tensor, State]]:
        member, frames = batch[0].member, self._frames(batch)
        states = [r.state if r.state is not None else self.init_state(member) for r in batch]
        if len(batch) == 1:
            single = self.batch_one()[member] if self.batch_one is not None else self.models[member]
            return [single(frames, states[0])]
        names = list(states[0])
        logits, state = self.models[member](frames, {k: torch.cat([s[k] for s in states]) for k in names})
        # Copies, not views: a session that stops pushing would keep its whole batch's state alive.
        parts = {k: [part.clone() for part in state[k].split(1)] for k in names}
        return [(row, {k: parts[k][i] for k in names}) for i, row in enumerate(logits.split(1))]

    def _frames(self, batch: list[_Request]) -> Tensor:
        """The batch's frames as one ``(B, 3, 1, S, S)`` tensor; raw ones prepared together, one call
        per frame size (each frame is resized on its own: the same as preparing it alone)."""
        frames: list[Tensor | None] = [r.frames if isinstance(r.frames, Tensor) else None for r in batch]
        sizes: dict[tuple[int, ...], list[int]] = {}
        for i, request in enumerate(batch):
            if frames[i] is None:
                sizes.setdefault(request.frames.shape, []).append(i)
        for indices in sizes.values():
            if self.prepare is None:
                raise ValueError("raw frames given to a batcher without prepare")
            prepared = self.prepare(np.concatenate([batch[i].frames for i in indices]))  # (3, n, S, S)
            for j, i in enumerate(indices):
                frames[i] = prepared[None, :, j : j + 1]
        return torch.cat(frames).to(self.device)


def in_passing_thread(fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)`` run on a thread that ends when it returns, for work that runs parallel
    torch ops once (loading a model): the OpenMP pool it makes ends with that thread instead of
    staying with the caller (the server's main thread) and slowing the thread that steps the models
    ever after (see the module's docstring)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="movinet-load") as pool:
        return pool.submit(fn, *args, **kwargs).result()
