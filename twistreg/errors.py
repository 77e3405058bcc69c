"""The one exception the registry's rules raise, rendered by the web layer."""

from __future__ import annotations


class RegistryError(Exception):
    """
    A request failed with an HTTP status and the contract's exact message.

    @param status: the HTTP status code.
    @param message: the text of the C{{"error": ...}} body.
    @param headers: extra response headers (for instance C{WWW-Authenticate}).
    """

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
