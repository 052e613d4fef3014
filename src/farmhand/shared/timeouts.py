"""How long the servers wait for a client that stops sending, unless told otherwise.

Here, not in `farmhand.manager.connections` where the timeout is enforced: the
commands' options show it as their default, and every `farmhand` command imports them,
so reading it must not load a web server.
"""

from __future__ import annotations

CLIENT_TIMEOUT = 60.0
"""Seconds a request's head may take to arrive, and the longest its body may stop
arriving, before a `408` (`--client-timeout` of `farmhand node` and `farmhand
orchestrator`; the manager's own default, `ManagerSettings.client_timeout`, is the same)."""
