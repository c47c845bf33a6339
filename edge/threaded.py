"""Keep the accelerator busy: a camera pipeline's steps on threads of their own.

    source (capture thread) -> prepare thread -> invoke thread -> caller's thread
            decode            plan, motion,      the model only    box decoding, NMS,
                              regions, resize                      tracking, vote, ledger

On an Edge TPU the CPU is free while the model runs, and a CPU interpreter given one thread
leaves the other cores free: either way the next frame is decoded and prepared, and the last
one decoded and tracked, while this one is inferred, so the interpreter never waits for them.
The hand-offs are bounded queues that keep order (one frame each): the pipeline's depth is
fixed, memory does not grow, and tracks see frames in time order. For a live source the frame
that enters is the newest one (Capture's single slot: frames the pipeline has no time for are
dropped there); a file loses nothing.

A frame is planned from the tracks PLAN_LAG frames back (edge.pipeline): the prepare thread
waits for that frame to be complete, so a threaded run counts exactly what a serial one does.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Protocol

from edge.capture import Frame, FrameQueue
from edge.detect import Prepared, RawOutput
from edge.detection import Detection
from edge.pipeline import PLAN_LAG, CameraPipeline, FramePlan, FrameResult

# Longest wait of a stage thread on its input before it looks at the stop flag again.
POLL_S = 0.2


class FrameSource(Protocol):
    """What the pipeline reads frames from: edge.capture.Capture, or a test's stand-in."""

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next frame (the newest, for a live source), None on timeout or at the end."""

    @property
    def ended(self) -> bool:
        """True once a file has ended and its last frame has been read."""


@dataclass
class _Planned:
    """A frame between the prepare and the invoke thread."""

    frame: Frame
    plan: FramePlan
    inputs: list[Prepared]


@dataclass
class _Inferred:
    """A frame between the invoke thread and the caller."""

    frame: Frame
    plan: FramePlan
    inputs: list[Prepared]
    outputs: list[RawOutput]


class StageError(RuntimeError):
    """A stage thread failed; the original exception is the cause."""


class ThreadedPipeline:
    """Runs one CameraPipeline over a frame source with prepare and invoke on their own threads.

    Usage: `for frame, result in ThreadedPipeline(pipeline, source).run(): ...`; the caller's
    loop is the last stage (decoding, tracking, vote, ledger), so what it does with each result
    (publishing, annotating) overlaps the next inference too. Leaving the loop early, or
    `stop()`, ends the threads.
    """

    def __init__(self, pipeline: CameraPipeline, source: FrameSource, depth: int = 1) -> None:
        """Prepare to run; `depth` frames may wait between two stages."""
        self.pipeline = pipeline
        self.detector = pipeline.detector
        self.source = source
        self._planned: FrameQueue[_Planned] = FrameQueue(depth)
        self._inferred: FrameQueue[_Inferred] = FrameQueue(depth)
        self._stop = threading.Event()
        self._completed = threading.Condition()
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []

    def run(self) -> Generator[tuple[Frame, FrameResult], None, None]:
        """Start the stage threads and yield every frame's result, in order, until the end."""
        self._threads = [
            threading.Thread(target=self._guard, name="prepare", daemon=True,
                             args=(self._prepare_loop, self._planned, None)),
            threading.Thread(target=self._guard, name="invoke", daemon=True,
                             args=(self._invoke_loop, self._inferred, self._planned)),
        ]
        for thread in self._threads:
            thread.start()
        try:
            while True:
                item = self._inferred.get(POLL_S)
                if item is None:
                    if self._inferred.drained or self._stop.is_set():
                        if self._error is not None:
                            raise StageError(f"pipeline stage failed: {self._error!r}") from (
                                self._error
                            )
                        return
                    continue
                yield item.frame, self._complete(item)
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop the stage threads and wait for them."""
        self._stop.set()
        self._planned.close()
        self._inferred.close()
        with self._completed:
            self._completed.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(5.0)

    def _guard(
        self,
        loop: Callable[[], None],
        downstream: FrameQueue[_Planned] | FrameQueue[_Inferred],
        upstream: FrameQueue[_Planned] | None,
    ) -> None:
        """Run a stage loop; an exception is raised in the caller once the frames before the
        failing one are through (they are not lost), and nothing more enters."""
        try:
            loop()
        except BaseException as exc:
            self._error = exc
            downstream.finish()
            if upstream is not None:
                upstream.close()  # the stages before this one stop at their next hand-off

    def _prepare_loop(self) -> None:
        """Read, plan and draw each frame's model inputs; the end of the source ends it."""
        while not self._stop.is_set():
            frame = self.source.read(POLL_S)
            if frame is None:
                if self.source.ended:
                    self._planned.finish()
                    return
                continue
            # Frame n is planned from the tracks after frame n - PLAN_LAG.
            needed = self.pipeline.frames - PLAN_LAG + 1
            with self._completed:
                self._completed.wait_for(functools.partial(self._planable, needed))
            if self._stop.is_set():
                return
            plan = self.pipeline.plan(frame.image, frame.timestamp)
            inputs = [self.detector.prepare(frame.image, p) for p in plan.inputs]
            if not self._planned.put(_Planned(frame, plan, inputs)):
                return

    def _planable(self, needed: int) -> bool:
        """Whether `needed` frames are complete (or the pipeline stops)."""
        return self.pipeline.completed >= needed or self._stop.is_set()

    def _invoke_loop(self) -> None:
        """Run the model on each prepared input, in order."""
        while not self._stop.is_set():
            item = self._planned.get(POLL_S)
            if item is None:
                if self._planned.drained:
                    self._inferred.finish()
                    return
                continue
            outputs = [self.detector.invoke(prepared) for prepared in item.inputs]
            if not self._inferred.put(_Inferred(item.frame, item.plan, item.inputs, outputs)):
                return

    def _complete(self, item: _Inferred) -> FrameResult:
        """Decode, merge, track and vote (the caller's thread); wakes the prepare thread."""
        found: list[list[Detection]] = []
        for prepared, raw in zip(item.inputs, item.outputs, strict=True):
            found += self.detector.decode(raw, prepared.placements)
        frame = item.frame
        ms = [raw.invoke_ms for raw in item.outputs]
        result = self.pipeline.complete(frame.image, frame.timestamp, item.plan, found, ms)
        with self._completed:
            self._completed.notify_all()
        return result
