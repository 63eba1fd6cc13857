"""The ``query`` section (what an API answers and how it is asked) and the HTTP client's settings."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

import annotated_types as at
from pydantic import field_validator

from ..core.schema import Field, PosFloat, PosInt, Section

Answer = Literal["probs", "topk", "label", "rounded"]


class QueryParams(Section):
    """What an API answers and how it is asked (`invert`, `distill`)."""

    answer: Answer = Field(description="what an API returns: probs | topk | label (hard labels) | rounded")
    topk: PosInt = Field(description="answer topk: classes per answer (below `ways`; the rest of the mass spread "
                                     "evenly)")
    decimals: Annotated[int, at.Ge(0), at.Le(12)] = Field(description="answer rounded: decimals per probability")
    label_smoothing: Annotated[float, at.Ge(0), at.Lt(1)] = Field(
        description="answer label: target (1 - eps) * one-hot + eps / N, on the client side")
    chunk: PosInt = Field(description="images per API call")


class HTTPParams(Section):
    url: str = Field(description="the `dfml serve` server, http(s)://host[:port]; the token is read from "
                                 "$DFML_API_TOKEN")
    timeout: PosFloat = Field(description="seconds per request")
    retries: Annotated[int, at.Ge(0), at.Le(20)] = Field(
        description="extra attempts on timeouts, connection errors, 429 and 5xx")

    @field_validator("url")
    @classmethod
    def _url(cls, v):
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL with a host (e.g. http://127.0.0.1:8000), "
                             f"got {v!r}")
        try:
            parts.port
        except ValueError:
            raise ValueError(f"has a port that is not a number from 0 to 65535: {v!r}") from None
        return v
