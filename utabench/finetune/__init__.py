"""ImageNet fine-tuning of any registered image backbone with the FT-CLIP recipe ("CLIP Itself is a Strong
Fine-tuner"): the classifier, its data and the recipe the shared trainer runs."""
