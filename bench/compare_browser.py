"""The browser's cookie against an API token, two checkouts side by side (decision 049):

    python -m bench.compare_browser OTHER_CHECKOUT [--rounds 200]

A bench stack of each checkout runs at once (bench/compare.py explains why); each logs in
a browser through the login page (its session cookie and CSRF token) and takes a token.
Each round takes, from both stacks in alternating order, the median of five
`GET /api/models` with the cookie and five with the token, and one session created with
each (`POST /api/sessions`, the cookie's with its CSRF token). Figures are p50 (p90) in ms,
from the request's first byte to its answer's last (bench/http_client.py).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.compare import ROOT, alternate, report, start_side, stop_sides
from bench.harness import PASSWORD, ms
from bench.http_client import LeanHttp
from chat_client import ChatClient

FIGURES = ("GET, cookie", "GET, token", "create, cookie", "create, token")


@dataclass
class Side:
    name: str
    base_url: str
    cookie: LeanHttp | None = None
    token: LeanHttp | None = None
    samples: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in FIGURES})


async def open_side(side: Side) -> None:
    async with httpx.AsyncClient(base_url=side.base_url, follow_redirects=True) as browser:
        await browser.get("/login/")  # sets the csrftoken cookie
        csrf = browser.cookies["csrftoken"]
        form = {"username": "bench", "password": PASSWORD, "csrfmiddlewaretoken": csrf}
        await browser.post("/login/", data=form)
        cookie = f"sessionid={browser.cookies['sessionid']}; csrftoken={csrf}"
    side.cookie = LeanHttp(side.base_url, {"Cookie": cookie, "X-CSRFToken": csrf})
    client = await ChatClient.login(side.base_url, "bench", PASSWORD)
    try:
        side.token = LeanHttp(side.base_url, {"Authorization": f"Token {client.token}"})
    finally:
        await client.aclose()


async def one_round(side: Side) -> None:
    assert side.cookie is not None and side.token is not None
    for name, http in (("cookie", side.cookie), ("token", side.token)):
        gets = [ms((await http.request("GET", "/api/models"))[0]) for _ in range(5)]
        side.samples[f"GET, {name}"].append(statistics.median(gets))
        elapsed, _ = await http.request("POST", "/api/sessions", {"title": "browser"})
        side.samples[f"create, {name}"].append(ms(elapsed))


async def compare(sides: list[Side], rounds: int) -> None:
    for side in sides:
        await open_side(side)
    try:
        await alternate(sides, one_round, rounds, FIGURES, warm_up=5)
    finally:
        for side in sides:
            for http in (side.cookie, side.token):
                if http is not None:
                    await http.aclose()
    report(sides, rounds, FIGURES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("other", type=Path, help="the checkout to compare this one with")
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args(argv)
    processes = [start_side("this", ROOT), start_side("other", args.other.resolve(), sys.executable)]
    try:
        asyncio.run(compare([Side(p.name, p.base_url) for p in processes], args.rounds))
    finally:
        stop_sides(processes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
