"""Networks: classifier architectures (registry) and the inversion generator."""

from .registry import ARCHITECTURES, build_classifier

__all__ = ["ARCHITECTURES", "build_classifier"]
