"""All tables, imported in one place so Alembic and tests see the whole schema."""

from newsletter.models.accounts import Account, Role
from newsletter.models.campaigns import (
    Campaign,
    CampaignEvent,
    CampaignStatus,
    Delivery,
    DeliveryState,
    RewardCode,
    Wave,
    WaveStatus,
)
from newsletter.models.consent import ConsentAction, ConsentEvent
from newsletter.models.customers import Customer
from newsletter.models.feedback import DeliveryEvent, SignalKind
from newsletter.models.outbox import OutboxEmail, OutboxKind
from newsletter.models.partners import Partner, PartnerImport, PartnerInvitation, PartnerSuppression
from newsletter.models.rollups import (
    ConsentDay,
    RollupMark,
    Tally,
    TallyChange,
)
from newsletter.models.store_events import OrderInvitation, StoreEvent
from newsletter.models.subscribers import (
    Frequency,
    PartnerShare,
    SignupRequest,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Topic,
)
from newsletter.models.suppressions import Suppression, SuppressionReason
from newsletter.models.tallies import CampaignHourTally, DeliveryTally

__all__ = [
    "Account",
    "CampaignHourTally",
    "DeliveryTally",
    "Role",
    "Campaign",
    "CampaignEvent",
    "CampaignStatus",
    "Customer",
    "DeliveryEvent",
    "Delivery",
    "DeliveryState",
    "RewardCode",
    "Wave",
    "WaveStatus",
    "Frequency",
    "Partner",
    "PartnerImport",
    "PartnerInvitation",
    "PartnerShare",
    "PartnerSuppression",
    "SignalKind",
    "Suppression",
    "SuppressionReason",
    "SignupRequest",
    "ConsentAction",
    "ConsentEvent",
    "ConsentDay",
    "RollupMark",
    "Tally",
    "TallyChange",
    "OutboxEmail",
    "OutboxKind",
    "OrderInvitation",
    "StoreEvent",
    "Subscriber",
    "SubscriberStatus",
    "Subscription",
    "SubscriptionStatus",
    "Topic",
]
