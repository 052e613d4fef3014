"""A job whose Blender range rules out every Blender that can open its file is refused.

A .blend opens in the Blender that saved it and newer ones only. A file saved by 5.0
submitted with `blender_version: "<4"` used to be accepted and then wait forever
("waiting: the job needs Blender 5.0 or newer in Blender <4"): no worker added later
could ever take it. The submission (and a later replacement of the main file) now says
why with a 400; a file an in-range Blender can open is still accepted.
"""

from __future__ import annotations

from sqlalchemy import update

from farmhand.manager.db.models import Job
from tests.integration.conftest import FAKE_BLEND, Farm, inputs, post_stand_in, upload_input
from tests.integration.test_blender_progress import BLEND_50, FRAMES, detail, runner
from tests.integration.test_wait_reasons import listed


def job_ids(farm: Farm) -> list[int]:
    return [j["id"] for j in farm.client.get("/api/jobs", headers=farm.admin).json()]


def test_a_50_file_with_a_range_below_50_is_refused_and_says_why(farm: Farm) -> None:
    before = job_ids(farm)
    answer = post_stand_in(farm.client, farm.admin, blend=BLEND_50, blender_version="<4", **FRAMES)
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"] == (
        "'scene.blend' was saved by Blender 5.0, which a Blender in the range <4 cannot "
        "open (a .blend opens only in the Blender that saved it or a newer one): allow "
        "Blender 5.0 or newer in the job's Blender range"
    )
    refused = post_stand_in(
        farm.client, farm.admin, blend=BLEND_50, blender_version=">=4.2,<5", **FRAMES
    )
    assert refused.status_code == 400, refused.text
    assert "saved by Blender 5.0" in refused.json()["detail"]
    assert job_ids(farm) == before, "no job was stored"


def test_a_range_no_blender_is_in_is_refused_as_such_not_blamed_on_the_file(
    farm: Farm,
) -> None:
    """`>=5,<5` with a 3.4 file used to say 'allow Blender 3.4 or newer', which the range
    already did: it holds no Blender at all, and the answer says that."""
    before = job_ids(farm)
    for spec in (">=5,<5", "<4,>5"):
        for blend in (FAKE_BLEND, BLEND_50):
            answer = post_stand_in(
                farm.client, farm.admin, blend=blend, blender_version=spec, **FRAMES
            )
            assert answer.status_code == 400, (spec, answer.text)
            assert f"the Blender range {spec!r} allows no version" in answer.text, answer.text
            assert "saved by Blender" not in answer.text
    assert job_ids(farm) == before, "no job was stored"


def test_a_range_a_newer_or_the_saving_blender_is_in_is_accepted(farm: Farm) -> None:
    # A 3.4 file opens in any newer Blender; a 5.0 file in 5.0.x; "!=5.0" leaves 5.1 on.
    for blend, spec in [
        (FAKE_BLEND, "<4"),
        (FAKE_BLEND, ">=4.2,<5"),
        (BLEND_50, "<5.1"),
        (BLEND_50, "<=5.0"),
        (BLEND_50, "!=5.0"),
    ]:
        answer = post_stand_in(farm.client, farm.admin, blend=blend, blender_version=spec, **FRAMES)
        assert answer.status_code == 202, (spec, answer.text)


def test_a_replacement_main_file_no_blender_in_the_range_opens_is_refused(farm: Farm) -> None:
    answer = post_stand_in(farm.client, farm.admin, blender_version="<4", **FRAMES)
    assert answer.status_code == 202, answer.text
    job_id = int(answer.json()["id"])
    before = inputs(farm, job_id)

    replaced = upload_input(farm, job_id, "scene.blend", BLEND_50)
    assert replaced.status_code == 400, replaced.text
    assert "'scene.blend' was saved by Blender 5.0" in replaced.json()["detail"]
    assert inputs(farm, job_id) == before, "the job keeps its .blend"
    assert detail(farm, job_id).blender_saved == "3.4"


def test_a_job_stored_before_the_check_says_no_blender_in_its_range_opens_it(
    farm: Farm,
) -> None:
    """A job accepted before submissions were checked waits with a reason that says the
    range is the problem, not a Blender to add."""
    answer = post_stand_in(farm.client, farm.admin, blender_version="<4", **FRAMES)
    job_id = int(answer.json()["id"])
    with farm.client.app.state.farm.db.transaction() as session:  # type: ignore[attr-defined]
        session.execute(update(Job).where(Job.id == job_id).values(blender_saved="5.0"))
    runner(farm, "w34", ["3.4.1"])
    runner(farm, "w50", ["5.0.1"])
    said = (
        "waiting: the job's file was saved by Blender 5.0, which a Blender in the range <4 "
        "cannot open (a .blend opens only in the Blender that saved it or a newer one): "
        "allow Blender 5.0 or newer in the job's Blender range; "
        "the online workers have 3.4.1, 5.0.1"
    )
    assert detail(farm, job_id).status_reason == said
    assert listed(farm, job_id) == said


def test_a_waiting_reason_names_the_files_blender_only_when_the_range_does_not(
    farm: Farm,
) -> None:
    runner(farm, "w50", ["5.0.1"])
    narrow = post_stand_in(farm.client, farm.admin, blender_version="<4.4", **FRAMES)
    implied = post_stand_in(farm.client, farm.admin, blender_version=">=4.2,<5", **FRAMES)
    narrow_id, implied_id = int(narrow.json()["id"]), int(implied.json()["id"])
    with farm.client.app.state.farm.db.transaction() as session:  # type: ignore[attr-defined]
        session.execute(update(Job).where(Job.id == narrow_id).values(blender_saved="4.2"))
    assert detail(farm, narrow_id).status_reason == (
        "waiting: the job needs Blender 4.2 or newer in the range <4.4; "
        "the online workers have 5.0.1"
    )
    assert detail(farm, implied_id).status_reason == (
        "waiting: the job needs a Blender in the range >=4.2,<5; the online workers have 5.0.1"
    )
