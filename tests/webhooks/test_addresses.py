"""Webhooks go to public addresses only (no server-side request forgery), unless the operator
allows private ones (development and the other webhook tests, whose receivers are local)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from members.service import register_member
from server.errors import DomainError
from server.runtime import Runtime
from tests.webhooks.helpers import deliveries, fast_retries, receiving, subscribe
from webhooks import delivery, service
from webhooks.addresses import AddressRefused, is_public, literal_refusal, pinned_target


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111"],
)
def test_public_addresses(address: str) -> None:
    assert is_public(address)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",  # loopback
        "10.1.2.3",  # private
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # link-local: cloud metadata services
        "100.64.0.1",  # shared (carrier-grade NAT)
        "0.0.0.0",
        "224.0.0.1",  # multicast
        "::1",
        "fe80::1%eth0",
        "fc00::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert not is_public(address)


def test_registration_refuses_localhost_and_private_literals() -> None:
    for url in ("http://localhost:8080/hook", "http://api.localhost/h", "http://127.0.0.1/h",
                "https://[::1]/h", "http://169.254.169.254/latest/meta-data"):  # fmt: skip
        assert literal_refusal(url), url
    for url in ("https://hooks.example.com/q", "http://8.8.8.8/h"):
        assert literal_refusal(url) is None, url


async def test_upsert_refuses_a_private_url_unless_allowed(runtime: Runtime) -> None:
    data = service.WebhookInput(url="http://10.0.0.5:5432/", events=["points.earned"],
                                secret="s" * 32)  # fmt: skip
    with pytest.raises(DomainError) as refused:
        async with runtime.transaction() as session:
            await service.upsert_webhook(session, data)
    assert refused.value.code.value == "INVALID_INPUT"
    assert "public address" in refused.value.message
    async with runtime.transaction() as session:
        assert await service.upsert_webhook(session, data, allow_private=True)


async def test_a_delivery_to_a_name_resolving_to_a_private_address_is_refused(
    runtime: Runtime,
) -> None:
    """Registered while private addresses were allowed (or a name whose DNS changed since):
    the delivery resolves ``localhost`` to 127.0.0.1 and refuses to send."""
    strict = fast_retries(runtime, webhook_allow_private_addresses=False, webhook_max_attempts=1)
    with receiving() as receiver:
        port = receiver.server.server_address[1]
        await subscribe(runtime, f"http://localhost:{port}/hook", ["member.registered"])
        async with runtime.transaction() as session:
            await register_member(session, external_id="ssrf")
        (row,) = await deliveries(runtime)
        (result,) = await delivery.deliver(strict, [row["id"]], schedule_retries=False)
        assert result.error is not None and result.error.startswith("refused:"), result.error
        assert "not a public address" in result.error
        assert receiver.received == []  # nothing was sent
        (row,) = await deliveries(runtime)
        assert row["status"] == "failed"


async def test_a_public_name_is_pinned_to_the_address_that_was_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The request goes to the checked address, with the host name kept for the receiver
    (Host header) and for TLS (server name). DNS is faked: this machine has no internet."""

    async def resolve(host: str, port: int, **_: Any) -> list[Any]:
        answers = {"hooks.example.com": ["93.184.216.34"], "mixed.example.com":
                   ["93.184.216.34", "10.0.0.7"]}  # fmt: skip
        if host not in answers:
            raise socket.gaierror("unknown host")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers[host]]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolve)
    target = await pinned_target("https://hooks.example.com/q?x=1")
    assert target.url == "https://93.184.216.34:443/q?x=1"
    assert target.headers == {"Host": "hooks.example.com", "Connection": "close"}
    assert target.extensions == {"sni_hostname": "hooks.example.com"}
    plain = await pinned_target("http://hooks.example.com:8080/q")
    assert plain.url == "http://93.184.216.34:8080/q"
    assert plain.headers["Host"] == "hooks.example.com:8080" and plain.extensions == {}
    with pytest.raises(AddressRefused, match=r"10\.0\.0\.7"):  # one private answer is enough
        await pinned_target("https://mixed.example.com/q")
    with pytest.raises(AddressRefused, match="cannot resolve"):
        await pinned_target("https://nowhere.example.com/q")


async def test_a_pinned_delivery_reaches_the_receiver_with_its_host_name(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole pinned path through the HTTP client: DNS answers 127.0.0.1 for a made-up
    name, and 127.0.0.1 counts as public for this test only (nothing else is reachable)."""
    loop = asyncio.get_running_loop()
    real_resolve = loop.getaddrinfo

    async def resolve(host: str, port: int, **kwargs: Any) -> Any:
        return await real_resolve("127.0.0.1" if host == "hooks.example.test" else host, port,
                                  **kwargs)  # fmt: skip

    monkeypatch.setattr(loop, "getaddrinfo", resolve)
    monkeypatch.setattr("webhooks.addresses.is_public", lambda address: address == "127.0.0.1")
    strict = fast_retries(runtime, webhook_allow_private_addresses=False)
    with receiving() as receiver:
        port = receiver.server.server_address[1]
        await subscribe(runtime, f"http://hooks.example.test:{port}/hook", ["member.registered"])
        async with runtime.transaction() as session:
            await register_member(session, external_id="pinned")
        (row,) = await deliveries(runtime)
        (result,) = await delivery.deliver(strict, [row["id"]], schedule_retries=False)
        assert result.ok, result.error
        (received,) = receiver.received
        assert received.headers["host"] == f"hooks.example.test:{port}"
        assert received.headers["connection"] == "close"
