"""What clicktune's users call: publish clickstream, release batches, follow results."""

from producer.event_publisher import EventPublisher
from producer.publisher import ClickstreamPublisher, publish_release
from producer.settings import Settings
from producer.subscriber import Subscription, subscribe_model_ready, subscribe_status

__all__ = [
    "ClickstreamPublisher",
    "EventPublisher",
    "Settings",
    "Subscription",
    "publish_release",
    "subscribe_model_ready",
    "subscribe_status",
]
