"""fleetkit._resource.AsyncResource: ``async with`` closes the object once, however the block ends."""

from __future__ import annotations

import pytest

from fleetkit._resource import AsyncResource


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class _Counted(AsyncResource):
    def __init__(self) -> None:
        self.closes = 0

    async def aclose(self) -> None:
        self.closes += 1


@pytest.mark.anyio
async def test_async_with_yields_the_object_and_closes_it() -> None:
    """Entering gives the object itself and leaving calls aclose() once."""
    resource = _Counted()
    async with resource as entered:
        assert entered is resource
        assert resource.closes == 0
    assert resource.closes == 1


@pytest.mark.anyio
async def test_an_error_in_the_block_closes_and_propagates() -> None:
    """An exception leaving the block still closes the object and is not swallowed."""
    resource = _Counted()
    with pytest.raises(LookupError):
        async with resource:
            raise LookupError("boom")
    assert resource.closes == 1


def test_a_subclass_without_aclose_cannot_be_made() -> None:
    """aclose() is abstract: a subclass that leaves it out is refused at construction."""

    class _Incomplete(AsyncResource):
        pass

    with pytest.raises(TypeError, match="aclose"):
        _Incomplete()  # type: ignore[abstract]
