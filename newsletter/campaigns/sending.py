"""The old home of the sending engine, kept importable for one release: import from the new modules.

The engine is split by concept (docs/sending.md): waves.py (audience, starting a wave),
ledger.py (ready rows, claims, the per-message statements), decisions.py (caps, quiet hours),
batches.py (the batch loop), errors.py (retries, failures, the auto-pause), rate.py (SEND_RATE),
recovery.py (dead workers, deadlines, due campaigns) and state.py (the campaign state machine).
No RQ job names this module (jobs name ``newsletter.campaigns.jobs`` or ``newsletter.jobs``);
remove it one release after the split.
"""

from newsletter.campaigns.batches import HEARTBEAT_SECONDS, personal_values, send_batch, skeletons_for
from newsletter.campaigns.decisions import decide
from newsletter.campaigns.errors import HARD_BOUNCES, on_bad_message, on_error
from newsletter.campaigns.ledger import (
    BatchReport,
    Ledger,
    Recipient,
    batch_ranges,
    claim,
    counts,
    load_recipients,
    mark,
    ready,
    release,
)
from newsletter.campaigns.rate import RateLimiter
from newsletter.campaigns.recovery import due_campaigns, recover_stale_claims, skip_past_deadline
from newsletter.campaigns.state import ACTIVE_CAMPAIGN, finish_if_done
from newsletter.campaigns.waves import audience_columns, due_waves, eligible_subscribers, start_wave

__all__ = [
    "ACTIVE_CAMPAIGN",
    "HARD_BOUNCES",
    "HEARTBEAT_SECONDS",
    "BatchReport",
    "Ledger",
    "RateLimiter",
    "Recipient",
    "audience_columns",
    "batch_ranges",
    "claim",
    "counts",
    "decide",
    "due_campaigns",
    "due_waves",
    "eligible_subscribers",
    "finish_if_done",
    "load_recipients",
    "mark",
    "on_bad_message",
    "on_error",
    "personal_values",
    "ready",
    "recover_stale_claims",
    "release",
    "send_batch",
    "skeletons_for",
    "skip_past_deadline",
    "start_wave",
]
