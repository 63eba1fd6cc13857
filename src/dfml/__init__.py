"""Black-box data-free meta-learning: learn a few-shot learner from classifier APIs.

Implements BiDf-MKD (Hu et al., "Learning to Learn from APIs: Black-Box Data-Free
Meta-Learning", ICML 2023, arXiv 2305.18413) and its reference baselines as a DVC
pipeline. See README.md.
"""

__version__ = "0.1.0"
