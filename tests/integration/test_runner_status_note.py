"""What farmhand shows of a runner's state says what the manager will do with it.

A runner too old for this manager gets no task, yet the web's runners page showed it
plain `idle`: only `farmhand runners` said `(too old: upgrade)`, from a rule of its own.
The runner summary now carries the note (`status_note`), derived once by the manager
(`shared/protocol.status_note`), and both read it.
"""

from __future__ import annotations

from typing import Any

from farmhand.shared.protocol import TOO_OLD_NOTE, WORKER_PROTOCOL
from tests.integration.conftest import Farm, submit_stand_in
from tests.integration.test_claim_next import claim

OLD_WORKER = {"hostname": "old-box", "cores": 8, "blender_versions": ["3.4.1"]}
"""What a worker from before the protocol field sends: its capabilities, no protocol."""


def register(client: Any, token: str, name: str, caps: dict[str, Any] | None) -> dict[str, str]:
    body: dict[str, Any] = {"token": token, "name": name}
    if caps is not None:
        body["capabilities"] = caps
    answer = client.post("/api/runner/register", json=body)
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['secret']}"}


def runners(farm: Farm) -> dict[str, dict[str, Any]]:
    listed = farm.client.get("/api/admin/runners", headers=farm.admin).json()
    return {runner["name"]: runner for runner in listed}


def test_the_runner_summary_says_which_runner_is_too_old(farm: Farm) -> None:
    register(farm.client, farm.runner_token, "old-box", OLD_WORKER)
    register(farm.client, farm.runner_token, "new-box", {**OLD_WORKER, "protocol": WORKER_PROTOCOL})
    # A script (as JiggaBlend's runners register: a token and a name) says nothing of its
    # protocol; it is taken as current, so it gets work (docs/API.md).
    script = register(farm.client, farm.runner_token, "script", None)

    listed = runners(farm)

    assert listed["old-box"]["status"] == "idle"
    assert listed["old-box"]["status_note"] == TOO_OLD_NOTE == "too old: upgrade"
    assert listed["new-box"]["status_note"] is None
    assert listed["script"]["status_note"] is None
    job_id = submit_stand_in(farm.client, farm.admin, frame_start=1, frame_end=1)
    assert claim(farm, script)["job_id"] == job_id

    # The note follows what the runner declares: a heartbeat of an old protocol adds it,
    # an upgrade takes it away.
    old = {"capabilities": {**OLD_WORKER, "protocol": 0}}
    assert farm.client.post("/api/runner/heartbeat", headers=script, json=old).is_success
    assert runners(farm)["script"]["status_note"] == TOO_OLD_NOTE
    new = {"capabilities": {**OLD_WORKER, "protocol": WORKER_PROTOCOL}}
    assert farm.client.post("/api/runner/heartbeat", headers=script, json=new).is_success
    assert runners(farm)["script"]["status_note"] is None


def test_a_scripts_heartbeat_may_have_no_body(farm: Farm) -> None:
    """JiggaBlend's runners keep alive with a bare POST; every field of a heartbeat is
    optional, so its body is too (it was a 400 "body: Field required")."""
    script = register(farm.client, farm.runner_token, "script", None)

    bare = farm.client.post("/api/runner/heartbeat", headers=script)

    assert bare.status_code == 200, bare.text
    assert bare.json() == {"status": "idle", "abort_task_ids": []}
    assert runners(farm)["script"]["status"] == "idle"
    empty_json = farm.client.post("/api/runner/heartbeat", headers=script, json={})
    assert empty_json.json() == bare.json()
    # A body that is there is still checked: a wrong field is refused, not ignored.
    wrong = farm.client.post("/api/runner/heartbeat", headers=script, json={"startin": True})
    assert wrong.status_code == 400
