"""Pixel-wise entities: MLLM vocabulary, grounded masks, CLIP text embeddings, oracle labels."""
