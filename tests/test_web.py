"""hotplumb.web over real HTTP and WebSocket on 127.0.0.1: routes, protocol, security checks."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("starlette", reason="hotplumb.web needs the web extra")
httpx = pytest.importorskip("httpx", reason="the web tests need httpx (the dev extra)")
websockets = pytest.importorskip("websockets", reason="the web tests need websockets")

from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402

import hotplumb as hp  # noqa: E402
import hotplumb.web  # noqa: E402
from hotplumb.testing import wait_until  # noqa: E402
from tests.webtools import receive_json, serving, sse_events  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Hashable


def factory(k: Hashable) -> hp.Node | None:
    """``{"double": x}`` doubles ``{"feed": x}``; ``{"chain": n}`` reads ``{"chain": n - 1}``."""
    match k:
        case {"double": str(x)}:
            return hp.Node(lambda v: 2 * v, inputs=[hp.key(feed=x)])
        case {"feed": str()}:
            return hp.Node()
        case {"chain": int(n)} if n > 0:
            return hp.Node(inputs=[hp.key(chain=n - 1)])
        case {"chain": 0}:
            return hp.Node()
    return None


def graph() -> hp.Graph:
    return hp.Graph({"numbers": hp.Node()}, factory, max_nodes=5000)


async def subscribe(url: str, key: Any, **options: Any) -> Any:
    ws = await connect(f"ws://{url}/api/subscribe", **options)
    await ws.send(json.dumps({"key": key}))
    return ws


async def refusal(ws: Any) -> tuple[str, int]:
    """The error message and close code of a refused subscription."""
    message = await receive_json(ws)
    assert message["type"] == "error", message
    with pytest.raises(ConnectionClosed) as closed:
        await receive_json(ws)
    assert closed.value.rcvd is not None
    return message["error"], closed.value.rcvd.code


async def test_the_page_snapshot_and_scripts_are_served() -> None:
    async with (
        hp.run(graph()) as topo,
        serving(hotplumb.web.app(topo)) as url,
        httpx.AsyncClient(base_url=f"http://{url}", timeout=5) as client,
    ):
        page = await client.get("/")
        assert page.status_code == 200
        assert "<title>hotplumb</title>" in page.text
        script = await client.get("/static/app.js")
        assert script.status_code == 200
        snapshot = (await client.get("/api/snapshot")).json()
        expected = json.loads(json.dumps(topo.snapshot().to_dict()))
        assert {**snapshot, "time": None} == {**expected, "time": None}
        assert snapshot["live"] is True


async def test_a_graph_is_run_for_the_applications_lifetime() -> None:
    web_app = hotplumb.web.app(hp.Graph({"n": hp.Node(), "out": hp.sink(print, inputs=["n"])}))
    async with serving(web_app) as url:
        assert web_app.topology.graph.has_node("out")
        async with httpx.AsyncClient(base_url=f"http://{url}", timeout=5) as client:
            snapshot = (await client.get("/api/snapshot")).json()
        assert [n["key"] for n in snapshot["nodes"]] == ["n", "out"]
    with pytest.raises(RuntimeError, match="not started"):
        _ = web_app.topology


async def test_a_websocket_subscriber_gets_one_message_per_datum() -> None:
    async with hp.run(graph()) as topo, serving(hotplumb.web.app(topo)) as url:
        ws = await subscribe(url, {"double": "a"})
        assert await receive_json(ws) == {"type": "subscribed", "key": "double=a"}
        await topo.inject(hp.key(feed="a"), 21)
        message = await receive_json(ws)
        assert message == {
            "type": "datum",
            "key": "double=a",
            "value": 42,
            "origin": 21,
            "path": ["feed=a", "double=a"],
        }
        # values JSON cannot hold come in the documented fallback form
        ws2 = await subscribe(url, "numbers")
        assert (await receive_json(ws2))["type"] == "subscribed"
        await topo.inject("numbers", {1, 2})
        await topo.inject("numbers", float("nan"))
        first, second = await receive_json(ws2), await receive_json(ws2)
        assert first["value"] == {"$type": "set", "$repr": "{1, 2}"}
        assert second["value"] == {"$type": "float", "$repr": "nan"}
        await ws.close()
        await ws2.close()
        # leaving removed what only those subscribers needed
        await wait_until(lambda: len(topo.graph) == 0)


async def test_the_event_stream_sends_state_and_changes() -> None:
    async with (
        hp.run(graph()) as topo,
        serving(hotplumb.web.app(topo, interval=0.02)) as url,
        httpx.AsyncClient(base_url=f"http://{url}", timeout=5) as client,
        client.stream("GET", "/api/events") as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.aiter_lines())
        async with asyncio.timeout(10):
            event, state = await anext(events)
            assert event == "state"
            assert state["snapshot"]["nodes"] == []
            await topo.update(lambda g: g.add_node("out", hp.sink(print, inputs=["numbers"])))
            event, data = await anext(events)
            while event != "change":
                event, data = await anext(events)
            assert data["added"] == ["numbers", "out"]
            assert data["generation"] == topo.generation
            event, state = await anext(events)
            while event != "state":
                event, state = await anext(events)
            assert {n["key"] for n in state["snapshot"]["nodes"]} == {"numbers", "out"}


async def test_the_topology_is_snapshotted_only_while_an_event_stream_is_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    snapshots = 0
    take = hp.Topology.snapshot

    def counted(self: hp.Topology) -> hp.Snapshot:
        nonlocal snapshots
        snapshots += 1
        return take(self)

    monkeypatch.setattr(hp.Topology, "snapshot", counted)
    application = hotplumb.web.app(graph(), interval=0.01)
    async with (
        serving(application) as url,
        httpx.AsyncClient(base_url=f"http://{url}", timeout=5) as client,
    ):
        hub = application.hub
        topo = application.topology
        rounds = hub.rounds
        await wait_until(lambda: hub.rounds >= rounds + 3)
        assert snapshots == 0
        # a change while nobody watches is still in the stream's history
        await topo.update(lambda g: g.add_node("out", hp.sink(print, inputs=["numbers"])))
        async with client.stream("GET", "/api/events") as response:
            events = sse_events(response.aiter_lines())
            async with asyncio.timeout(10):
                event, data = await anext(events)
                assert event == "change"
                assert data["added"] == ["numbers", "out"]
                event, state = await anext(events)
                assert event == "state"
                assert {n["key"] for n in state["snapshot"]["nodes"]} == {"numbers", "out"}
                assert snapshots >= 1
        await wait_until(lambda: hub.watchers == 0)
        taken = snapshots
        rounds = hub.rounds
        await wait_until(lambda: hub.rounds >= rounds + 3)
        assert snapshots == taken


# -- security ----------------------------------------------------------------------


async def test_with_a_token_every_request_needs_it() -> None:
    async with hp.run(graph()) as topo, serving(hotplumb.web.app(topo, token="s3cret")) as url:
        async with httpx.AsyncClient(base_url=f"http://{url}", timeout=5) as client:
            for path in ("/", "/api/snapshot", "/static/app.js", "/api/events"):
                refused = await client.get(path)
                assert refused.status_code == 401, path
                assert "token" in refused.text
                assert (await client.get(path, params={"token": "wrong"})).status_code == 401
            headers = {"Authorization": "Bearer s3cret"}
            assert (await client.get("/api/snapshot", headers=headers)).status_code == 200
            page = await client.get("/", params={"token": "s3cret"})
            assert page.status_code == 200
            assert "app.js?token=s3cret" in page.text  # the page's own requests carry it
        with pytest.raises(InvalidStatus) as caught:
            await subscribe(url, "numbers")
        assert caught.value.response.status_code == 403
        ws = await subscribe(url, "numbers", additional_headers=headers)
        assert (await receive_json(ws))["type"] == "subscribed"
        await ws.close()
        ws = await connect(f"ws://{url}/api/subscribe?token=s3cret")
        await ws.close()


async def test_only_loopback_host_names_are_served_without_a_token() -> None:
    async with (
        hp.run(graph()) as topo,
        serving(hotplumb.web.app(topo)) as url,
        httpx.AsyncClient(base_url=f"http://{url}", timeout=5) as client,
    ):
        rebound = await client.get("/api/snapshot", headers={"Host": "evil.example:80"})
        assert rebound.status_code == 421
        ok = await client.get("/api/snapshot", headers={"Host": "localhost:8000"})
        assert ok.status_code == 200


async def test_websockets_from_another_origin_are_refused() -> None:
    async with hp.run(graph()) as topo, serving(hotplumb.web.app(topo)) as url:
        with pytest.raises(InvalidStatus) as caught:
            await subscribe(url, "numbers", origin="http://evil.example")
        assert caught.value.response.status_code == 403
        ws = await subscribe(url, "numbers", origin=f"http://{url}")  # the page's own origin
        assert (await receive_json(ws))["type"] == "subscribed"
        await ws.close()
    web_app = hotplumb.web.app(graph(), allowed_origins={"http://dash.example"})
    async with serving(web_app) as url:
        ws = await subscribe(url, "numbers", origin="http://dash.example")
        assert (await receive_json(ws))["type"] == "subscribed"
        await ws.close()


async def test_subscriptions_per_connection_are_capped() -> None:
    async with (
        hp.run(graph()) as topo,
        serving(hotplumb.web.app(topo, max_subscriptions=2)) as url,
    ):
        ws = await subscribe(url, {"double": "a"})
        assert (await receive_json(ws))["type"] == "subscribed"
        await ws.send(json.dumps({"key": {"double": "b"}}))
        assert (await receive_json(ws))["type"] == "subscribed"
        await ws.send(json.dumps({"key": {"double": "c"}}))
        text, code = await refusal(ws)
        assert "at most 2 subscriptions" in text
        assert code == 1008
        await wait_until(lambda: len(topo.graph) == 0)  # its two subscriptions left with it


async def test_messages_are_size_capped() -> None:
    async with (
        hp.run(graph()) as topo,
        serving(hotplumb.web.app(topo, max_message_bytes=256)) as url,
    ):
        ws = await subscribe(url, "x" * 300)
        text, code = await refusal(ws)
        assert "more than the 256 allowed" in text
        assert code == 1009
        ws = await subscribe(url, "x" * 10_000)  # far past it: the protocol drops it
        with pytest.raises(ConnectionClosed) as closed:
            await receive_json(ws)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009
        assert topo.generation == 0


async def test_client_keys_can_create_only_so_many_nodes() -> None:
    async with (
        hp.run(graph()) as topo,
        serving(hotplumb.web.app(topo, max_new_nodes=10)) as url,
    ):
        ws = await subscribe(url, {"chain": 50})
        text, code = await refusal(ws)
        assert "51 new nodes" in text
        assert code == 1008
        ws = await subscribe(url, {"chain": 10_000})  # past the graph's own max_nodes=5000
        text, _ = await refusal(ws)
        assert "max_nodes=5000" in text
        assert topo.generation == 0  # the refused keys changed nothing
        ws = await subscribe(url, {"chain": 5})
        assert (await receive_json(ws))["type"] == "subscribed"
        assert len(topo.graph) == 7
        await ws.close()


async def test_refused_and_unresolvable_keys_get_a_clear_error() -> None:
    def only_strings(data: Any) -> Hashable:
        if not isinstance(data, str):
            raise ValueError("keys here are strings")
        return data

    async with hp.run(graph()) as topo, serving(hotplumb.web.app(topo)) as url:
        cases = {
            "null": (None, "not null"),
            "unresolvable": ({"nothing": 1}, "no node for key nothing=1"),
            "bool": (True, "a boolean"),
        }
        for key, expected in cases.values():
            text, code = await refusal(await subscribe(url, key))
            assert expected in text
            assert code == 1008
        ws = await connect(f"ws://{url}/api/subscribe")
        await ws.send("not json")
        text, _ = await refusal(ws)
        assert "expected one JSON object" in text
        assert topo.generation == 0
    async with (
        hp.run(graph()) as topo,
        serving(hotplumb.web.app(topo, parse_key=only_strings)) as url,
    ):
        text, _ = await refusal(await subscribe(url, ["a", "list"]))
        assert "keys here are strings" in text


async def test_a_flood_of_bad_keys_leaves_the_topology_running_and_others_served() -> None:
    async with (
        hp.run(graph()) as topo,
        serving(hotplumb.web.app(topo)) as url,
    ):
        good = await subscribe(url, {"double": "a"})
        assert (await receive_json(good))["type"] == "subscribed"
        generation = topo.generation
        bad_keys: list[Any] = [None, {"nothing": 1}, "missing", [1, [2, {}]], {"chain": -1}]

        async def attacker(i: int) -> None:
            ws = await subscribe(url, bad_keys[i % len(bad_keys)])
            text, _ = await refusal(ws)
            assert text

        async def feed() -> list[int]:
            got = []
            for i in range(50):
                await topo.inject(hp.key(feed="a"), i)
                got.append((await receive_json(good, timeout=10))["origin"])
            return got

        async with asyncio.timeout(60):
            results = await asyncio.gather(feed(), *(attacker(i) for i in range(100)))
        assert results[0] == list(range(50))
        assert topo.generation == generation  # no bad key changed anything
        assert not topo.closing
        await good.close()


def test_serving_beyond_loopback_needs_a_token_or_an_explicit_yes() -> None:
    hotplumb.web.check_bind("127.0.0.1", token=False)
    hotplumb.web.check_bind("::1", token=False)
    hotplumb.web.check_bind("localhost", token=False)
    with pytest.raises(ValueError, match=r"refusing to serve on 0\.0\.0\.0 without a token"):
        hotplumb.web.check_bind("0.0.0.0", token=False)
    hotplumb.web.check_bind("0.0.0.0", token=True)
    hotplumb.web.check_bind("0.0.0.0", token=False, allow_remote_without_token=True)


def test_default_parse_key() -> None:
    parse = hotplumb.web.default_parse_key
    assert parse({"subscription": "a", "w": [1, 2]}) == hp.key(subscription="a", w=(1, 2))
    assert parse("source/foo") == "source/foo"
    assert parse(["a", 1]) == ("a", 1)
    assert parse(7) == 7
    bad: Any
    for bad in (None, True, 1.5, {}, ""):
        with pytest.raises(hotplumb.web.KeyRefused):
            parse(bad)


def test_importing_hotplumb_never_imports_starlette() -> None:
    code = "import sys, hotplumb; assert 'starlette' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_without_the_extra_the_import_error_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['starlette'] = None\n"
        "try:\n    import hotplumb.web\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, timeout=60, capture_output=True, text=True
    )
    assert "pip install 'hotplumb[web]'" in out.stdout
