"""How long the servers wait for a client that stops sending, unless told otherwise,
and how long the manager may wait for its database before it answers.

Here, not in `farmhand.manager.connections` or `farmhand.manager.db.engine` where they
are enforced: the commands' options show them as their default and the client's timeout
is measured against them, and every `farmhand` command imports them, so reading them
must not load a web server or a database driver.
"""

from __future__ import annotations

CLIENT_TIMEOUT = 60.0
"""Seconds a request's head may take to arrive, and the longest its body may stop
arriving, before a `408` (`--client-timeout` of `farmhand node` and `farmhand
orchestrator`; the manager's own default, `ManagerSettings.client_timeout`, is the same)."""

DATABASE_BUSY_TIMEOUT = 60.0
"""Seconds a manager's write waits for a SQLite database another process holds locked
before the request is answered `503` with `Retry-After` (`db/engine.make_engine`). A
client must wait for an answer longer than this (`client.DEFAULT_TIMEOUT`): a request
it gave up on sooner may still be carried out once the lock is released, and the user
was told the manager could not be reached when it was only waiting."""
