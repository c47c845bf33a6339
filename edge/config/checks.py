"""Validation rules that more than one config section applies."""

from __future__ import annotations

from pydantic import ValidationInfo


def cap_not_below_initial(value: float, info: ValidationInfo) -> float:
    """reconnect_max_s must not be below reconnect_initial_s: the backoff would shrink."""
    initial = info.data.get("reconnect_initial_s")
    if initial is not None and value < initial:
        raise ValueError(f"must be >= reconnect_initial_s ({initial})")
    return value


def topic_usable(topic: str) -> str:
    """An MQTT topic prefix: wildcards or empty levels would make topics unpublishable."""
    if "+" in topic or "#" in topic or "\0" in topic:
        raise ValueError("must not contain MQTT wildcards (+, #) or NUL")
    if topic.startswith("/") or topic.endswith("/") or "//" in topic:
        raise ValueError("must not start or end with '/' or contain empty levels ('//')")
    return topic
