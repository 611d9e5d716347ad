"""What every trainer in utabench shares: the training loop with its checkpoints and exact resume (`trainer.py`),
the deterministic step-indexed data order (`sampler.py`), optimiser parameter groups (`optim.py`), learning-rate
schedules (`schedule.py`), the optimiser section of a configuration (`config.py`), the fingerprint that keys a run
by what its trained weights depend on (`fingerprint.py`), the RNG state a checkpoint carries (`rng.py`) and the setup
a finished training stage records about how it ran (`setup.py`).

Pretraining (`utabench.pretrain`), ImageNet fine-tuning (`utabench.finetune`) and LLaVA's stages (`utabench.llava`)
train with it; the dense tasks, whose loop mmengine owns, record their setup with `setup.py`. It imports `core` only.
"""
