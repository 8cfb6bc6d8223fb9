"""The three foundation models of pixel-wise entity generation (PGOV3D §3.1, Fig. 3).

* `LlavaVocabulary`: LLaVA-NeXT (transformers) with a two-turn chain of thought: describe the
  image carefully, then, with that description in the conversation, list the object categories.
* `GroundingDinoDetector`: GroundingDINO (transformers) boxes for the listed categories, each
  box assigned to the category whose prompt tokens it matches best.
* `SamSegmenter`: SAM (segment_anything) masks from the boxes, all boxes of an image in batches.

Everything loads from local paths with `local_files_only=True` (and `torch.load(weights_only=True)`
for SAM); a missing or unusable path raises `WeightsError` naming the config key.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pgov3d_core.labelling.config import GroundingConfig, SegmentationConfig, VocabularyConfig
from pgov3d_core.labelling.parsing import grounding_prompt, parse_object_list
from pgov3d_core.weights import WeightsError, offline_environment

log = logging.getLogger(__name__)

# Exceptions transformers / torch raise for a folder or file that is not the expected checkpoint.
_LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError, EOFError)


def resolve_dtype(device: torch.device, name: str) -> torch.dtype:
    """float16 on CUDA and float32 on CPU for 'auto' (CPU half-precision kernels are slow or missing)."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def _autocast(device: torch.device, dtype: torch.dtype):
    """Mixed precision for the fp32-weight models (GroundingDINO, SAM) on CUDA only."""
    if device.type == "cuda" and dtype != torch.float32:
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def hf_checkpoint_folder(path: Path, key: str) -> Path:
    """A transformers checkpoint is a folder with config.json; say so clearly when it is not."""
    if not path.is_dir() or not (path / "config.json").is_file():
        raise WeightsError(
            f"{key}: {path} is not a transformers checkpoint folder (expected a folder with config.json, "
            "e.g. a local copy of the model repository)"
        )
    return path


def load_hf_checkpoint(path: Path, key: str, what: str, processor_name: str, model_name: str, device: torch.device,
                       **model_kwargs):
    """(folder, processor, eval-mode model on `device`) from a local transformers checkpoint folder,
    offline: `processor_name` / `model_name` are transformers classes, imported after
    `offline_environment`.

    `key` is the config key and `what` the model's name in the WeightsError raised for a path that
    is not such a folder or that the two classes cannot load; `model_kwargs` go to the model's
    ``from_pretrained`` (e.g. ``dtype``)."""
    offline_environment()  # before transformers reads its environment
    import transformers

    processor_cls, model_cls = getattr(transformers, processor_name), getattr(transformers, model_name)
    path = hf_checkpoint_folder(path, key)
    try:
        processor = processor_cls.from_pretrained(str(path), local_files_only=True)
        model = model_cls.from_pretrained(str(path), local_files_only=True, **model_kwargs)
    except _LOAD_ERRORS as exc:
        raise WeightsError(f"{key}: {path} is not a usable {what} checkpoint ({exc})") from None
    return path, processor, model.to(device).eval()


def _batched(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --------------------------------------------------------------------------- vocabulary (MLLM)


@dataclass
class VocabularyAnswer:
    description: str  # raw turn-1 text
    answer: str  # raw turn-2 text
    categories: list[str]  # parsed, normalised, capped C_i'


class LlavaVocabulary:
    """LLaVA-NeXT two-turn chain of thought → object categories per image (batched)."""

    def __init__(self, path: Path, cfg: VocabularyConfig, device: torch.device, dtype: torch.dtype,
                 batch_size: int = 2):
        self.cfg, self.device, self.dtype, self.batch_size = cfg, device, dtype, batch_size
        path, self.processor, self.model = load_hf_checkpoint(
            path, "weights.llava", "LLaVA-NeXT", "LlavaNextProcessor", "LlavaNextForConditionalGeneration", device,
            dtype=dtype,
        )
        if cfg.chat_template:
            self.processor.chat_template = cfg.chat_template
        if not getattr(self.processor, "chat_template", None):
            raise WeightsError(
                f"weights.llava: {path} has no chat template (chat_template.json/.jinja); "
                "add one there or set vocabulary.chat_template in the config"
            )
        tok = self.processor.tokenizer
        tok.padding_side = "left"  # batched generation continues every prompt from its last token
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
        self.pad_token_id = tok.pad_token_id

    def _generate(self, conversations: list[list[dict]], images: list[Image.Image], max_new_tokens: int) -> list[str]:
        texts = [self.processor.apply_chat_template(c, add_generation_prompt=True) for c in conversations]
        inputs = self.processor(images=images, text=texts, padding=True, return_tensors="pt").to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=self.pad_token_id
            )
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        return [t.strip() for t in self.processor.batch_decode(new_tokens, skip_special_tokens=True)]

    def describe_and_list(self, images: list[np.ndarray]) -> list[VocabularyAnswer]:
        """Turn 1 asks for a careful description; turn 2, with that description as the assistant's
        previous turn, asks for the categories: the chain of thought of the paper's Fig. 3."""
        answers: list[VocabularyAnswer] = []
        for batch in _batched(list(images), self.batch_size):
            pil = [Image.fromarray(np.asarray(im, dtype=np.uint8)) for im in batch]
            ask = {"type": "text", "text": self.cfg.describe_prompt}
            turn1 = [{"role": "user", "content": [{"type": "image"}, ask]}]
            descriptions = self._generate([turn1] * len(pil), pil, self.cfg.max_new_tokens_describe)
            turn2 = [
                turn1
                + [
                    {"role": "assistant", "content": [{"type": "text", "text": d}]},
                    {"role": "user", "content": [{"type": "text", "text": self.cfg.list_prompt}]},
                ]
                for d in descriptions
            ]
            lists = self._generate(turn2, pil, self.cfg.max_new_tokens_list)
            for d, a in zip(descriptions, lists, strict=True):
                cats = parse_object_list(a, self.cfg.max_categories, self.cfg.max_words)
                if not cats:
                    log.info("MLLM answer has no usable categories (frame gets no entities): %r", a[:200])
                answers.append(VocabularyAnswer(d, a, cats))
        return answers


# --------------------------------------------------------------------------- grounding (boxes)


@dataclass
class Detections:
    """Boxes of one image: boxes (N, 4) xyxy pixels, scores (N,), categories (N,) vocabulary indices."""

    boxes: np.ndarray
    scores: np.ndarray
    categories: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def concat(cls, parts: list[Detections]) -> Detections:
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.boxes for p in parts]).astype(np.float32),
            np.concatenate([p.scores for p in parts]).astype(np.float32),
            np.concatenate([p.categories for p in parts]).astype(np.int64),
        )


def token_categories(tokenizer, categories: list[str]) -> tuple[str, list[int], np.ndarray]:
    """The GroundingDINO prompt of `categories`, its token ids, and per token the index of the
    category whose characters it covers (-1: [CLS], [SEP], '.', padding).

    Uses the tokenizer's character offsets rather than decoding phrases back from tokens, so a
    category split into several word pieces, or repeated as part of another, maps exactly."""
    prompt = grounding_prompt(categories)
    enc = tokenizer(prompt, return_offsets_mapping=True, add_special_tokens=True)
    spans, pos = [], 0
    for c in categories:
        c = c.strip().lower()
        start = prompt.index(c, pos)
        spans.append((start, start + len(c)))
        pos = start + len(c)
    cats = np.full(len(enc["input_ids"]), -1, dtype=np.int64)
    for t, (s, e) in enumerate(enc["offset_mapping"]):
        if e <= s:
            continue
        for k, (cs, ce) in enumerate(spans):
            if s >= cs and e <= ce:
                cats[t] = k
                break
    return prompt, list(enc["input_ids"]), cats


def detections_from_outputs(
    logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    token_cats: np.ndarray,
    image_size: tuple[int, int],
    box_threshold: float,
    text_threshold: float,
) -> Detections:
    """GroundingDINO outputs of one image → boxes with a category each.

    logits (Q, T) token logits (T ≥ len(token_cats)), pred_boxes (Q, 4) normalised (cx, cy, w, h),
    image_size (H, W). A query is kept when its box score (max token probability, GroundingDINO's
    own confidence) exceeds `box_threshold`; it is assigned the category with the highest token
    probability, which must exceed `text_threshold`. Categories index the prompt's list."""
    n_tok = len(token_cats)
    probs = torch.sigmoid(logits[:, :n_tok].float())
    if probs.numel() == 0:
        return Detections.empty()
    box_scores = probs.max(dim=1).values
    n_cat = int(token_cats.max()) + 1 if n_tok and token_cats.max() >= 0 else 0
    if n_cat == 0:
        return Detections.empty()
    cat_scores = torch.zeros((probs.shape[0], n_cat))
    tc = torch.as_tensor(token_cats)
    for k in range(n_cat):
        cols = (tc == k).nonzero(as_tuple=True)[0]
        if len(cols):
            cat_scores[:, k] = probs[:, cols].max(dim=1).values
    best_score, best_cat = cat_scores.max(dim=1)
    keep = (box_scores > box_threshold) & (best_score > text_threshold)
    h, w = image_size
    cx, cy, bw, bh = pred_boxes[keep].float().unbind(-1)
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=-1)
    boxes = boxes * torch.tensor([w, h, w, h], dtype=torch.float32)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    ok = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
    return Detections(
        boxes[ok].numpy().astype(np.float32),
        box_scores[keep][ok].numpy().astype(np.float32),
        best_cat[keep][ok].numpy().astype(np.int64),
    )


def suppress(det: Detections, iou: float, max_boxes: int) -> Detections:
    """Per-category non-maximum suppression (GroundingDINO returns near-duplicate queries) and the
    `max_boxes` highest-scoring boxes, sorted by score."""
    import torchvision

    if len(det) == 0:
        return det
    boxes, scores = torch.as_tensor(det.boxes), torch.as_tensor(det.scores)
    if iou < 1.0:
        keep = torchvision.ops.batched_nms(boxes, scores, torch.as_tensor(det.categories), iou).numpy()
    else:
        keep = np.argsort(-det.scores, kind="stable")
    keep = keep[:max_boxes]
    return Detections(det.boxes[keep], det.scores[keep], det.categories[keep])


class GroundingDinoDetector:
    """GroundingDINO boxes for per-image category lists, images (and prompt chunks) batched."""

    def __init__(self, path: Path, cfg: GroundingConfig, device: torch.device, dtype: torch.dtype,
                 batch_size: int = 2):
        self.cfg, self.device, self.dtype, self.batch_size = cfg, device, dtype, batch_size
        _, self.processor, self.model = load_hf_checkpoint(
            path, "weights.grounding_dino", "GroundingDINO", "AutoProcessor", "GroundingDinoForObjectDetection", device
        )
        self.tokenizer = self.processor.tokenizer
        self.max_text_len = int(self.model.config.max_text_len)

    def _chunks(self, categories: list[str]) -> list[tuple[int, list[str]]]:
        """Split a long list into prompts that fit max_text_len tokens ([CLS] + … + [SEP]); each
        chunk is a contiguous run of the list, returned with the index of its first category."""
        budget = self.max_text_len - 2
        chunks: list[tuple[int, list[str]]] = []
        start, current, used = 0, [], 0
        for i, c in enumerate(categories):
            n = len(self.tokenizer(f"{c}. ", add_special_tokens=False)["input_ids"])
            if n > budget:
                log.warning("category %r is longer than GroundingDINO's %d-token prompt; skipped", c, budget)
            if current and (n > budget or used + n > budget):
                chunks.append((start, current))
                current, used = [], 0
            if n > budget:
                continue
            if not current:
                start = i
            current.append(c)
            used += n
        if current:
            chunks.append((start, current))
        return chunks

    def detect(self, images: list[np.ndarray], vocabularies: list[list[str]]) -> list[Detections]:
        items = [(i, start, chunk) for i, vocab in enumerate(vocabularies) for start, chunk in self._chunks(vocab)]
        parts: list[list[Detections]] = [[] for _ in images]
        for batch in _batched(items, self.batch_size):
            pil = [Image.fromarray(np.asarray(images[i], dtype=np.uint8)) for i, _, _ in batch]
            prepared = [token_categories(self.tokenizer, chunk) for _, _, chunk in batch]
            enc = self.processor(
                images=pil, text=[p for p, _, _ in prepared], padding="longest", return_tensors="pt"
            ).to(self.device)
            with torch.inference_mode(), _autocast(self.device, self.dtype):
                out = self.model(**enc)
            for b, ((i, start, _), (_, ids, cats)) in enumerate(zip(batch, prepared, strict=True)):
                got = enc["input_ids"][b, : len(ids)].tolist()
                if got != ids[: self.max_text_len]:
                    raise RuntimeError("GroundingDINO processor tokenised the prompt differently from its tokenizer")
                h, w = np.asarray(images[i]).shape[:2]
                det = detections_from_outputs(
                    out.logits[b].float().cpu(), out.pred_boxes[b].float().cpu(), cats[: self.max_text_len],
                    (h, w), self.cfg.box_threshold, self.cfg.text_threshold,
                )
                det.categories = det.categories + start
                parts[i].append(det)
        return [suppress(Detections.concat(p), self.cfg.nms_iou, self.cfg.max_boxes) for p in parts]


# --------------------------------------------------------------------------- segmentation (SAM)

_SAM_COMMON = {
    "image_size": 1024, "vit_patch_size": 16, "window_size": 14, "prompt_embed_dim": 256, "decoder_depth": 2,
    "decoder_mlp_dim": 2048, "decoder_num_heads": 8, "iou_head_depth": 3, "iou_head_hidden_dim": 256,
    "mask_in_chans": 16,
}
SAM_ARCHITECTURES: dict[str, dict] = {
    # segment_anything.build_sam's three published models.
    "vit_h": {**_SAM_COMMON, "encoder_embed_dim": 1280, "encoder_depth": 32, "encoder_num_heads": 16,
              "encoder_global_attn_indexes": [7, 15, 23, 31]},
    "vit_l": {**_SAM_COMMON, "encoder_embed_dim": 1024, "encoder_depth": 24, "encoder_num_heads": 16,
              "encoder_global_attn_indexes": [5, 11, 17, 23]},
    "vit_b": {**_SAM_COMMON, "encoder_embed_dim": 768, "encoder_depth": 12, "encoder_num_heads": 12,
              "encoder_global_attn_indexes": [2, 5, 8, 11]},
    # Random-weight tests and CPU demos: same modules, tiny sizes.
    "tiny": {"image_size": 64, "vit_patch_size": 16, "window_size": 2, "prompt_embed_dim": 32, "decoder_depth": 1,
             "decoder_mlp_dim": 64, "decoder_num_heads": 2, "iou_head_depth": 2, "iou_head_hidden_dim": 32,
             "mask_in_chans": 4, "encoder_embed_dim": 32, "encoder_depth": 2, "encoder_num_heads": 2,
             "encoder_global_attn_indexes": [1]},
}


def sam_architecture(model_type: str, overrides: dict | None = None) -> dict:
    if model_type not in SAM_ARCHITECTURES:
        raise WeightsError(
            f"segmentation.sam_model_type: {model_type!r} is not one of {sorted(SAM_ARCHITECTURES)}"
        )
    arch = dict(SAM_ARCHITECTURES[model_type])
    unknown = set(overrides or {}) - set(arch)
    if unknown:
        raise WeightsError(f"segmentation.sam_architecture: unknown key(s) {sorted(unknown)}; known: {sorted(arch)}")
    arch.update(overrides or {})
    return arch


def build_sam(arch: dict):
    """A SAM model with random weights for an architecture dict (segment_anything's _build_sam,
    parametrised, and without its plain torch.load: weights are loaded by the caller)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    emb = arch["image_size"] // arch["vit_patch_size"]
    dim = arch["prompt_embed_dim"]
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=arch["encoder_depth"], embed_dim=arch["encoder_embed_dim"], img_size=arch["image_size"],
            mlp_ratio=4, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=arch["encoder_num_heads"],
            patch_size=arch["vit_patch_size"], qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=list(arch["encoder_global_attn_indexes"]), window_size=arch["window_size"],
            out_chans=dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim, image_embedding_size=(emb, emb), input_image_size=(arch["image_size"],) * 2,
            mask_in_chans=arch["mask_in_chans"],
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=arch["decoder_depth"], embedding_dim=dim, mlp_dim=arch["decoder_mlp_dim"],
                num_heads=arch["decoder_num_heads"],
            ),
            transformer_dim=dim, iou_head_depth=arch["iou_head_depth"], iou_head_hidden_dim=arch["iou_head_hidden_dim"],
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


class SamSegmenter:
    """SAM masks for box prompts: one image embedding per image, its boxes decoded in batches."""

    def __init__(self, path: Path, cfg: SegmentationConfig, device: torch.device, dtype: torch.dtype):
        offline_environment()  # before transformers reads its environment
        from segment_anything import SamPredictor

        self.cfg, self.device, self.dtype = cfg, device, dtype
        arch = sam_architecture(cfg.sam_model_type, cfg.sam_architecture)
        if not path.is_file():
            raise WeightsError(f"weights.sam: {path} is not a file (expected a SAM .pth state dict)")
        model = build_sam(arch)
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
            if isinstance(state, dict) and isinstance(state.get("model"), dict):
                state = state["model"]
            model.load_state_dict(state)
        except _LOAD_ERRORS as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsError(
                f"weights.sam: {path} is not a SAM {cfg.sam_model_type} checkpoint ({first[:300]}); "
                "check segmentation.sam_model_type"
            ) from None
        self.model = model.to(device).eval()
        self.predictor = SamPredictor(self.model)

    def segment(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(N, H, W) bool masks for N xyxy pixel boxes on an (H, W, 3) uint8 RGB image."""
        image = np.ascontiguousarray(image, dtype=np.uint8)
        h, w = image.shape[:2]
        if len(boxes) == 0:
            return np.zeros((0, h, w), dtype=bool)
        out = []
        with torch.inference_mode(), _autocast(self.device, self.dtype):
            self.predictor.set_image(image, image_format="RGB")
            try:
                for chunk in _batched(list(range(len(boxes))), self.cfg.box_batch):
                    tb = torch.as_tensor(np.asarray(boxes)[chunk], dtype=torch.float32, device=self.device)
                    tb = self.predictor.transform.apply_boxes_torch(tb, (h, w))
                    masks, _, _ = self.predictor.predict_torch(
                        point_coords=None, point_labels=None, boxes=tb, multimask_output=False
                    )
                    out.append(masks[:, 0].cpu().numpy())
            finally:
                self.predictor.reset_image()
        return np.concatenate(out).astype(bool)
