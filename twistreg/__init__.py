"""twistreg: a Docker Registry V1 server on Twisted."""

__version__ = "0.1.0"
