"""The black-box boundary: APIs answer batches of images and count every image sent."""

from .answers import MODES, AnswerSettings, make_answer
from .backends import BACKENDS, open_apis
from .base import APIReplyError, BlackBoxAPI, BudgetExhausted, QueryLedger
from .http import APIAccessError, HTTPAPI, RetryPolicy, open_http_pool
from .inprocess import InProcessAPI, WhiteBoxAPI, open_pool

__all__ = ["APIReplyError", "BlackBoxAPI", "QueryLedger", "InProcessAPI", "WhiteBoxAPI", "open_pool", "MODES",
           "AnswerSettings", "make_answer", "APIAccessError", "HTTPAPI", "RetryPolicy", "open_http_pool",
           "BACKENDS", "open_apis", "BudgetExhausted"]
