"""cmil-bench: CMIL and its imitation-learning baselines under one harness."""

__version__ = "0.1.0"
