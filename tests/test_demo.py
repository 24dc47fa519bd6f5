"""``hotplumb demo``: runs the scenario, shows provenance, ends with the verification."""

from __future__ import annotations

import argparse
import asyncio
import io
import socket
import sys
from typing import TYPE_CHECKING

import httpx
import pytest

from hotplumb import _cli, _demo
from hotplumb.examples.feed_rollup import Verification
from hotplumb.testing import FakeClock

if TYPE_CHECKING:
    from pathlib import Path


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    _demo.add_arguments(parser)
    return parser.parse_args(argv)


class Terminal(io.StringIO):
    """Output that says it is a terminal, so the demo draws with rich."""

    def isatty(self) -> bool:
        return True


async def test_the_demo_shows_the_live_changes_and_verifies_them() -> None:
    clock = FakeClock()
    out = io.StringIO()
    status = await clock.drive(_demo.play(parse("--duration", "6"), clock=clock, out=out))
    text = out.getvalue()
    assert status == 0, text
    lines = text.splitlines()
    assert lines[0] == "hotplumb demo: the feed-rollup scenario for 6s (seed 1)"
    assert lines[-1].startswith(
        "verification: ok: 45 summaries checked; none mixed pre- and post-change nodes"
    )
    assert lines[-2].startswith(
        "totals: produced 81 feed events and 15 ticks; delivered 45 summaries;"
    )
    assert "[ 1.62s] client  carol joined: wants {foo}@1000ms" in lines
    assert "[ 3.12s] factory swapped live: rollups now fold count+distinct" in lines
    assert "[ 4.32s] feed    source/baz stopped: nothing reads it any more" in lines
    assert any("garbage-collected baz@500ms, client/bob, source/baz" in x for x in lines)
    assert (
        "[ 1.00s] got     alice ← foo@500ms (0.50, 1.00] count=5 [count, merge v0]  "
        "events source/foo→foo@500ms #6-10  "
        "path timer 500ms→foo@500ms→{bar,foo}@500ms→client/alice"
    ) in lines
    carried = [x for x in lines if "collected before the change" in x]
    assert carried
    assert all("count+distinct" in x for x in carried)


async def test_a_failed_verification_exits_non_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        _demo, "verify", lambda outcome: Verification(1, ("alice #1: mixed versions",))
    )
    clock = FakeClock()
    out = io.StringIO()
    status = await clock.drive(_demo.play(parse("--duration", "2"), clock=clock, out=out))
    assert status == 1
    assert "verification: FAILED with 1 problems\n  alice #1: mixed versions\n" in out.getvalue()


async def test_on_a_terminal_the_demo_draws_with_rich() -> None:
    clock = FakeClock()
    out = Terminal()
    status = await clock.drive(_demo.play(parse("--duration", "3"), clock=clock, out=out))
    text = out.getvalue()
    assert status == 0
    assert "latest summaries, with provenance" in text
    assert "verification: ok" in text
    plain = Terminal()
    status = await clock.drive(_demo.play(parse("--plain"), clock=clock, out=plain))
    assert status == 0
    assert "latest summaries" not in plain.getvalue()


def test_the_command_runs_in_real_time_and_draws_the_topology(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    picture = tmp_path / "topology.dot"
    status = _cli.main(["demo", "--duration", "0.4", "--plain", "--render", str(picture)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "verification: ok" in out
    before = (tmp_path / "topology.before.dot").read_text()
    after = (tmp_path / "topology.after.dot").read_text()
    assert "carol" not in before
    assert "carol" in after
    assert "bob" in before
    assert "bob" not in after


def test_bad_options_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--duration", "0")
    assert "must be positive" in capsys.readouterr().err


async def test_with_web_the_demo_serves_its_snapshot_while_it_runs() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from hotplumb._cli import main; sys.exit(main(sys.argv[1:]))",
        *("demo", "--web", "--port", "0", "--duration", "4", "--plain"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        prefix = "hotplumb demo: the live page is at "
        assert first.startswith(prefix), first
        url = first.removeprefix(prefix).strip()
        async with httpx.AsyncClient(timeout=20) as client:
            response = await client.get(url + "api/snapshot")
        assert response.status_code == 200
        keys = {node["key"] for node in response.json()["nodes"]}
        assert "client/alice" in keys
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert out.decode().splitlines()[-1].startswith(_demo.VERIFIED)


async def test_with_web_a_taken_port_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        status = await _demo.play(parse("--web", "--port", port), out=io.StringIO())
    assert status == 2
    assert "hotplumb demo: error: --web:" in capsys.readouterr().err


def test_a_port_out_of_range_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--web", "--port", "70000")
    assert "a port is 0 to 65535" in capsys.readouterr().err
