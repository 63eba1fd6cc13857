"""Networks: classifier architectures (:mod:`.registry`), the meta model (:mod:`.meta_model`) and the inversion
generator (:mod:`.generator`)."""

from .meta_model import build_meta_model
from .registry import ARCHITECTURES, build_classifier

__all__ = ["ARCHITECTURES", "build_classifier", "build_meta_model"]
