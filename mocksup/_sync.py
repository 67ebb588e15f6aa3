"""Running a coroutine to completion from sync code, with or without a running event loop."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ("run_sync",)

#: pytest leaves this module's frames out of a failing test's traceback: the message
#: says what went wrong, and the user's own line is what to look at.
__tracebackhide__ = True

_T = TypeVar("_T")


def run_sync(make: Callable[[], Awaitable[_T]]) -> _T:
    """Run the awaitable that ``make()`` returns to completion, from sync code.

    With no running event loop it uses ``asyncio.run``; inside one (pytest-asyncio,
    ``IsolatedAsyncioTestCase``) it runs a fresh loop in a helper thread, since the caller's
    loop is busy running the caller. Children never depend on the loop that started them.
    """
    # Imported here: every child imports this module (through base), and needs neither.
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    async def main() -> _T:
        return await make()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        running = False
    else:
        running = True
    # Outside the ``except`` above, so a failure does not carry "no running event loop"
    # as its context.
    try:
        if not running:
            return asyncio.run(main())
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mocksup-start") as helper:
            return helper.submit(asyncio.run, main()).result()
    except Exception as error:
        raise _without_machinery(error)  # noqa: B904 (the same error, not a new one)


def _without_machinery(error: Exception) -> Exception:
    """``error`` with the frames of asyncio and the thread pool left out of its traceback:
    they say nothing about what failed, and a test's report would show a page of them."""
    import asyncio
    import concurrent.futures

    machinery = (os.path.dirname(asyncio.__file__), os.path.dirname(concurrent.futures.__file__))
    kept = []
    entry = error.__traceback__
    while entry is not None:
        if not entry.tb_frame.f_code.co_filename.startswith(machinery):
            kept.append(entry)
        entry = entry.tb_next
    for first, then in zip(kept, [*kept[1:], None], strict=True):
        first.tb_next = then
    return error.with_traceback(kept[0] if kept else None)
