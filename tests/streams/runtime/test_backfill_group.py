"""The backfill's check that no worker of the group runs: a retriable error in the
DescribeGroups response is asked again, never read as "no members"."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from streams.runtime import backfill as bf

LOAD_IN_PROGRESS, NOT_COORDINATOR, GROUP_AUTHORIZATION_FAILED = 14, 16, 30


class FakeAdmin:
    def __init__(self, *errors: int, members: tuple[Any, ...] = ()) -> None:
        self.errors = list(errors)
        self.members = members
        self.calls = 0

    async def describe_consumer_groups(self, group_ids: list[str]) -> list[Any]:
        self.calls += 1
        error = self.errors.pop(0) if self.errors else 0
        members = () if error else self.members
        return [SimpleNamespace(groups=[(error, group_ids[0], "Stable", "consumer", "range",
                                         list(members))])]


async def test_retriable_group_errors_are_asked_again() -> None:
    admin = FakeAdmin(LOAD_IN_PROGRESS, NOT_COORDINATOR, members=("worker-1",))
    assert await bf._group_members(admin, "app") == ["worker-1"]
    assert admin.calls == 3


async def test_other_group_errors_refuse_the_backfill() -> None:
    admin = FakeAdmin(GROUP_AUTHORIZATION_FAILED)
    with pytest.raises(bf.BackfillError, match="could not tell"):
        await bf._group_members(admin, "app")


async def test_a_retriable_error_past_the_deadline_refuses() -> None:
    admin = FakeAdmin(*[NOT_COORDINATOR] * 1000)
    with pytest.raises(bf.BackfillError, match="NotCoordinator"):
        await bf._group_members(admin, "app", timeout=0.0)
