"""Pure helpers of the SCIM hook: pacing, filter escaping, Retry-After parsing, refusing bad origins."""

from __future__ import annotations

import pytest

from entra_provisioning.hooks.scim import (
    DatabricksScimHook,
    Pacer,
    ScimError,
    escape_filter_value,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_pacer_spaces_slots_evenly_and_hold_off_pushes_everyone_back(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    slept: list[float] = []
    monkeypatch.setattr("entra_provisioning.hooks.scim.time.sleep", slept.append)
    pacer = Pacer(4.0, clock=clock)
    for _ in range(4):
        pacer.wait()
    assert slept == [0.25, 0.5, 0.75]
    pacer.hold_off(10.0)
    pacer.wait()
    assert slept[-1] == pytest.approx(10.0)


def test_filter_values_are_escaped() -> None:
    assert escape_filter_value('a"b@x.com') == 'a\\"b@x.com'
    assert escape_filter_value("back\\slash") == "back\\\\slash"


@pytest.mark.parametrize(
    "host",
    [
        "http://adb-1.1.azuredatabricks.net",
        "https://adb-1.1.azuredatabricks.net/api",
        "adb-1.1.azuredatabricks.net",
    ],
)
def test_hook_refuses_anything_but_an_https_origin(host: str) -> None:
    with pytest.raises(ScimError, match="https:// origin"):
        DatabricksScimHook(host, "dapi-secret")


def test_repr_never_shows_the_token() -> None:
    hook = DatabricksScimHook("https://adb-1.1.azuredatabricks.net", "dapi-very-secret")
    assert "dapi-very-secret" not in repr(hook)
    assert "adb-1.1.azuredatabricks.net" in repr(hook)


def test_account_api_uses_its_own_path_and_page_size() -> None:
    hook = DatabricksScimHook("https://accounts.azuredatabricks.net", "t", account_id="acc-1")
    assert hook.base_path == "/api/2.0/accounts/acc-1/scim/v2"
    assert hook.page_size == 100
    workspace = DatabricksScimHook("https://adb-1.1.azuredatabricks.net", "t")
    assert workspace.base_path == "/api/2.0/preview/scim/v2"
