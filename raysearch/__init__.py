"""raysearch: hierarchy-aware adversarial fine-tuning of CLIP, searched with Ray Tune and Optuna."""

__version__ = "0.1.0"
