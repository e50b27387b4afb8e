"""The options of `flaxsent serve` past the model: where it listens, its limits, its identity.

Light on purpose (no web framework): the command line takes its defaults from here to build its
parser, whether or not the `serve` extra is installed.
"""

from __future__ import annotations

import dataclasses

from flaxsent.errors import FlaxsentError

HOST = "127.0.0.1"  # this machine only
PORT = 8080


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """The server's limits and identity (the `flaxsent serve` options past the model)."""

    model_id: str = "model"
    max_wait_ms: float = 2.0
    max_client_batch_size: int = 32
    max_concurrent_requests: int = 512
    payload_limit: int = 2_000_000
    body_timeout_s: float = 30.0
    api_key: str | None = None
    tokenization_workers: int = 2

    def __post_init__(self) -> None:
        if not 0 <= self.max_wait_ms <= 10_000:
            raise FlaxsentError(f"--max-wait-ms {self.max_wait_ms}: must be from 0 to 10000")
        if not 0 < self.body_timeout_s <= 3600:
            raise FlaxsentError(f"--body-timeout-s {self.body_timeout_s}: must be over 0 and at "
                                "most 3600")
        for flag, value in (("--max-client-batch-size", self.max_client_batch_size),
                            ("--max-concurrent-requests", self.max_concurrent_requests),
                            ("--payload-limit", self.payload_limit),
                            ("--tokenization-workers", self.tokenization_workers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise FlaxsentError(f"{flag} {value!r}: must be a positive integer")
        if self.api_key is not None and not self.api_key.strip():
            raise FlaxsentError("--api-key: an empty key; leave it out to serve without one")
