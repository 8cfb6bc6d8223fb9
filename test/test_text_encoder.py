import subprocess
import sys

import pytest
import torch

from pgov3d_core.labelling.text_encoder import TextEncoder, tiny_clip_config
from pgov3d_core.weights import WeightsError


def tiny(**kw):
    return TextEncoder({"random_init": True, "model_cfg": tiny_clip_config(32), **kw})


def test_embeddings_normalised_distinct_and_cached(tmp_path):
    cache = tmp_path / "emb.safetensors"
    enc = tiny(cache_path=str(cache))
    emb = enc.encode(["chair", "table", "chair"])
    assert emb.shape == (3, 32) and enc.dim == 32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    assert torch.equal(emb[0], emb[2]) and float(emb[0] @ emb[1]) < 0.999
    assert cache.exists()
    # A new process-equivalent encoder reads the cache instead of recomputing: poison the model.
    again = tiny(cache_path=str(cache))
    for p in again.model.parameters():
        p.data.zero_()
    torch.testing.assert_close(again.encode(["table"]), emb[1:2])


def test_random_init_embeddings_are_well_separated():
    names = ["wall", "floor", "ceiling", "chair", "table", "sofa", "bed", "cabinet", "door", "window"]
    emb = TextEncoder({"random_init": True, "model_cfg": tiny_clip_config(64)}).encode(names)
    cos = emb @ emb.T
    off = cos[~torch.eye(len(names), dtype=torch.bool)]
    assert float(off.max()) < 0.9 and float(off.mean()) < 0.6


def test_random_init_is_deterministic_across_processes():
    code = (
        "from pgov3d_core.labelling.text_encoder import TextEncoder, tiny_clip_config;"
        "e = TextEncoder({'random_init': True, 'model_cfg': tiny_clip_config(32)});"
        "print(e.encode(['sofa'])[0, :4].tolist())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    torch.testing.assert_close(torch.tensor(eval(out)), tiny().encode(["sofa"])[0, :4], atol=1e-6, rtol=0)


def test_corrupt_cache_is_rebuilt(tmp_path):
    cache = tmp_path / "emb.safetensors"
    cache.write_bytes(b"garbage")
    emb = tiny(cache_path=str(cache)).encode(["bed"])
    assert emb.shape == (1, 32)
    torch.testing.assert_close(tiny(cache_path=str(cache)).encode(["bed"]), emb)


def test_missing_weights_name_the_config_key(tmp_path):
    with pytest.raises(WeightsError, match=r"weights.text_encoder: .*nope.pt does not exist"):
        TextEncoder({"checkpoint": str(tmp_path / "nope.pt")})
    with pytest.raises(WeightsError, match="weights.text_encoder is not set"):
        TextEncoder({})
