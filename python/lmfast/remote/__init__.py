"""A client for a running ``lmfast serve``: the SDK's API over HTTP (``lms.Client("host:port")``).
Needs httpx (``pip install 'lmfast[remote]'``), imported only when such a client is made."""
from __future__ import annotations

ENV_HOST = "LMFAST_API_HOST"  # the default client's server, as LM Studio's SDK takes a host


def is_remote(api_host: str | None) -> bool:
    """Whether an api_host names a server (anything but None, "" and "in-process")."""
    return bool(api_host) and api_host != "in-process"
