"""`OnlineMapper`: the online mapping logic shared by the ROS node and the offline `map_scene` tool.

ROS-free (the node only converts messages and wires parameters, timers and services to it):

    input ──► synchroniser (per-stream drops, time-jump reset, stamps far from the clock)
          ──► bounded frame queue (full: the OLDEST waiting frame is dropped and counted, so the
              map follows the newest frames rather than falling ever further behind)
          ──► integration worker thread: assemble (message → Frame) + VoxelMap.integrate
    network pass (own thread or called directly): the 3D network over the map, or over the
          `network_voxel_budget` voxels nearest the most recently observed changed voxel
    query: text encoder → cosine over the voxel features (network features, or oracle class
          embeddings of per-pixel labels) → per-point labels, scores and per-text counts
    status(): every counter a user needs to see what happened to each message

Every access to the map holds `lock` briefly (one frame's integration, one query, a copy for a
network pass or a publish), so queries never wait for a network pass.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pgov3d_core import frame_kernel
from pgov3d_core.data.frame import Frame, FrameError
from pgov3d_core.map import VoxelMap, select_points
from pgov3d_core.sync import ApproximateTimeSync

log = logging.getLogger(__name__)


class QueryError(ValueError):
    """A query that cannot be answered (the message says why, for the caller)."""


@dataclass
class QueryAnswer:
    """The labelled points of a query: xyz (M, 3) float32, rgb (M, 3) uint8, labels (M,) int32
    index into `texts`, scores (M,) float32; best_scores (Q,) the highest score of each text;
    counts (Q,) points per text returned; `total_hits`: labelled voxels before any max_points cap."""

    texts: list[str]
    xyz: np.ndarray
    rgb: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    best_scores: list[float]
    counts: list[int]
    total_hits: int

    @property
    def message(self) -> str:
        return ", ".join(f"{q}: {n} points" for q, n in zip(self.texts, self.counts, strict=True))


class OnlineMapper:
    def __init__(
        self,
        vmap: VoxelMap,
        *,
        streams: Sequence[str] = ("depth", "color", "pose"),
        assemble: Callable[[dict[str, Any]], Frame] | None = None,
        sync_slop: float = 0.02,
        sync_queue_size: int = 10,
        queue_size: int = 4,
        max_stamp_lead: float = 10.0,
        max_stamp_lag: float = 0.0,
        time_jump_threshold: float = 1.0,
        predictor=None,
        text_encoder=None,
        text_encoder_error: str = "",
        oracle_class_names: Sequence[str] = (),
        network_voxel_budget: int = 200_000,
        max_queries: int = 32,
        max_query_length: int = 256,
        logger: logging.Logger | None = None,
    ):
        """`assemble(messages by stream) -> Frame` turns one synchronised set of inputs into a
        Frame (the node converts ROS messages there, in the integration thread); without it
        the inputs must already be Frames (`submit`). Inputs stamped more than `max_stamp_lead`
        seconds after the `now` passed to `add` (data from the future: a bad clock) or, with
        `max_stamp_lag` > 0, more than that before it, are rejected (0 disables either check;
        the lag check is off by default because a bag played without --clock keeps its
        recorded, old stamps)."""
        if queue_size < 1:
            raise ValueError(f"queue_size must be ≥ 1, got {queue_size}")
        if network_voxel_budget < 1:
            raise ValueError(f"network_voxel_budget must be ≥ 1, got {network_voxel_budget}")
        self.map = vmap
        if vmap.device.type == "cpu":
            frame_kernel.warm_up()
        self.lock = threading.Lock()  # the map
        self.log = logger or log
        self.assemble = assemble
        self.max_stamp_lead, self.max_stamp_lag = float(max_stamp_lead), float(max_stamp_lag)
        self._drop_lock = threading.Lock()
        self.predictor = predictor
        self.text_encoder = text_encoder
        self.text_encoder_error = text_encoder_error
        self.oracle_classes = list(oracle_class_names)
        self.network_voxel_budget = int(network_voxel_budget)
        self.max_queries, self.max_query_length = int(max_queries), int(max_query_length)
        self.drops: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self.frames_synchronised = 0
        self.frames_integrated = 0
        self.map_revision = 0  # +1 whenever the map's points change (integration, clear)
        self.integration_seconds = 0.0
        self.network_passes = 0
        self.last_pass_seconds = 0.0
        self._last_log: dict[str, float] = {}
        self._input_lock = threading.Lock()  # synchroniser and counters of the input side
        self._queue: deque[Any] = deque()
        self._queue_size = int(queue_size)
        self._wake = threading.Condition()
        self._busy = 0  # frames taken off the queue and not yet integrated
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.sync = ApproximateTimeSync(list(streams), pivot="depth", slop=sync_slop, queue_size=sync_queue_size,
                                        on_match=self._on_synced, on_drop=self._on_sync_drop,
                                        jump_threshold=time_jump_threshold, on_jump=self._on_jump)

    # ------------------------------------------------------------------ accounting

    def drop(self, category: str, reason: str) -> None:
        """Count a dropped input under `category` and log why (throttled per category: a bad
        stream must not flood the log, and one bad stream must not hide another)."""
        now = time.monotonic()
        with self._drop_lock:
            self.drops[category] += 1
            quiet = now - self._last_log.get(category, -math.inf) <= 2.0
            if not quiet:
                self._last_log[category] = now
        if not quiet:
            self.log.warning(f"frame dropped ({category}): {reason}")

    def dropped(self) -> dict[str, int]:
        with self._drop_lock:
            return dict(self.drops)

    def _on_sync_drop(self, stream: str, stamp: float, category: str, reason: str) -> None:
        self.drop(category, f"{stream} at {stamp:.3f}: {reason}")

    def _on_jump(self, stream: str, previous: float, stamp: float) -> None:
        self.log.warning(f"time jumped back on {stream} from {previous:.3f} to {stamp:.3f} s: synchronisation "
                         "reset (a looping bag, a simulator reset or a clock correction); mapping continues")

    # ------------------------------------------------------------------ input

    def add(self, stream: str, stamp: float, msg: Any, now: float | None = None) -> None:
        """One input message of `stream` stamped `stamp` (seconds); `now` is the caller's clock
        (wall, or /clock under simulated time; None or 0 skips the far-stamp check)."""
        with self._input_lock:
            self.received[stream] += 1
            if not math.isfinite(stamp):
                self.drop(f"{stream} bad stamp", f"stamp {stamp}")
                return
            if now:  # 0 or None: no clock yet (simulated time before the first /clock)
                ahead = stamp - now
                if self.max_stamp_lead > 0 and ahead > self.max_stamp_lead:
                    self.drop(f"{stream} stamp in the future",
                              f"stamped {ahead:.1f} s after the node's clock (limit {self.max_stamp_lead:g} s, "
                              "parameter max_stamp_lead): the sender's clock is wrong or not synchronised")
                    return
                if self.max_stamp_lag > 0 and -ahead > self.max_stamp_lag:
                    self.drop(f"{stream} stamp too old",
                              f"stamped {-ahead:.1f} s before the node's clock (limit {self.max_stamp_lag:g} s, "
                              "parameter max_stamp_lag): a bag played without --clock? (play it with --clock "
                              "and use_sim_time:=true)")
                    return
            self.sync.add(stream, stamp, msg)

    def _on_synced(self, msgs: dict[str, Any]) -> None:
        self.frames_synchronised += 1
        self.submit(msgs)

    def submit(self, item: Frame | dict[str, Any]) -> None:
        """Queue a Frame (or, with `assemble`, one synchronised set of messages) for integration."""
        with self._wake:
            if len(self._queue) >= self._queue_size:
                self._queue.popleft()
                self.drop("integration backlog",
                          "dropped the oldest waiting frame: integration is slower than the input")
            self._queue.append(item)
            self._wake.notify()

    def queued(self) -> int:
        with self._wake:
            return len(self._queue) + self._busy

    def integrate_pending(self, limit: int | None = None) -> int:
        """Integrate queued frames in this thread (at most `limit`); returns how many were taken."""
        taken = 0
        while limit is None or taken < limit:
            with self._wake:
                if not self._queue:
                    break
                item = self._queue.popleft()
                self._busy += 1
            try:
                self._integrate(item)
            finally:
                with self._wake:
                    self._busy -= 1
                    self._wake.notify_all()
            taken += 1
        return taken

    def _integrate(self, item: Frame | dict[str, Any]) -> bool:
        t = time.perf_counter()
        try:
            frame = item if isinstance(item, Frame) else self._assemble(item)
            with self.lock:
                self.map.integrate(frame)
                self.map_revision += 1
        except FrameError as exc:
            self.drop("bad frame", str(exc))
            return False
        except ValueError as exc:  # conversions raise ValueError subclasses; they may name a category
            self.drop(getattr(exc, "category", "bad message"), str(exc))
            return False
        except Exception as exc:  # never let a bad frame kill the integration thread
            self.drop("unexpected error", repr(exc))
            return False
        self.frames_integrated += 1
        self.integration_seconds += time.perf_counter() - t
        return True

    def _assemble(self, msgs: dict[str, Any]) -> Frame:
        if self.assemble is None:
            raise TypeError("OnlineMapper was given messages but no `assemble` function to make Frames of them")
        return self.assemble(msgs)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the queue is empty and nothing is being integrated (worker running)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._wake:
            while self._queue or self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._wake.wait(left)
        return True

    # ------------------------------------------------------------------ worker threads

    def start(self, network_period: float = 0.0) -> None:
        """Start the integration worker (and, with a predictor and network_period > 0, the
        network-pass worker). Idempotent."""
        if self._threads:
            return
        self._stop.clear()
        self._threads.append(threading.Thread(target=self._integration_loop, name="pgov3d-integration", daemon=True))
        if self.predictor is not None and network_period > 0:
            self._threads.append(threading.Thread(target=self._network_loop, args=(float(network_period),),
                                                  name="pgov3d-network", daemon=True))
        for th in self._threads:
            th.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        for th in self._threads:
            th.join(timeout)
        self._threads = []

    def _integration_loop(self) -> None:
        while not self._stop.is_set():
            with self._wake:
                while not self._queue and not self._stop.is_set():
                    self._wake.wait(0.5)
            self.integrate_pending()

    def _network_loop(self, period: float) -> None:
        while not self._stop.wait(period):
            try:
                self.network_pass()
            except Exception as exc:  # a failing pass must not stop mapping
                self.log.error(f"network pass failed: {exc!r}")

    # ------------------------------------------------------------------ network pass

    def network_pass(self) -> int:
        """Run the 3D network over (a budgeted region of) the map and store per-voxel features.
        Returns the number of voxels updated."""
        if self.predictor is None:
            return 0
        with self.lock:
            n = len(self.map)
            changed = self.map.changed()
            if n == 0 or not bool(changed.any()):
                return 0
            points = self.map.voxel_means()
            if n <= self.network_voxel_budget:
                rows = torch.arange(n, device=points.device)
            else:  # the `budget` voxels nearest to the most recently observed changed voxel
                last_seen = self.map.last_seen()
                seen = torch.where(changed, last_seen, torch.zeros_like(last_seen))
                seed = points[int(torch.argmax(seen))]
                rows = torch.topk(((points - seed) ** 2).sum(1), self.network_voxel_budget, largest=False).indices
            keys = self.map.keys()[rows].clone()
            xyz = points[rows].clone()
            rgb = self.map.colors()[rows].clone()
        t = time.perf_counter()
        feats = self.predictor.features(xyz, rgb)
        # Normalised and converted to the storage type before taking the lock: memory-bound work
        # over every row (1-3 s for 300k voxels on a 2-core AVX2 EPYC) that, done under the lock,
        # stalled integration and dropped frames (the demo's replay: 13 of 30 frames integrated).
        encoded = self.map.encode_features(feats)
        with self.lock:
            rows, found = self.map.rows_of(keys)
            if not bool(found.all()):  # voxels evicted meanwhile are skipped
                rows, encoded = rows[found], encoded.take(found)
            self.map.set_features(rows, encoded)
        self.network_passes += 1
        self.last_pass_seconds = time.perf_counter() - t
        return int(found.sum())

    # ------------------------------------------------------------------ query

    def refresh_oracle_features(self) -> int:
        """In oracle mode (class names given, no network): every labelled voxel's feature := the
        embedding of its majority class. Returns the number of voxels set."""
        if not self.oracle_classes or self.predictor is not None or self.text_encoder is None:
            return 0
        class_text = self.text_encoder.encode(self.oracle_classes)
        with self.lock:
            return self.map.set_features_from_labels(class_text)

    def validate_queries(self, queries: Sequence[str]) -> list[str]:
        """The stripped query texts, or QueryError naming what is wrong."""
        if len(queries) == 0:
            raise QueryError("no queries given: pass at least one text, e.g. {queries: ['chair']}")
        if len(queries) > self.max_queries:
            raise QueryError(f"{len(queries)} queries given; at most {self.max_queries} are accepted "
                             "(parameter max_queries)")
        for i, q in enumerate(queries):
            if not q.strip():
                raise QueryError(f"query {i} is empty")
            if len(q) > self.max_query_length:
                raise QueryError(f"query {i} is {len(q)} characters long; at most {self.max_query_length} "
                                 "(parameter max_query_length)")
        return [q.strip() for q in queries]

    def query(self, queries: Sequence[str], min_score: float = 0.0, max_points: int = 0) -> QueryAnswer:
        """Label every mapped voxel with the best-matching text (score ≥ min_score)."""
        texts = self.validate_queries(queries)
        if not math.isfinite(min_score):
            raise QueryError(f"min_score must be a finite number, got {min_score}")
        if max_points < 0:
            raise QueryError(f"max_points must be ≥ 0 (0 = every point), got {max_points}")
        if self.text_encoder is None:
            raise QueryError(f"no text encoder is loaded: {self.text_encoder_error}")
        if len(self.map) == 0:
            raise QueryError("the map is empty: no RGB-D frame has been integrated yet")
        text = self.text_encoder.encode(texts)
        self.refresh_oracle_features()
        with self.lock:
            if self.map.features is None:
                raise QueryError(f"the map holds {len(self.map)} voxels but no features yet: the 3D network "
                                 "has not run")
            result = self.map.query(text, min_score=float(min_score))
            # Only labelled voxels are returned; under a cap, each text's best-scoring ones in
            # equal shares (select_points), so a small object asked beside "floor" still shows.
            rows = select_points(result, max_points)
            rows = rows[result.labels[rows] >= 0]
            xyz = self.map.voxel_means()[rows].cpu().numpy().copy()
            rgb = self.map.colors()[rows].cpu().numpy()
            total_hits = int((result.labels >= 0).sum())
        labels = result.labels[rows].cpu().numpy().astype(np.int32)
        scores = result.scores[rows].cpu().numpy().astype(np.float32)
        counts = np.bincount(labels, minlength=len(texts)) if len(labels) else np.zeros(len(texts), int)
        return QueryAnswer(texts, xyz, rgb, labels, scores, [float(v) for v in result.best_scores.cpu().numpy()],
                           [int(c) for c in counts], total_hits)

    # ------------------------------------------------------------------ map services

    def clear(self) -> int:
        """Empty the map, the waiting frames and the synchroniser (a fresh start: a stamp earlier
        than before the clear is accepted). Returns the number of voxels cleared."""
        with self._wake:
            dropped = len(self._queue)
            self._queue.clear()
        with self._input_lock:
            dropped += sum(self.sync.pending().values())  # messages waiting for partners go too
            self.sync.reset()
        with self.lock:
            n = len(self.map)
            self.map.clear()
            self.map_revision += 1
        if dropped:
            with self._drop_lock:
                self.drops["cleared before integration"] += dropped
        return n

    def save(self, path: str | Path) -> tuple[Path, int]:
        with self.lock:
            return self.map.save(path), len(self.map)

    def snapshot(self, unless_revision: int | None = None) -> tuple[np.ndarray, np.ndarray, int] | None:
        """(xyz, rgb) copies of the map's points and the map revision they are of, for publishing;
        None when the map is still at `unless_revision` (nothing new to publish)."""
        with self.lock:
            if unless_revision is not None and self.map_revision == unless_revision:
                return None
            return self.map.voxel_means().cpu().numpy().copy(), self.map.colors().cpu().numpy(), self.map_revision

    def status(self) -> dict:
        """Counters: what was received per stream, synchronised, integrated, dropped (by
        category), still waiting in the synchroniser (per stream) and in the queue."""
        with self._input_lock:
            pending = self.sync.pending()
            received = dict(self.received)
            jumps = self.sync.time_jumps
        with self.lock:
            voxels = len(self.map)
            with_features = int(self.map.has_feature().sum()) if voxels else 0
        return {
            "frames_integrated": self.frames_integrated,
            "frames_synchronised": self.frames_synchronised,
            "voxels": voxels,
            "voxels_with_features": with_features,
            "received": received,
            "pending": pending,
            "queued": self.queued(),
            "dropped": self.dropped(),
            "time_jumps": jumps,
            "integration_seconds": round(self.integration_seconds, 3),
            "network_passes": self.network_passes,
            "last_network_pass_seconds": round(self.last_pass_seconds, 3),
        }
