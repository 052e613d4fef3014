"""An API token's name is one line of text (`FreeText`), as a job's name."""

from __future__ import annotations

import pytest

from tests.integration.conftest import Farm


@pytest.mark.parametrize("name", ["ci\x00bot", "ci\nbot", "\x1b[31mci"])
def test_a_token_name_with_a_control_character_is_400(farm: Farm, name: str) -> None:
    answer = farm.client.post("/api/tokens", headers=farm.admin, json={"name": name})
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"].startswith("name: ")
    assert "control character" in answer.json()["detail"]
    names = [t["name"] for t in farm.client.get("/api/tokens", headers=farm.admin).json()]
    assert name not in names


def test_a_token_name_in_any_script_is_taken(farm: Farm) -> None:
    answer = farm.client.post("/api/tokens", headers=farm.admin, json={"name": "Render · café"})
    assert answer.status_code == 201, answer.text
