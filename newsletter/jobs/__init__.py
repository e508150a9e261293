"""The old RQ job paths (``newsletter.jobs.send_batch`` ...), kept for one release.

Jobs already waiting in Redis name their function by this dotted path; new jobs name the
function's new home. Remove this shim one release after the move, once no queue can hold an
old job. (A package, not ``jobs.py``, so that git follows the old module to campaigns/jobs.py.)
"""

from newsletter.campaigns.jobs import send_batch, tick
from newsletter.subscribers.jobs import deliver_transactional, sweep_outbox

__all__ = ["deliver_transactional", "send_batch", "sweep_outbox", "tick"]
