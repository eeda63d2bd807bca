"""`<work>/latest`: the symlink consumers read, moved atomically and never backwards."""
from __future__ import annotations

from pathlib import Path

from gie import failpoints
from gie.errors import BadInputError
from gie.layout import WorkLayout
from gie.publish import atomic_symlink, is_published


def latest_date(layout: WorkLayout) -> str | None:
    """Date of the bundle `latest` points to, or None when there is no (valid) latest."""
    link = layout.latest
    if not link.is_symlink():
        return None
    target = Path(link.readlink()).name
    return target[3:] if target.startswith("dt=") else None


def publish_latest(layout: WorkLayout, date: str, force: bool = False) -> str | None:
    """Point `latest` at bundle/dt=`date`; return why it was left alone (None when moved).

    A backfill of an older date never moves `latest` backwards.
    """
    if not is_published(layout.bundle(date)):
        raise BadInputError(f"bundle {layout.bundle(date)} is not published (no _SUCCESS)")
    current = latest_date(layout)
    if current and current > date:
        return f"latest points to a newer date ({current})"
    if current == date and not force:
        return "latest already points to this bundle"
    for tmp in layout.work.glob(f".{layout.latest.name}.tmp-*"):   # a publish killed midway
        tmp.unlink()
    failpoints.reached("publish-before-switch")
    atomic_symlink(layout.latest, Path("bundle") / f"dt={date}")    # relative: movable folder
    failpoints.reached("publish-after-switch")
    return None
