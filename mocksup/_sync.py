"""Running a coroutine to completion from sync code, with or without a running event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ("run_sync",)

_T = TypeVar("_T")


def run_sync(make: Callable[[], Awaitable[_T]]) -> _T:
    """Run the awaitable that ``make()`` returns to completion, from sync code.

    With no running event loop it uses ``asyncio.run``; inside one (pytest-asyncio,
    ``IsolatedAsyncioTestCase``) it runs a fresh loop in a helper thread, since the caller's
    loop is busy running the caller. Children never depend on the loop that started them.
    """

    async def main() -> _T:
        return await make()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mocksup-start") as helper:
        return helper.submit(asyncio.run, main()).result()
