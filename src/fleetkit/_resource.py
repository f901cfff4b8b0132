"""A base for objects that close themselves at the end of an ``async with``."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self

__all__ = ["AsyncResource"]


class AsyncResource(abc.ABC):
    """``async with`` on top of an abstract :meth:`aclose`, as anyio's
    ``AsyncResource`` offers; this one imports no event loop library, so any
    module may use it.

    Only for classes whose ``__aenter__`` does nothing but return the object;
    one that starts work on entry writes its own pair.
    """

    __slots__ = ()

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the resource."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
