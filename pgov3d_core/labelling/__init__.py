"""Pixel-wise entities: MLLM vocabulary, grounded masks, CLIP text embeddings, oracle labels.

PGOV3D §3.1 (Fig. 3): for every sampled RGB frame, LLaVA-NeXT first describes the image, then,
with that description in the conversation, lists the object categories C_i' (chain of thought);
GroundingDINO grounds the list to boxes (categories without a box are dropped, leaving C_i); SAM
turns the boxes into masks; overlapping masks are resolved per pixel by box score. The result
per frame is an entity image (uint16, 0 = none, k = labels[k - 1]) plus the id → text table.

Run it::

    python -m pgov3d_core.tools.label_frames --scene-root data/scenes --config config/labelling.yaml [overlay=true]

Outputs (resumable cache, see `entities`): `<scene>/entities/<frame_id>.png` and `.json`
(labels, scores, pixel counts, the raw texts of both MLLM turns, the labeller identity, the
image size). Consumers read them with `read_entities(scene_root, frame_id)`.

Weights (local paths in config/labelling.yaml → `weights:`; nothing is ever downloaded, a
missing path stops with one error line naming the key):

=====================  ======================================================================
weights.llava          folder of the transformers checkpoint llava-hf/llava-v1.6-mistral-7b-hf
                       (config.json, model-*.safetensors, tokenizer files, preprocessor and
                       chat template). ~15 GB in float16; a GPU with 24 GB is comfortable.
weights.grounding_dino folder of IDEA-Research/grounding-dino-base (or grounding-dino-tiny)
weights.sam            the official SAM ViT-H file sam_vit_h_4b8939.pth
                       (segmentation.sam_model_type: vit_h; vit_l / vit_b files work too)
weights.text_encoder   an open_clip checkpoint file of CLIP ViT-B/32 or ViT-L/14 (e.g. the
                       open_clip_pytorch_model.bin of laion/CLIP-ViT-B-32-laion2B-s34B-b79K);
                       text_encoder.model names its architecture (ViT-B-32 / ViT-L-14)
=====================  ======================================================================

On a GPU the models run in float16 (LLaVA-NeXT weights in float16, GroundingDINO and SAM under
autocast) and LLaVA-NeXT and GroundingDINO are batched over frames (`batch_size`); SAM encodes one
image at a time and decodes all its boxes in batches. On CPU everything runs in float32.

Without these weights the oracle labeller (`labeller=oracle`) writes the same entity files from
a scene's ground-truth label images and class names (synthetic scenes, the base-annotated
protocol), optionally naming each object MLLM-style with a seeded synonym per frame
(`oracle.naming: synonyms`, see `synonyms`); the text side still has real language meaning through
the bundled sentence encoder (`text_encoder`, backend `sentence`). Tests and the
benchmark use tiny random-weight checkpoints built locally (`tiny`) through the same loaders.

Modules: `parsing` (answer → categories), `models` (LLaVA-NeXT, GroundingDINO, SAM wrappers),
`entities` (merge, cache files, reader, overlay), `labellers` (models / oracle), `pipeline`
(`label_scenes`), `config`, `tiny`, `text_encoder` + `sentence_model`, `synonyms`.
"""
