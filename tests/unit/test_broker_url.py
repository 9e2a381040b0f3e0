"""The broker URL carries the settings' heartbeat unless the operator's URL names one."""

from __future__ import annotations

from contracts.settings import RabbitSettings, Secret
from pixfleet.broker import _url


def test_heartbeat_is_added_to_the_url() -> None:
    url = _url(RabbitSettings(url=Secret("amqp://u:p@127.0.0.1:5672/vh"), heartbeat=7))
    assert url == "amqp://u:p@127.0.0.1:5672/vh?heartbeat=7"


def test_a_heartbeat_in_the_url_wins() -> None:
    url = _url(RabbitSettings(url=Secret("amqp://127.0.0.1/?heartbeat=60&x=1"), heartbeat=7))
    assert url == "amqp://127.0.0.1/?heartbeat=60&x=1"
