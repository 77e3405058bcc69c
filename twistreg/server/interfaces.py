# -*- test-case-name: tests.test_arbiter -*-
"""The seams of the process pool: how workers are launched, and what a worker serves."""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IWorkerLauncher(Interface):
    """Starts worker processes; the arbiter never spawns them itself."""

    control_fd = Attribute("The descriptor number of the control pipe in the workers.")

    def launch(protocol, spec):
        """
        Start one worker.

        @param protocol: the L{twisted.internet.interfaces.IProcessProtocol} that receives
            its control lines and its end.
        @param spec: the L{twistreg.server.protocol.WorkerSpec}, without the descriptor
            layout, which the launcher adds.
        @return: the L{twisted.internet.interfaces.IProcessTransport} of the new process.
        """


class IWorkerApplication(Interface):
    """What a worker serves: built in the worker, from the options the master passed on."""

    site = Attribute(
        "The twisted.web Site to serve. Its requestFactory must be a Request class: the "
        "worker subclasses it to count requests and to close connections while draining."
    )

    def reopen_logs():
        """Reopen the log files the application writes (on SIGUSR1)."""
