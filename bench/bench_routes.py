"""Provenance routes kept by a long-running topology whose readers come and go.

A topology ``in -> f -> keep`` runs for good; N clients each join (a sink
reading ``f``), receive three items and leave. Afterwards the script counts
the live :class:`hotplumb.Route` objects (after ``gc.collect()``). A node
that interned a route for every reader it ever fed would keep one per client.

    python bench/bench_routes.py                 # 100, 1,000 and 5,000 clients
    python bench/bench_routes.py --clients 20000

To compare with another revision, run it with ``PYTHONPATH`` at that
revision's ``src/`` (``git archive REV src | tar -x -C DIR``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc

import hotplumb as hp


async def routes_after(clients: int) -> int:
    graph = hp.Graph(
        {
            "in": hp.Node(),
            "f": hp.Node(lambda x: x + 1, inputs=["in"]),
            "keep": hp.sink(lambda d: None, inputs=["f"]),
        }
    )
    async with hp.run(graph) as topo:
        for i in range(clients):
            name = f"client/{i}"
            await topo.apply(topo.graph.add_node(name, hp.sink(lambda d: None, inputs=["f"])))
            await topo.inject_many("in", range(3))
            await topo.drain()
            await topo.apply(topo.graph.remove_node(name))
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, hp.Route))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="*", default=[100, 1_000, 5_000])
    args = parser.parse_args()
    print(f"hotplumb from {hp.__file__}")
    print("| clients | live Route objects |")
    print("| ---: | ---: |")
    for n in args.clients:
        print(f"| {n:,} | {asyncio.run(routes_after(n)):,} |")


if __name__ == "__main__":
    main()
