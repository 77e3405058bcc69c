# -*- test-case-name: tests.test_arbiter,tests.test_pool -*-
"""
The process model: a master that owns the listening sockets (L{arbiter}) and worker
processes that adopt them (L{worker}), as gunicorn's arbiter with Twisted alone.
"""
