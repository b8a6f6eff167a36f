"""How often to fetch a feed: the distributed mode's per-feed interval.

As Miniflux's `entry_frequency` scheduler: a feed that published N items in the last week is
fetched every week/N, within `workers.min_fetch_interval` and `workers.max_fetch_interval` (a
silent feed at the maximum). Never more often than the feed's own <ttl> or the server's
Retry-After asks; a failing feed backs off, doubling from the minimum with each failure.
"""

from __future__ import annotations

import datetime as dt

from pipeline.models import WorkerSettings

WEEK = dt.timedelta(days=7)


def fetch_interval(settings: WorkerSettings, items_last_week: int, *, failures: int = 0,
                   ttl_minutes: int | None = None, retry_after: float | None = None) -> dt.timedelta:
    """The wait before a feed's next fetch."""
    shortest = dt.timedelta(minutes=settings.min_fetch_interval)
    longest = dt.timedelta(minutes=settings.max_fetch_interval)
    if failures:
        wanted = shortest * (1 << min(failures, 20))
    elif items_last_week:
        wanted = WEEK / items_last_week
    else:
        wanted = longest
    interval = min(max(wanted, shortest), longest)
    if ttl_minutes:
        interval = max(interval, dt.timedelta(minutes=ttl_minutes))
    if retry_after:
        interval = max(interval, dt.timedelta(seconds=retry_after))
    return interval
