"""bench/bench_train_step.py --breakdown: the phase timers see the torch kernels' calls, add up to
the step, and leave the timed functions as they were."""

import torch

from pgov3d_core.models import gather_conv


def test_breakdown_rows_cover_the_step_and_the_timers_are_removed(capsys, load_script):
    bench = load_script("bench/bench_train_step")
    bench.VOXEL = 0.1
    before = (gather_conv.submanifold_map, gather_conv.downsample_map,
              gather_conv.GatherConv.forward, gather_conv.GatherConv.backward)
    torch.set_num_threads(1)
    bench.breakdown("tiny", 800, repeats=2)
    out = capsys.readouterr().out
    total = float(out.split("steps: ")[1].split(" ms")[0])
    rows = {ln.split(" | ")[0].lstrip("| "): float(ln.split(" | ")[1]) for ln in out.splitlines()
            if ln.startswith("| ") and not ln.startswith("| phase") and not ln.startswith("| ---")}
    assert set(rows) >= {"kernel maps", "conv forward", "conv backward", "optimiser (AdamW)"}
    # Every tiny U-Net convolution runs through the torch kernels: their phases are not empty.
    assert rows["conv forward"] > 0 and rows["conv backward"] > 0 and rows["kernel maps"] > 0
    # The rows partition the step (the time between phases is a few Python statements).
    assert abs(sum(rows.values()) - total) <= 0.1 * total + 0.5
    after = (gather_conv.submanifold_map, gather_conv.downsample_map,
             gather_conv.GatherConv.forward, gather_conv.GatherConv.backward)
    assert after == before
