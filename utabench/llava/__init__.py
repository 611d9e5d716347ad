"""Frozen-encoder LLaVA: any registered backbone as the vision tower of transformers' `LlavaForConditionalGeneration`,
two-stage training in the original LLaVA's data and checkpoint formats, and LLaVA-Bench with a pluggable judge."""
