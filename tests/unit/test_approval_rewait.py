"""After a reminder, a waiting task waits for the *same* review: it never asks again, which
would open (and announce) a second review if the first was decided in between."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from airflow.exceptions import TaskDeferred

from airflow_hoop.sensors.approval import HoopApprovalSensor
from airflow_hoop.triggers.review import REMIND, ReviewTrigger
from airflow_hoop.wire.reviews import Review


def _review() -> Review:
    return Review(
        id=str(uuid.uuid4()),
        session=str(uuid.uuid4()),
        status="PENDING",
        created_at=datetime.now(timezone.utc),
    )


def test_the_reminder_event_names_the_same_review_and_its_poll_token() -> None:
    review = _review()
    trigger = ReviewTrigger(
        "https://gw:8009", review.id, "poll-token-1", remind_at=0.0, ca_file="/etc/ca.pem"
    )
    answer = httpx.Response(200, json=review.model_dump(mode="json"))

    event = trigger._event(answer)
    assert event is not None and event["status"] == REMIND
    assert event["review_id"] == review.id and event["poll_token"] == "poll-token-1"
    assert event["gateway_url"] == "https://gw:8009" and event["ca_file"] == "/etc/ca.pem"


def test_a_reminded_sensor_defers_on_the_same_review_without_asking_the_gateway() -> None:
    review = _review()
    sensor = HoopApprovalSensor(task_id="approve", target_task_id="load")
    deadline = datetime.now(timezone.utc) + timedelta(minutes=10)
    event = {
        "status": REMIND,
        "review_id": review.id,
        "review": review.model_dump(mode="json"),
        "poll_token": "poll-token-1",
        "gateway_url": "https://gw:8009",
        "ca_file": None,
        "wait_deadline": deadline.isoformat(),
    }
    # No gateway, no Airflow context: a new request would fail here, so none is made.
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute_complete({}, event)
    trigger = deferred.value.trigger
    assert isinstance(trigger, ReviewTrigger)
    assert trigger.review_id == review.id and trigger.poll_token == "poll-token-1"
    assert trigger.remind_at is None  # one reminder only
