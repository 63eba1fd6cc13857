"""The black-box boundary: APIs answer batches of images and count every image sent."""

from .base import APIReplyError, BlackBoxAPI, QueryLedger
from .inprocess import InProcessAPI, WhiteBoxAPI, open_pool

__all__ = ["APIReplyError", "BlackBoxAPI", "QueryLedger", "InProcessAPI", "WhiteBoxAPI", "open_pool"]
