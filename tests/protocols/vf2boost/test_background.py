"""discard(): a failing role's background futures are cancelled or marked retrieved."""

import asyncio
import gc

from hefl.protocols.vf2boost.background import discard


async def test_pending_futures_are_cancelled_and_finished_errors_retrieved():
    loop = asyncio.get_running_loop()
    reported = []
    loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx["message"]))
    pending = loop.create_future()
    failed = loop.create_future()
    failed.set_exception(RuntimeError("warm-up failed"))
    done = loop.create_future()
    done.set_result(1)
    discard([pending, failed, done, None])
    assert pending.cancelled()
    assert done.result() == 1
    del failed
    gc.collect()
    assert reported == []  # no "exception was never retrieved" for the discarded failure


async def test_without_discard_the_error_would_be_reported():
    # the check above can fail: an unretrieved failed future is reported when collected
    loop = asyncio.get_running_loop()
    reported = []
    loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx["message"]))
    failed = loop.create_future()
    failed.set_exception(RuntimeError("warm-up failed"))
    del failed
    gc.collect()
    assert any("never retrieved" in m for m in reported)
