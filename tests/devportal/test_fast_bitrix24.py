"""fast-bitrix24, a real client, unmodified, against the devportal with the default limits on."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from fast_bitrix24 import Bitrix


def test_get_all_10000_contacts_and_2000_updates_through_batch(devportal, app_peer):
    # The sync client runs on the thread's event loop: run it in a thread of its own (the main
    # thread may hold another library's running loop, e.g. Playwright's) and close its loop after.
    def run():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            _read_and_write(devportal, app_peer)
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(run).result()


def _read_and_write(devportal, app_peer):
    logging.getLogger("fast_bitrix24").setLevel(logging.WARNING)
    portal = devportal.portal
    portal.set_clock(datetime(2025, 6, 2, 10, 0, tzinfo=ZoneInfo("Europe/Moscow")))
    portal.seed(departments=3, managers=12, contacts=10_000, companies=10, months_of_calls=0, deals=0)
    answer = portal.install_app(app_peer.url, "local.test.1", "secret-1")

    async def token_func():
        return answer["access_token"]

    bx = Bitrix(f"{devportal.url}/rest/", token_func=token_func, verbose=False, requests_per_second=2.0,
                request_pool_size=50)
    contacts = bx.get_all("crm.contact.list", {"select": ["ID", "NAME", "PHONE"]})
    assert len(contacts) == 10_000
    assert {c["ID"] for c in contacts} == {str(i) for i in range(1, 10_001)}
    assert all(c["PHONE"] for c in contacts[:100])

    updated = 0
    with bx.slow(1):
        for chunk_start in range(1, 2001, 50):
            cmd = {f"c{i}": f"crm.contact.update?id={i}&fields[COMMENTS]=checked%20{i}"
                   for i in range(chunk_start, chunk_start + 50)}
            result = bx.call("batch", {"halt": 0, "cmd": cmd}, raw=True)["result"]
            assert result["result_error"] == []
            updated += sum(1 for v in result["result"].values() if v is True)
    assert updated == 2000
    assert portal.records["contact"][2000]["COMMENTS"] == "checked 2000"
    assert portal.records["contact"][2001]["COMMENTS"] is None
    assert not [c for c in portal.calls if c["status"] == 503]
