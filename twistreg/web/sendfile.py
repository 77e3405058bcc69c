# -*- test-case-name: tests.test_sendfile -*-
"""
Layer bytes from a local file to the client's socket by the kernel (C{os.sendfile}): no
copy through Python, which is what sets nginx's speed.

Only for a plain TCP or UNIX connection (TLS encrypts in user space). While the file is sent,
this module is the connection's producer instead of the HTTP channel: the connection asks it
for more each time the socket can take bytes, so a slow client costs nothing but a file
descriptor, and the channel gets its place back when the body is sent.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from twisted.internet import defer
from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IPullProducer, ISSLTransport
from twisted.protocols.policies import ProtocolWrapper
from twisted.web.iweb import IRequest
from zope.interface import implementer

# Bytes per call: large enough that the calls cost nothing, small enough that one fast client
# does not hold the reactor for long.
_CHUNK = 4 * 1024 * 1024


def kernel_socket(request: IRequest) -> FileDescriptor | None:
    """
    The connection of C{request} when the kernel can send a file to it, else None; under the
    wrappers that count connections (a worker's, L{twistreg.server.drain}).
    """
    transport = getattr(request.channel, "transport", None)
    while isinstance(transport, ProtocolWrapper):
        transport = transport.transport
    if (not hasattr(os, "sendfile") or not isinstance(transport, FileDescriptor)
            or ISSLTransport.providedBy(transport) or transport.disconnecting):
        return None
    return transport


@implementer(IPullProducer)
class _FileSender:
    """Sends C{length} bytes of C{file} from C{offset}, as the socket takes them."""

    def __init__(self, request: IRequest, transport: FileDescriptor, file: BinaryIO,
                 offset: int, length: int) -> None:
        self._request = request
        self._transport = transport
        self._file = file
        self._offset = offset
        self._remaining = length
        self._channel = None
        self._headers_flushed = False
        self.done: defer.Deferred[None] = defer.Deferred(lambda _: self.stopProducing())

    def start(self) -> None:
        # The headers go out first, through the connection's own buffer.
        self._request.write(b"")
        self._channel = self._transport.producer
        self._transport.unregisterProducer()
        self._transport.registerProducer(self, False)

    def resumeProducing(self) -> None:
        """The socket's buffer is empty: the first time, only the headers were in it."""
        if not self._headers_flushed:
            self._headers_flushed = True
            self._transport.startWriting()
            return
        try:
            while self._remaining:
                sent = os.sendfile(self._transport.fileno(), self._file.fileno(), self._offset,
                                   min(self._remaining, _CHUNK))
                if sent == 0:
                    self._finish(OSError("the file shrank while being sent"))
                    return
                self._offset += sent
                self._remaining -= sent
                self._request.sentLength += sent
        except BlockingIOError:
            # The socket is full: the connection calls again once it can write.
            self._transport.startWriting()
            return
        except OSError as error:
            self._finish(error)
            return
        self._finish(None)

    def stopProducing(self) -> None:
        """The connection was lost, or the caller cancelled."""
        self._finish(defer.CancelledError())

    def _finish(self, error: Exception | None) -> None:
        if self.done.called:
            return
        self._file.close()
        if self._transport.producer is self:
            self._transport.unregisterProducer()
            if self._channel is not None and not self._transport.disconnected:
                self._transport.registerProducer(self._channel, True)
        if error is None:
            self.done.callback(None)
        else:
            self.done.errback(error)


def send_file(request: IRequest, transport: FileDescriptor, file: BinaryIO, offset: int,
              length: int) -> defer.Deferred[None]:
    """
    Send the headers of C{request}, then C{length} bytes of C{file} from C{offset} with
    C{os.sendfile}; the file is closed at the end. The Deferred fails when the client goes
    away (L{defer.CancelledError}) or the file cannot be read.
    """
    sender = _FileSender(request, transport, file, offset, length)
    sender.start()
    return sender.done
