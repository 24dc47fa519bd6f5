"""Runnable examples shipped with hotplumb.

* :mod:`hotplumb.examples.feed_rollup`: the feed-rollup service, hotplumb's
  motivating example; ``hotplumb demo`` runs it live.
"""
