import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pgov3d_core.labelling.text_encoder import TextEncoder, tiny_clip_config
from pgov3d_core.weights import WeightsError


def tiny(**kw):
    return TextEncoder({"random_init": True, "model_cfg": tiny_clip_config(32), **kw})


def _poisoned(encoder: TextEncoder) -> TextEncoder:
    for p in encoder.model.parameters():
        p.data.zero_()
    return encoder


def test_embeddings_normalised_distinct_and_cached(tmp_path):
    cache = tmp_path / "emb.safetensors"
    enc = tiny(cache_path=str(cache))
    emb = enc.encode(["chair", "table", "chair"])
    assert emb.shape == (3, 32) and enc.dim == 32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    assert torch.equal(emb[0], emb[2]) and float(emb[0] @ emb[1]) < 0.999
    assert cache.exists()
    # A new process-equivalent encoder reads the cache instead of recomputing: poison the model.
    assert float(_poisoned(tiny()).encode(["table"])[0] @ emb[1]) < 0.99  # the poison shows without the cache
    torch.testing.assert_close(_poisoned(tiny(cache_path=str(cache))).encode(["table"]), emb[1:2])


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
    from safetensors.torch import load_file

    rebuilt = load_file(str(cache))  # a valid file again, holding the embedding just computed
    assert len(rebuilt) == 1 and torch.equal(next(iter(rebuilt.values())), emb[0])
    # The rebuilt cache is what a fresh encoder answers from (its model is poisoned).
    torch.testing.assert_close(_poisoned(tiny(cache_path=str(cache))).encode(["bed"]), emb)
    assert float(_poisoned(tiny()).encode(["bed"])[0] @ emb[0]) < 0.99


def test_missing_weights_name_the_config_key(tmp_path):
    with pytest.raises(WeightsError, match=r"weights.text_encoder: .*nope.pt does not exist"):
        TextEncoder({"checkpoint": str(tmp_path / "nope.pt")})
    with pytest.raises(WeightsError, match="weights.text_encoder is not set"):
        TextEncoder({})


# --------------------------------------------------------------------------- sentence backend (MiniLM)

SYNTHETIC_CLASSES = ["wall", "floor", "ceiling", "chair", "table", "sofa", "bed", "cabinet", "bookshelf", "desk",
                     "door", "window", "toilet", "sink", "bathtub", "picture", "refrigerator", "lamp"]


@pytest.fixture(scope="module")
def minilm():
    """The bundled all-MiniLM-L6-v2, loaded once for the module (a few seconds)."""
    return TextEncoder({"backend": "sentence"})


def test_bundled_minilm_has_language_meaning(minilm):
    emb = minilm.encode(SYNTHETIC_CLASSES)
    assert emb.shape == (18, 384) and minilm.dim == 384
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(18))
    off = (emb @ emb.T)[~torch.eye(18, dtype=torch.bool)]
    # Measured: mean cosine 0.36 between the class names (distinct training targets).
    assert 0.25 < float(off.mean()) < 0.45
    queries = {"couch": "sofa", "fridge": "refrigerator", "armchair": "chair", "something to sit on": "chair",
               "a place to sleep": "bed", "bookcase": "bookshelf", "painting": "picture"}
    nearest = (minilm.encode(list(queries)) @ emb.T).argmax(dim=1)
    assert [SYNTHETIC_CLASSES[i] for i in nearest] == list(queries.values())
    # Mean pooling + L2 norm is the sentence-transformers recipe of this model: the reference cosine
    # of the official model (sentence-transformers 2.x) for couch/sofa is 0.8564.
    couch, sofa = minilm.encode(["couch", "sofa"])
    assert abs(float(couch @ sofa) - 0.8564) < 1e-3


def test_sentence_identity_is_by_content(minilm, tmp_path):
    from pgov3d_core.labelling.sentence_model import BUNDLED_SHA256, bundled_minilm_folder

    assert minilm.identity == f"sentence|sha256:{BUNDLED_SHA256['model.safetensors'][:16]}|mean|256|{{}}"
    # A user's copy of the same folder (another name, other place) is the same embedding space.
    copy = tmp_path / "my-minilm"
    shutil.copytree(bundled_minilm_folder(), copy)
    mine = TextEncoder({"backend": "sentence", "checkpoint": str(copy), "checksums": BUNDLED_SHA256})
    assert mine.identity == minilm.identity
    torch.testing.assert_close(mine.encode(["lamp"]), minilm.encode(["lamp"]))


def test_flipped_byte_in_a_checksummed_folder_is_one_clear_error(tmp_path):
    from pgov3d_core.labelling.sentence_model import BUNDLED_SHA256, bundled_minilm_folder

    folder = tmp_path / "minilm"
    shutil.copytree(bundled_minilm_folder(), folder)
    weights = folder / "model.safetensors"
    with open(weights, "r+b") as f:
        f.seek(1_000_000)
        byte = f.read(1)
        f.seek(1_000_000)
        f.write(bytes([byte[0] ^ 0x01]))
    expected = BUNDLED_SHA256["model.safetensors"]
    with pytest.raises(WeightsError, match=rf"{weights}.* expected {expected}"):
        TextEncoder({"backend": "sentence", "checkpoint": str(folder), "checksums": BUNDLED_SHA256})
    with open(weights, "r+b") as f:  # weights restored, a file missing instead
        f.seek(1_000_000)
        f.write(byte)
    (folder / "tokenizer.json").unlink()
    missing = rf"tokenizer.json is missing \(expected sha256 {BUNDLED_SHA256['tokenizer.json']}\)"
    with pytest.raises(WeightsError, match=missing):
        TextEncoder({"backend": "sentence", "checkpoint": str(folder), "checksums": BUNDLED_SHA256})


def _zip(path, files: dict[str, bytes]):
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def test_extraction_verifies_before_use_and_repairs_its_own_copy(tmp_path, caplog):
    import hashlib

    from pgov3d_core.labelling.sentence_model import extract_verified

    files = {"model.safetensors": b"weights" * 1000, "1_Pooling/config.json": b"{}"}
    sums = {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}
    good = _zip(tmp_path / "good.zip", {**files, "../evil.txt": b"x"})
    dest = tmp_path / "cache" / "model"
    assert extract_verified(good, dest, sums, "test model") == dest
    assert (dest / "1_Pooling" / "config.json").read_bytes() == b"{}"
    assert sorted(p.name for p in dest.rglob("*") if p.is_file()) == ["config.json", "model.safetensors"]
    assert not (tmp_path / "cache" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    # Our own extracted copy got corrupted: it is re-extracted from the (good) zip.
    (dest / "model.safetensors").write_bytes(b"weightz" + files["model.safetensors"][7:])
    with caplog.at_level("WARNING"):
        extract_verified(good, dest, sums, "test model")
    assert (dest / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert "re-extracting" in caplog.text
    # The zip itself is wrong (a flipped byte in a member): one error naming the file and the
    # expected hash, and nothing half-extracted is left where the loader looks.
    flipped = bytearray(files["model.safetensors"])
    flipped[3] ^= 0x01
    bad = _zip(tmp_path / "bad.zip", {**files, "model.safetensors": bytes(flipped)})
    fresh = tmp_path / "cache" / "other"
    with pytest.raises(WeightsError, match=rf"model.safetensors has sha256 .*, expected {sums['model.safetensors']}"):
        extract_verified(bad, fresh, sums, "test model")
    assert not fresh.exists() and [p.name for p in fresh.parent.iterdir()] == ["model"]


def test_sentence_folder_errors_name_the_file(tmp_path):
    with pytest.raises(WeightsError, match=r"weights.text_encoder: .*nope does not exist"):
        TextEncoder({"backend": "sentence", "checkpoint": str(tmp_path / "nope")})
    folder = tmp_path / "dense"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "modules.json").write_text(
        '[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},'
        ' {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},'
        ' {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]')
    with pytest.raises(WeightsError, match=r"modules.json uses \['sentence_transformers.models.Dense'\]"):
        TextEncoder({"backend": "sentence", "checkpoint": str(folder)})
    with pytest.raises(ValueError, match="random_init / model_cfg are open_clip options"):
        TextEncoder({"backend": "sentence", "random_init": True})


def test_bundled_model_loads_with_the_network_unreachable(tmp_path):
    """No hub call: every socket connection fails and the Hugging Face cache is empty, and the
    bundled model still loads and embeds."""
    code = (
        "import os, socket\n"
        "def refuse(*a, **k): raise OSError('network disabled by the test')\n"
        "socket.socket.connect = refuse; socket.create_connection = refuse\n"
        "from pgov3d_core.labelling.text_encoder import TextEncoder\n"
        "e = TextEncoder({'backend': 'sentence'})\n"
        "print(os.environ['HF_HUB_OFFLINE'], e.encode(['sofa']).shape[1])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env["HF_HOME"] = str(tmp_path / "empty_hf_home")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["1", "384"]
    assert not (tmp_path / "empty_hf_home").exists()


def test_minilm_identity_travels_in_checkpoints(minilm, tmp_path):
    """The default stage-1 config trains into MiniLM's 384-d space; the checkpoint records the
    encoder, and what stage 2, evaluation and the node rebuild from it is the same encoder."""
    from pgov3d_core.config import load_config
    from pgov3d_core.data.synthetic import generate_dataset
    from pgov3d_core.inference import PointFeaturePredictor
    from pgov3d_core.training.checkpoint import load_checkpoint
    from pgov3d_core.training.stage1 import make_stage1_trainer

    scenes = generate_dataset(tmp_path / "scenes", [0], n_frames=4, width=40, height=30, density=100)
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "config" / "stage1.yaml", [
        f"data.scenes=[{str(scenes[0])!r}]", "data.synthetic=null", "data.match_voxel=0.05", "train.steps=1",
        "train.ckpt_every=1", "train.batch_size=1", "train.progress=false", "train.tensorboard=false",
        "train.threads=1"])
    assert cfg["text_encoder"]["backend"] == "sentence" and cfg["text_encoder"]["checkpoint"] is None
    trainer = make_stage1_trainer(cfg, tmp_path / "run")
    trainer.fit()
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ckpt["text_encoder"] == {"identity": minilm.identity, "dim": 384}
    assert ckpt["model_config"]["out_channels"] == 384  # the head follows the encoder's dimension
    predictor = PointFeaturePredictor.from_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert predictor.text_encoder_identity == minilm.identity and predictor.feature_dim == 384
    assert TextEncoder(predictor.text_encoder_config).identity == minilm.identity
    # Another encoder is another embedding space: stage 2 and the node compare identities.
    other = TextEncoder({"backend": "sentence", "template": "a {} in a room"})
    assert other.identity != minilm.identity
