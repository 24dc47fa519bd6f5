"""Run the feed-rollup scenario headless and print what each client received.

Clients subscribe to simulated feeds; a factory makes one rollup per feed and
window; clients join and leave and the factory is swapped while data flows.
Each summary is printed with its provenance: the feed events that went into
it and the path they took. The run ends with the verification that no
summary mixed pre- and post-change nodes.

Run it with ``python examples/feed_rollup.py [SECONDS]`` (3 by default), or
``hotplumb demo`` for the live view.
"""

from __future__ import annotations

import asyncio
import sys

from hotplumb.examples.feed_rollup import FeedRollup, describe_key, verify


async def main(duration: float) -> int:
    outcome = await FeedRollup(seed=1, duration=duration).run()
    for note in outcome.notes:
        print(f"{note.at:5.2f}s  {note.text}")
    for client, data in outcome.received.items():
        print(f"\n{client} received {len(data)} summaries:")
        for datum in data:
            summary = datum.value.summary
            print(
                f"  {describe_key(datum.path[1])} ({summary.start:.2f}, {summary.end:.2f}] "
                f"[{summary.fold}] count={summary.count}"
            )
            for parent in datum.parents:
                event = parent.value
                path = " -> ".join(describe_key(k) for k in parent.path)
                print(
                    f"      {event.feed} #{event.seq} at {event.at:.2f}s {event.word!r} via {path}"
                )
    verification = verify(outcome)
    print(f"\n{outcome.totals}")
    print(f"{verification.checked} summaries checked, problems: {list(verification.violations)}")
    return 0 if verification.ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 3.0)))
