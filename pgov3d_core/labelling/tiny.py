"""Tiny random-weight checkpoints of LLaVA-NeXT, GroundingDINO and SAM, built locally.

They exercise the production loaders and code paths end to end (generate → parse → ground →
segment → cache) without downloading anything: each is built from a small config, its tokenizer
is made here with the `tokenizers` library, and it is saved in the same on-disk format as the
real checkpoint (transformers folders, a SAM state-dict .pth). Their outputs are meaningless:

* LLaVA-NeXT's text vocabulary holds only object words and list separators; its weights are
  random except the word embeddings and output head, which are set so that each token predicts
  the next one of a fixed cycle ("chair , table ; lamp and sofa / bed …"). Greedy generation
  (random weights alone collapse to one repeated token) therefore produces list-like text that
  parses into categories, whatever the image. Its generation config has no end-of-sequence
  token, so every answer has max_new_tokens tokens;
* GroundingDINO uses a WordPiece vocabulary whose [CLS], [SEP], "." and "?" sit at the ids of
  bert-base-uncased, which the model's text masks hard-code; with thresholds near 0 (see
  `tiny_labelling_config`) it returns boxes for the listed categories;
* SAM is the "tiny" architecture of `models.SAM_ARCHITECTURES`.

Used by the tests, `bench/bench_labelling.py` and CPU demos.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from pgov3d_core.labelling.config import LabellingConfig
from pgov3d_core.weights import offline_environment

OBJECT_WORDS = ("chair", "table", "lamp", "sofa", "bed", "door", "window", "wall", "floor", "shelf")
# The successor cycle of the tiny LLaVA-NeXT's language (see module docstring).
_LLAVA_CYCLE = (
    "chair", ",", "table", ";", "lamp", "and", "sofa", "/", "bed", "&", "window", "or", "door", "plus", "shelf",
    "+", "wall", "|", "floor",
)
_GDINO_WORDS = (*OBJECT_WORDS, "a", "the", "and", "red", "of", "##s", "##es")

# Minimal Mistral-style chat template ("[INST] … [/INST]") like llava-v1.6-mistral-7b-hf's.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}[INST] {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} [/INST]"
    "{% else %}{% for c in m['content'] %} {{ c['text'] }}{% endfor %}</s>{% endif %}{% endfor %}"
)


def _build_seeded(factory, seed: int):
    """factory() under a forked, seeded RNG: reproducible weights, caller's random state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def _set_successor_language(model, cycle: list[int], seed: int, gain: float = 8.0) -> None:
    """Orthogonal word embeddings (RMS 10) and output head rows ∝ the embedding of the
    predecessor in `cycle` (tokens outside the cycle lead to its first token): the hidden state
    of the last token stays close to its embedding (the random layers add little next to it),
    so its successor's logit dominates and no other token's logit gets any share of it."""
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    n_tok, dim = emb.shape
    if n_tok > dim:
        raise ValueError(f"orthogonal embeddings need vocab size {n_tok} <= hidden size {dim}")
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, n_tok, generator=g))  # (dim, n_tok) orthonormal columns
    with torch.no_grad():
        emb.copy_(q.T * 10.0 * dim**0.5)
        head.zero_()
        in_cycle = set(cycle)
        for i, tok in enumerate(cycle):
            head[cycle[(i + 1) % len(cycle)]] += gain * emb[tok]
        for tok in range(n_tok):
            if tok not in in_cycle:
                head[cycle[0]] += gain * emb[tok]


def build_tiny_llava(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """A LLaVA-NeXT checkpoint folder (CLIP vision tower + Llama text model, ~0.1 M parameters)."""
    offline_environment()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        CLIPVisionConfig,
        GenerationConfig,
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
        PreTrainedTokenizerFast,
    )

    out = Path(out_dir)
    specials = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
    vocab = {t: i for i, t in enumerate([*specials, *_LLAVA_CYCLE])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.decoder = decoders.WordPiece(cleanup=True)  # joins words with spaces, "chair ," → "chair,"
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    pinpoints = [[32, 64], [64, 32], [64, 64]]
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints
        ),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLIP [CLS] token
        chat_template=TINY_CHAT_TEMPLATE,
    )
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
            patch_size=8, projection_dim=32,
        ),
        text_config=LlamaConfig(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=2, max_position_embeddings=4096, pad_token_id=vocab["<pad>"],
            bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"],
        ),
        image_token_index=vocab["<image>"],
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1,
        image_seq_length=16,
    )
    model = _build_seeded(lambda: LlavaNextForConditionalGeneration(config).eval(), seed)
    _set_successor_language(model, [vocab[t] for t in _LLAVA_CYCLE], seed)
    model.generation_config = GenerationConfig(
        bos_token_id=vocab["<s>"], pad_token_id=vocab["<pad>"], eos_token_id=None
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _bert_vocab() -> list[str]:
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    for token, index in ((".", 1012), ("?", 1029)):  # bert-base-uncased ids hard-coded by GroundingDINO
        vocab += [f"[unused{len(vocab)}]" for _ in range(index - len(vocab))]
        vocab.append(token)
    return vocab + list(_GDINO_WORDS)


def build_tiny_grounding_dino(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """A GroundingDINO checkpoint folder (tiny Swin backbone, 1-layer BERT, 20 queries)."""
    offline_environment()
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = _bert_vocab()
    vocab_file = out / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(vocab=str(vocab_file), do_lower_case=True)
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}),
        tokenizer=tokenizer,
    )
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(
            image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
            out_indices=[2, 3, 4],
        ),
        text_config=BertConfig(
            vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64,
        ),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=20, encoder_n_points=2,
        decoder_n_points=2, max_text_len=64,
    )
    model = _build_seeded(lambda: GroundingDinoForObjectDetection(config).eval(), seed)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_sam(out_path: str | os.PathLike, seed: int = 0) -> Path:
    """A SAM state dict of the 'tiny' architecture, saved like the official .pth files."""
    from pgov3d_core.labelling.models import SAM_ARCHITECTURES, build_sam

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = _build_seeded(lambda: build_sam(SAM_ARCHITECTURES["tiny"]), seed)
    torch.save(model.state_dict(), out)
    return out


def build_tiny_weights(out_dir: str | os.PathLike, seed: int = 0) -> dict[str, str]:
    """All three tiny checkpoints under `out_dir`; returns the config's `weights:` section."""
    out = Path(out_dir)
    return {
        "llava": str(build_tiny_llava(out / "llava-tiny", seed)),
        "grounding_dino": str(build_tiny_grounding_dino(out / "grounding-dino-tiny", seed)),
        "sam": str(build_tiny_sam(out / "sam_tiny.pth", seed)),
    }


def tiny_labelling_config(weights: dict[str, str], **overrides) -> LabellingConfig:
    """A models-labeller config for the tiny checkpoints: thresholds low enough that random
    GroundingDINO weights still give boxes, short generations, the tiny SAM architecture."""
    data = {
        "labeller": "models",
        "batch_size": 2,
        "device": "cpu",
        "weights": dict(weights),
        "vocabulary": {"max_new_tokens_describe": 12, "max_new_tokens_list": 12, "max_categories": 8},
        "grounding": {"box_threshold": 0.0, "text_threshold": 0.0, "nms_iou": 0.9, "max_boxes": 12},
        "segmentation": {"sam_model_type": "tiny", "box_batch": 8},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return LabellingConfig.from_dict(data)


def write_block_scene(
    root: str | os.PathLike, n_frames: int = 3, width: int = 64, height: int = 48, seed: int = 0
) -> Path:
    """A small labelled scene of coloured blocks (class ids 0-3 + unlabelled), written with
    `write_scene`: enough for the labelling pipeline, which only needs colour, depth size and labels."""
    from pgov3d_core.data.frame import Frame
    from pgov3d_core.data.scene import write_scene

    rng = np.random.default_rng(seed)
    class_names = ["wall", "floor", "chair", "table", "lamp"]
    colors = np.array([[200, 190, 180], [120, 90, 60], [200, 30, 30], [40, 160, 60], [240, 230, 40]], np.uint8)
    K = np.array([[0.9 * width, 0, (width - 1) / 2], [0, 0.9 * width, (height - 1) / 2], [0, 0, 1]])
    frames = []
    for i in range(n_frames):
        labels = np.zeros((height, width), np.int32)  # wall
        labels[height * 2 // 3 :] = 1  # floor
        x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 3))
        labels[y0 : y0 + height // 3, x0 : x0 + width // 4] = 2  # chair
        if i % 2 == 0:
            labels[height // 2 : height // 2 + 6, width - 20 : width - 4] = 3  # table (every other frame)
        labels[:4, :4] = -1  # an unlabelled corner
        color = colors[np.maximum(labels, 0)].copy()
        color = np.clip(color.astype(np.int16) + rng.integers(-10, 11, color.shape), 0, 255).astype(np.uint8)
        depth = np.full((height, width), 2.0, np.float32)
        pose = np.eye(4)
        pose[0, 3] = 0.1 * i
        frames.append(Frame(color=color, depth=depth, K=K, pose=pose, frame_id=f"{i:06d}", labels=labels))
    return write_scene(root, frames, class_names=class_names, source="labelling-test-blocks")
