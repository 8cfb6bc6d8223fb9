"""OnlineMapper without DDS: the frame queue's drop rule, per-stream synchroniser accounting,
time jumps and far stamps, the budgeted network pass, queries, status, the worker thread."""

import numpy as np
import pytest
import torch

from pgov3d_core.data.frame import Frame
from pgov3d_core.map import VoxelMap
from pgov3d_core.online import OnlineMapper, QueryError

K = np.array([[40.0, 0.0, 23.5], [0.0, 40.0, 17.5], [0.0, 0.0, 1.0]])


def wall_frame(x=0.0, depth=2.0, labels=None, frame_id="f"):
    pose = np.eye(4)
    pose[0, 3] = x
    rgb = np.full((36, 48, 3), 100, np.uint8)
    return Frame(rgb, np.full((36, 48), depth, np.float32), K, pose, frame_id=frame_id, labels=labels)


def messages_mapper(**kwargs):
    """A mapper whose inputs are plain dicts (what a node would convert from messages)."""
    def assemble(msgs):
        return wall_frame(x=msgs["pose"], frame_id=str(msgs["depth"]))
    return OnlineMapper(VoxelMap(voxel_size=0.05), assemble=assemble, **kwargs)


class TableEncoder:
    """A text encoder stand-in: fixed unit vectors per text (the real ones are tested elsewhere)."""

    identity = "table"

    def __init__(self, table):
        self.table = {k: torch.nn.functional.normalize(torch.tensor(v, dtype=torch.float32), dim=0)
                      for k, v in table.items()}

    def encode(self, texts):
        return torch.stack([self.table[t] for t in texts])


def test_full_queue_drops_the_oldest_frame_and_counts_it():
    mapper = OnlineMapper(VoxelMap(voxel_size=0.05), queue_size=2)
    for i in range(5):
        mapper.submit(wall_frame(x=float(i), frame_id=str(i)))
    assert mapper.queued() == 2
    assert mapper.integrate_pending() == 2
    s = mapper.status()
    assert s["frames_integrated"] == 2 and s["dropped"] == {"integration backlog": 3}
    # The newest two were kept: their voxels lie around x = 3 and 4.
    xs = mapper.map.voxel_means()[:, 0]
    assert float(xs.min()) > 1.5  # (frame 2 would reach x = 0.8)


def test_bad_frames_are_counted_by_cause_and_never_stop_integration():
    mapper = messages_mapper()
    bad_pose = wall_frame()
    bad_pose.pose = np.full((4, 4), np.nan)
    mapper.submit(bad_pose)

    def broken(_):
        raise ValueError("unsupported encoding 'yuv422'")
    mapper.assemble = broken
    mapper.submit({"depth": 1, "color": 1, "pose": 0.0})
    mapper.submit(wall_frame())  # a valid frame afterwards still integrates
    mapper.integrate_pending()
    s = mapper.status()
    assert s["dropped"] == {"bad frame": 1, "bad message": 1} and s["frames_integrated"] == 1


def test_synchroniser_counts_every_unused_message_by_stream():
    mapper = messages_mapper(sync_slop=0.01, sync_queue_size=5)
    mapper.add("pose", 1.0, 0.0)
    mapper.add("color", 1.0, "c")
    mapper.add("depth", 1.0, 1)  # a full frame
    mapper.add("color", 1.1, "c")  # colour without depth: superseded below
    mapper.add("color", 1.2, "c")
    mapper.add("pose", 1.2, 0.0)
    mapper.add("depth", 1.2, 2)  # a full frame; the 1.1 colour was never used
    mapper.add("depth", 1.3, 3)  # no pose will come near 1.3:
    mapper.add("pose", 1.5, 0.0)
    mapper.add("color", 1.5, "c")
    mapper.integrate_pending()
    s = mapper.status()
    assert s["frames_synchronised"] == 2 and s["frames_integrated"] == 2
    assert s["dropped"] == {"color without depth": 1, "depth without pose": 1}
    assert s["received"] == {"pose": 3, "color": 4, "depth": 3}
    assert s["pending"] == {"depth": 0, "color": 1, "pose": 1}  # the 1.5 ones wait for a depth frame


def test_a_jump_back_in_time_resets_synchronisation_and_mapping_continues():
    mapper = messages_mapper(queue_size=10)

    def frame_at(t, x):
        for stream, value in (("pose", x), ("color", "c"), ("depth", t)):
            mapper.add(stream, t, value)
    for k in range(3):
        frame_at(100.0 + k, float(k))
    mapper.add("depth", 101.9, 9)  # slightly late: out of order, not a jump
    frame_at(5.0, 3.0)  # a looping bag starts again
    frame_at(6.0, 4.0)
    mapper.integrate_pending()
    s = mapper.status()
    assert s["frames_integrated"] == 5 and s["time_jumps"] == 1
    assert s["dropped"] == {"depth out of order": 1}


def test_future_stamps_are_rejected_and_clear_resets_synchronisation():
    mapper = messages_mapper(max_stamp_lead=10.0)
    now = 1000.0
    future = now + 10 * 365 * 86400.0  # a bad clock, ten years ahead
    for stream, value in (("pose", 0.7), ("color", "c"), ("depth", "bad")):
        mapper.add(stream, future, value, now=now)
    for stream, value in (("pose", 0.0), ("color", "c"), ("depth", "good")):
        mapper.add(stream, now, value, now=now)
    mapper.integrate_pending()
    s = mapper.status()
    assert s["frames_integrated"] == 1  # the future frame was not integrated, the real one was
    assert s["dropped"] == {"pose stamp in the future": 1, "color stamp in the future": 1,
                            "depth stamp in the future": 1}
    # Stale stamps are accepted unless max_stamp_lag is set (bags played without --clock).
    mapper.add("depth", now - 3600, "old", now=now)
    assert "depth stamp too old" not in mapper.status()["dropped"]
    strict = messages_mapper(max_stamp_lag=5.0)
    strict.add("depth", now - 3600, "old", now=now)
    assert strict.status()["dropped"] == {"depth stamp too old": 1}
    # After a clear, time may start anywhere (a new recording): earlier stamps are accepted.
    assert mapper.clear() > 0
    for stream, value in (("pose", 0.0), ("color", "c"), ("depth", "after clear")):
        mapper.add(stream, now - 500.0, value, now=now)
    mapper.integrate_pending()
    assert mapper.status()["frames_integrated"] == 2 and len(mapper.map) > 0


def test_snapshot_is_skipped_while_the_map_is_unchanged():
    mapper = OnlineMapper(VoxelMap(voxel_size=0.05))
    xyz, rgb, revision = mapper.snapshot()
    assert len(xyz) == 0 and mapper.snapshot(unless_revision=revision) is None
    mapper.submit(wall_frame())
    mapper.integrate_pending()
    xyz, rgb, after_frame = mapper.snapshot(unless_revision=revision)
    assert len(xyz) == len(mapper.map) > 0 and rgb.shape == (len(xyz), 3) and after_frame != revision
    assert mapper.snapshot(unless_revision=after_frame) is None
    mapper.clear()
    xyz, _, after_clear = mapper.snapshot(unless_revision=after_frame)  # an emptied map is news too
    assert len(xyz) == 0 and after_clear not in (revision, after_frame)


class FakePredictor:
    """Features that encode x (so a test can tell which voxels a pass covered)."""

    feature_dim = 2
    text_encoder_identity = ""
    text_encoder_config = None

    def __init__(self):
        self.calls = []

    def features(self, xyz, rgb):
        self.calls.append(len(xyz))
        return torch.nn.functional.normalize(torch.stack([torch.ones(len(xyz)), xyz[:, 0]], 1), dim=1)


def test_network_pass_covers_the_budgeted_region_around_the_newest_changes():
    vmap = VoxelMap(voxel_size=0.05)
    predictor = FakePredictor()
    mapper = OnlineMapper(vmap, predictor=predictor, network_voxel_budget=100)
    for x in (0.0, 5.0):  # two far-apart walls; the one at x = 5 is observed last
        mapper.submit(wall_frame(x=x))
    mapper.integrate_pending()
    assert len(vmap) > 200
    assert mapper.network_pass() == 100 and predictor.calls == [100]
    covered = vmap.voxel_means()[vmap.has_feature()]
    assert float(covered[:, 0].min()) > 3.0  # all of them on the newest wall
    assert mapper.status()["voxels_with_features"] == 100 and mapper.status()["network_passes"] == 1
    # A map within the budget is covered whole; nothing changed → no pass.
    small = OnlineMapper(VoxelMap(voxel_size=0.05), predictor=FakePredictor(), network_voxel_budget=10**6)
    small.submit(wall_frame())
    small.integrate_pending()
    assert small.network_pass() == len(small.map)
    assert small.network_pass() == 0


def test_network_pass_encodes_features_outside_the_map_lock():
    """A pass's normalise-and-convert of every row (seconds on a large map) must not hold the lock
    that integration and queries wait on; the rows are then written under it."""
    vmap = VoxelMap(voxel_size=0.05, feature_dtype="float16")
    mapper = OnlineMapper(vmap, predictor=FakePredictor())
    mapper.submit(wall_frame())
    mapper.integrate_pending()
    held = []
    encode = vmap.encode_features

    def watched_encode(features):
        held.append(mapper.lock.locked())
        return encode(features)

    vmap.encode_features = watched_encode
    assert mapper.network_pass() == len(vmap)
    assert held == [False]
    assert vmap.features.dtype == torch.float16 and bool(vmap.has_feature().all())
    # The stored rows are the normalised network features of their own voxels (x encoded in dim 1).
    expected = torch.nn.functional.normalize(torch.stack([torch.ones(len(vmap)), vmap.voxel_means()[:, 0]], 1), dim=1)
    assert torch.allclose(vmap.features.float(), expected, atol=2e-3)


def test_encoded_features_are_refused_by_a_map_of_another_storage():
    a, b = VoxelMap(feature_dtype="float16"), VoxelMap(feature_dtype="int8")
    for m in (a, b):
        m.integrate(wall_frame())
    enc = a.encode_features(torch.randn(len(a), 4))
    assert enc.values.dtype == torch.float16 and enc.scale is None and enc.storage == "float16"
    with pytest.raises(ValueError, match="float16 storage"):
        b.set_features(torch.arange(len(a)), enc)
    with pytest.raises(ValueError, match="features must be"):
        a.set_features(torch.arange(len(a) - 1), enc)
    half = enc.take(torch.arange(len(a)) % 2 == 0)
    a.set_features(torch.arange(0, len(a), 2), half)
    assert int(a.has_feature().sum()) == len(half.values)


def test_query_with_oracle_features_labels_points_and_caps_them():
    classes = ["wall", "chair"]
    enc = TableEncoder({"wall": [1, 0, 0], "chair": [0, 1, 0], "seat": [0.1, 0.9, 0.0], "lamp": [0, 0, 1]})
    vmap = VoxelMap(voxel_size=0.05, num_label_classes=2)
    mapper = OnlineMapper(vmap, text_encoder=enc, oracle_class_names=classes)
    labels = np.zeros((36, 48), np.int32)
    labels[:, 24:] = 1  # right half of the image is a chair
    mapper.submit(wall_frame(labels=labels))
    mapper.integrate_pending()
    answer = mapper.query(["seat", "lamp"], min_score=0.5)
    chair = vmap.majority_labels() == 1
    assert answer.counts == [int(chair.sum()), 0] and answer.total_hits == int(chair.sum())
    assert answer.message == f"seat: {int(chair.sum())} points, lamp: 0 points"
    assert answer.best_scores[0] == pytest.approx(0.994, abs=0.01)
    capped = mapper.query(["seat", "wall"], max_points=10)
    assert capped.counts == [5, 5] and capped.total_hits == len(vmap)  # equal shares per text
    full = mapper.query(["seat", "wall"])
    for q in (0, 1):  # each text's best-scoring points
        best = np.sort(full.scores[full.labels == q])[-5:]
        np.testing.assert_allclose(np.sort(capped.scores[capped.labels == q]), best)
    for bad, why in (([], "no queries"), ([" "], "query 0 is empty"), (["x" * 300], "at most 256"),
                     (["a"] * 40, "at most 32")):
        with pytest.raises(QueryError, match=why):
            mapper.query(bad)
    with pytest.raises(QueryError, match="finite"):
        mapper.query(["seat"], min_score=float("nan"))


def test_query_errors_name_the_missing_piece():
    mapper = OnlineMapper(VoxelMap(voxel_size=0.05), text_encoder_error="weights missing at /x")
    with pytest.raises(QueryError, match="no text encoder is loaded: weights missing at /x"):
        mapper.query(["chair"])
    mapper.text_encoder = TableEncoder({"chair": [1, 0]})
    with pytest.raises(QueryError, match="the map is empty"):
        mapper.query(["chair"])
    mapper.submit(wall_frame())
    mapper.integrate_pending()
    with pytest.raises(QueryError, match="no features yet"):
        mapper.query(["chair"])


def test_worker_thread_integrates_what_arrives_and_stops_cleanly():
    mapper = messages_mapper(queue_size=10)
    mapper.start()
    try:
        for k in range(6):
            for stream, value in (("pose", 0.3 * k), ("color", "c"), ("depth", k)):
                mapper.add(stream, 10.0 + k, value)
        assert mapper.wait_idle(timeout=30)
    finally:
        mapper.stop()
    assert mapper.status()["frames_integrated"] == 6 and mapper.queued() == 0
