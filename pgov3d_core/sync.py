"""Approximate-time synchronisation of a frame's streams (depth, colour, pose, labels).

Hand-written because message_filters is not installable from the registries this package
supports (and the core never imports ROS). The depth stream is the pivot: a depth message is
matched with the colour and pose messages nearest to it in time, and emitted when every match is
within `slop` seconds. Queues are bounded.

Every message that is not used ends in exactly one named drop, by stream, so nothing is lost
without a trace:
  "<pivot> without <stream>"   a depth message no <stream> message came within slop of
  "<stream> without <pivot>"   a colour/pose/... message no depth message was matched with
                               (superseded by a later one, or pushed out of a full queue)
  "<stream> out of order"      a stamp at or slightly before the stream's previous one
Messages still waiting for their partners are counted by `pending()`.

Time jumps: a stamp more than `jump_threshold` seconds *before* its stream's previous one is a
jump back in time (a looping bag, a simulator reset, a corrected clock), not a late message. As
tf2 and message_filters do, the synchroniser then forgets its state (queues and last stamps, the
discarded messages counted as "<stream> discarded by time jump") and carries on from the new
time, so a jump never blinds it for good.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any


class _Entry:
    __slots__ = ("stamp", "msg", "used")

    def __init__(self, stamp: float, msg: Any):
        self.stamp, self.msg, self.used = stamp, msg, False


class ApproximateTimeSync:
    def __init__(self, streams: list[str], pivot: str, slop: float, queue_size: int = 10,
                 on_match: Callable[[dict[str, Any]], None] | None = None,
                 on_drop: Callable[[str, float, str, str], None] | None = None,
                 jump_threshold: float = 1.0,
                 on_jump: Callable[[str, float, float], None] | None = None):
        """on_match(msgs by stream); on_drop(stream, stamp, category, reason);
        on_jump(stream, previous stamp, new stamp) after a reset."""
        if pivot not in streams:
            raise ValueError(f"pivot {pivot!r} is not one of the streams {streams}")
        if slop < 0:
            raise ValueError("slop must be ≥ 0")
        if queue_size < 1:
            raise ValueError("queue_size must be ≥ 1")
        if jump_threshold <= 0:
            raise ValueError("jump_threshold must be > 0")
        self.streams = list(streams)
        self.pivot = pivot
        self.slop = float(slop)
        self.queue_size = int(queue_size)
        self.jump_threshold = float(jump_threshold)
        self.on_match = on_match or (lambda msgs: None)
        self.on_drop = on_drop or (lambda stream, stamp, category, reason: None)
        self.on_jump = on_jump or (lambda stream, previous, stamp: None)
        self.time_jumps = 0
        self.reset()

    def reset(self) -> None:
        """Forget every waiting message and last stamp (after a time jump, or a map clear)."""
        self.queues: dict[str, deque[_Entry]] = {s: deque() for s in self.streams}
        self._last_emitted = float("-inf")
        self._last_seen = dict.fromkeys(self.streams, float("-inf"))

    def pending(self) -> dict[str, int]:
        """Messages of each stream waiting for a match."""
        return {s: sum(not e.used for e in q) for s, q in self.queues.items()}

    def add(self, stream: str, stamp: float, msg: Any) -> None:
        if stream not in self.queues:
            raise ValueError(f"unknown stream {stream!r}; streams are {self.streams}")
        previous = self._last_seen[stream]
        if stamp <= previous:
            if previous - stamp <= self.jump_threshold:
                self.on_drop(stream, stamp, f"{stream} out of order",
                             f"stamp {stamp:.6f} not after previous {previous:.6f}")
                return
            for s, q in self.queues.items():
                for e in q:
                    if not e.used:
                        self.on_drop(s, e.stamp, f"{s} discarded by time jump",
                                     f"time jumped back from {previous:.3f} to {stamp:.3f} on {stream}")
            self.reset()
            self.time_jumps += 1
            self.on_jump(stream, previous, stamp)
        self._last_seen[stream] = stamp
        queue = self.queues[stream]
        if len(queue) == self.queue_size:
            self._discard(stream, queue.popleft(), "queue full before a match was found")
        queue.append(_Entry(stamp, msg))
        self._process()

    def _discard(self, stream: str, entry: _Entry, why: str) -> None:
        if entry.used:
            return
        if stream == self.pivot:
            missing = self._missing(entry.stamp) or "a match"
            self.on_drop(stream, entry.stamp, f"{stream} without {missing}", why)
        else:
            self.on_drop(stream, entry.stamp, f"{stream} without {self.pivot}", why)

    def _missing(self, t: float) -> str | None:
        """The first stream with no message within slop of `t`."""
        for stream in self.streams:
            if stream != self.pivot and not any(abs(e.stamp - t) <= self.slop for e in self.queues[stream]):
                return stream
        return None

    def _process(self) -> None:
        pivots = self.queues[self.pivot]
        while pivots:
            head = pivots[0]
            t = head.stamp
            if t <= self._last_emitted:
                pivots.popleft()
                self.on_drop(self.pivot, t, f"{self.pivot} out of order", "older than the last synchronised frame")
                continue
            match: dict[str, _Entry] = {}
            waiting = False
            unmatched = None
            for stream in self.streams:
                if stream == self.pivot:
                    continue
                best = min(self.queues[stream], key=lambda e: abs(e.stamp - t), default=None)
                if best is not None and abs(best.stamp - t) <= self.slop:
                    match[stream] = best
                    continue
                # A closer message may still come unless this stream is already past t + slop.
                if self._last_seen[stream] <= t + self.slop:
                    waiting = True
                else:
                    unmatched = stream
            if unmatched is not None:
                pivots.popleft()
                self.on_drop(self.pivot, t, f"{self.pivot} without {unmatched}",
                             f"no {unmatched} message within {self.slop} s")
                continue
            if waiting:
                return
            pivots.popleft()
            self._last_emitted = t
            out = {self.pivot: head.msg}
            for stream, entry in match.items():
                entry.used = True
                out[stream] = entry.msg
                # What is older than the match cannot serve a later pivot better.
                queue = self.queues[stream]
                while queue and queue[0].stamp < entry.stamp:
                    self._discard(stream, queue.popleft(), "superseded by a message nearer a depth frame")
            self.on_match(out)
