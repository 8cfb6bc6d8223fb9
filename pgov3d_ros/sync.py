"""Approximate-time synchronisation of a frame's streams (colour, depth, pose).

Hand-written because message_filters is not installable from the registries this package
supports. The depth stream is the pivot: a depth message is matched with the colour and pose
messages nearest to it in time, and emitted when every match is within `slop` seconds. Queues
are bounded; a pivot that can no longer be matched (every other stream has moved past it) is
dropped with a reason, and stamps that go backwards are rejected.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any


class ApproximateTimeSync:
    def __init__(self, streams: list[str], pivot: str, slop: float, queue_size: int = 10,
                 on_match: Callable[[dict[str, Any]], None] | None = None,
                 on_drop: Callable[[str, float, str], None] | None = None):
        if pivot not in streams:
            raise ValueError(f"pivot {pivot!r} is not one of the streams {streams}")
        if slop < 0:
            raise ValueError("slop must be ≥ 0")
        self.streams = list(streams)
        self.pivot = pivot
        self.slop = float(slop)
        self.queues: dict[str, deque[tuple[float, Any]]] = {s: deque(maxlen=queue_size) for s in streams}
        self.on_match = on_match or (lambda msgs: None)
        self.on_drop = on_drop or (lambda stream, stamp, reason: None)
        self._last_emitted = float("-inf")
        self._last_seen = dict.fromkeys(streams, float("-inf"))

    def add(self, stream: str, stamp: float, msg: Any) -> None:
        if stamp <= self._last_seen[stream]:
            self.on_drop(stream, stamp, f"stamp {stamp:.6f} not after previous {self._last_seen[stream]:.6f}")
            return
        self._last_seen[stream] = stamp
        queue = self.queues[stream]
        if len(queue) == queue.maxlen:
            old_stamp, _ = queue[0]
            self.on_drop(stream, old_stamp, "queue full before a match was found")
        queue.append((stamp, msg))
        self._process()

    def _process(self) -> None:
        pivots = self.queues[self.pivot]
        while pivots:
            t, pivot_msg = pivots[0]
            if t <= self._last_emitted:
                pivots.popleft()
                self.on_drop(self.pivot, t, "older than the last synchronised frame")
                continue
            match: dict[str, Any] = {self.pivot: pivot_msg}
            waiting = False
            unmatched = None
            for stream in self.streams:
                if stream == self.pivot:
                    continue
                queue = self.queues[stream]
                best = min(queue, key=lambda item: abs(item[0] - t), default=None)
                if best is not None and abs(best[0] - t) <= self.slop:
                    match[stream] = best
                    continue
                # A closer message may still come unless this stream is already past t + slop.
                if self._last_seen[stream] <= t + self.slop:
                    waiting = True
                else:
                    unmatched = stream
            if unmatched is not None:
                pivots.popleft()
                self.on_drop(self.pivot, t, f"no {unmatched} message within {self.slop} s")
                continue
            if waiting:
                return
            pivots.popleft()
            self._last_emitted = t
            for stream in self.streams:
                if stream != self.pivot:
                    # Drop what is older than the match: it cannot serve a later pivot better.
                    stamp = match[stream][0]
                    queue = self.queues[stream]
                    while queue and queue[0][0] < stamp:
                        queue.popleft()
                    match[stream] = match[stream][1]
            self.on_match(match)
