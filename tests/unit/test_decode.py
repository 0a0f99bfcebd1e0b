"""decode_message and describe_message: the real wire format, every rejection, and property tests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpcdaemon.model import BusHints, Heartbeat, HintKind, NetworkChanged, NetworkDeleted, NetworkHint, RouterHint
from rpcdaemon.observing.decode import MAX_BODY, MAX_IDS, Rejected, decode_message, describe_message

# The 22 _context_* keys a Neutron 29 agent sends (values as in the neutron.md capture).
CONTEXT = {
    "_context_user": None,
    "_context_tenant": None,
    "_context_system_scope": None,
    "_context_project": None,
    "_context_domain": None,
    "_context_user_domain": None,
    "_context_project_domain": None,
    "_context_is_admin": True,
    "_context_read_only": False,
    "_context_show_deleted": False,
    "_context_auth_token": None,
    "_context_request_id": "req-36262e46-2a0e-4b1a-9a2c-3f1a0f3b5e6d",
    "_context_global_request_id": None,
    "_context_resource_uuid": None,
    "_context_roles": ["member", "admin", "reader"],
    "_context_user_identity": "- - - - -",
    "_context_is_admin_project": True,
    "_context_user_id": None,
    "_context_project_id": None,
    "_context_tenant_id": None,
    "_context_timestamp": "2026-11-25 09:03:53.359375",
    "_context_user_name": None,
}
L3_STATE = {
    "binary": "neutron-l3-agent",
    "host": "host-a",
    "availability_zone": "nova",
    "topic": "l3_agent",
    "agent_type": "L3 agent",
    "configurations": {
        "agent_mode": "legacy",
        "handle_internal_only_routers": True,
        "interface_driver": "openvswitch",
        "log_agent_heartbeats": False,
        "extensions": [],
        "routers": 0,
        "ex_gw_ports": 0,
        "interfaces": 0,
        "floating_ips": 0,
    },
    "uuid": "94cfdd81-46ca-4303-8953-e92cf385a6c2",
}
TIME = "2026-11-25T09:04:05.499087"


def rpc(method: str, args: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    return {"method": method, "args": dict(args), "version": "1.4", "_unique_id": "2535661062eb", **CONTEXT, **extra}


def envelope(msg: Mapping[str, Any]) -> bytes:
    """Exactly what oslo.messaging's rabbit driver puts on the wire (serialize_msg + json)."""
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(msg)}).encode()


def heartbeat_msg(state: Mapping[str, Any], *, twice: bool = True, time: str | None = TIME) -> dict[str, Any]:
    args: dict[str, Any] = {"agent_state": {"agent_state": dict(state)} if twice else dict(state)}
    if time is not None:
        args["time"] = time
    return rpc("report_state", args, _msg_id="4062e717", _reply_q="reply_5048bad0", _timeout=None)


def decode(body: bytes | str | Mapping[str, Any], routing_key: str = "q-reports-plugin") -> Any:
    return decode_message(body, routing_key=routing_key, received_at=123.5)


# -- heartbeats ---------------------------------------------------------------------------------


def test_real_capture_decodes_to_a_heartbeat() -> None:
    hb = decode(envelope(heartbeat_msg({**L3_STATE, "start_flag": True})))
    assert hb == Heartbeat(
        agent_type="L3 agent",
        host="host-a",
        received_at=123.5,
        binary="neutron-l3-agent",
        topic="l3_agent",
        agent_mode="legacy",
        availability_zone="nova",
        start_flag=True,
        sent_at=TIME,
    )
    assert hb.configurations["interface_driver"] == "openvswitch"
    with pytest.raises(TypeError):
        hb.configurations["routers"] = 5


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(envelope(heartbeat_msg(L3_STATE, twice=False)), id="nested-once-older-release"),
        pytest.param(json.dumps(heartbeat_msg(L3_STATE)).encode(), id="legacy-no-envelope"),
        pytest.param(envelope(heartbeat_msg(L3_STATE)).decode(), id="str-body"),
        pytest.param(json.loads(envelope(heartbeat_msg(L3_STATE))), id="mapping-body"),
        pytest.param(heartbeat_msg(L3_STATE), id="mapping-no-envelope"),
    ],
)
def test_heartbeat_variants(body: Any) -> None:
    hb = decode(body)
    assert isinstance(hb, Heartbeat), hb
    assert (hb.host, hb.agent_type, hb.agent_mode, hb.start_flag, hb.sent_at) == (
        "host-a",
        "L3 agent",
        "legacy",
        False,
        TIME,
    )


def test_dhcp_heartbeat_without_optional_fields() -> None:
    state = {"host": "net-2", "agent_type": "DHCP agent", "configurations": {"dhcp_driver": "dnsmasq"}}
    hb = decode(envelope(heartbeat_msg(state, time=None)), routing_key="q-plugin")
    assert isinstance(hb, Heartbeat)
    assert (hb.agent_mode, hb.availability_zone, hb.binary, hb.sent_at, hb.start_flag) == (None, None, "", None, False)


# -- network events -----------------------------------------------------------------------------


def notification(event_type: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "message_id": "aebe630e",
        "publisher_id": "network.controller",
        "event_type": event_type,
        "priority": "INFO",
        "payload": dict(payload),
        "timestamp": "2026-11-25 10:29:49.563063",
        **CONTEXT,
    }


@pytest.mark.parametrize("enveloped", [True, False], ids=["messagingv2", "messaging-v1"])
def test_network_delete_notification(enveloped: bool) -> None:
    msg = notification("network.delete.end", {"network_id": "net-3", "network": {"id": "net-3"}})
    body = envelope(msg) if enveloped else json.dumps(msg).encode()
    assert decode(body, "notifications.info") == NetworkDeleted("net-3", 123.5)


def test_network_delete_fanout_cast_is_a_deletion() -> None:
    msg = rpc("network_delete_end", {"payload": {"network_id": "net-1", "priority": 0}})
    assert decode(envelope(msg), routing_key="") == NetworkDeleted("net-1", 123.5)


def test_network_delete_cast_to_one_agent_is_not_a_deletion() -> None:
    msg = rpc("network_delete_end", {"payload": {"network_id": "net-1"}})
    out = decode(envelope(msg), routing_key="dhcp_agent.host-b")
    assert out == BusHints(networks=(NetworkHint("net-1", "host-b", HintKind.REMOVED, 123.5, "network_delete_end"),))


# -- casts to the agents' own topics (what a stock neutron.conf puts on the bus) ------------------


def cast(method: str, **kwargs: Any) -> bytes:
    return envelope(rpc(method, kwargs, version="1.0"))


@pytest.mark.parametrize(
    ("method", "payload", "kind"),
    [
        pytest.param("network_create_end", {"network": {"id": "n1"}, "priority": 0}, HintKind.PLACED, id="create"),
        pytest.param("network_update_end", {"network": {"id": "n1", "name": "x"}}, HintKind.CHANGED, id="update"),
        pytest.param("subnet_create_end", {"subnet": {"id": "s", "network_id": "n1", "enable_dhcp": True}},
                     HintKind.CHANGED, id="subnet-create"),
        pytest.param("subnet_update_end", {"subnet": {"id": "s", "network_id": "n1"}}, HintKind.CHANGED,
                     id="subnet-update"),
        pytest.param("network_delete_end", {"network_id": "n1", "priority": 2}, HintKind.REMOVED, id="removed"),
    ],
)
def test_dhcp_casts_to_one_agent_are_network_hints(method: str, payload: dict[str, Any], kind: HintKind) -> None:
    out = decode(cast(method, payload=payload), routing_key="dhcp_agent.net-1.example.com")
    assert out == BusHints(networks=(NetworkHint("n1", "net-1.example.com", kind, 123.5, method),))


def test_a_router_interface_port_cast_also_names_the_router() -> None:
    port = {"id": "p", "network_id": "n1", "device_id": "r1", "device_owner": "network:router_interface",
            "fixed_ips": [{"subnet_id": "s", "ip_address": "10.0.0.1"}]}
    out = decode(cast("port_create_end", payload={"port": port, "priority": 5}), routing_key="dhcp_agent.h")
    assert out == BusHints(networks=(NetworkHint("n1", "h", HintKind.CHANGED, 123.5, "port_create_end"),),
                           routers=(RouterHint("r1", None, HintKind.CHANGED, 123.5, "port_create_end"),))


@pytest.mark.parametrize(
    ("body", "key"),
    [
        pytest.param(cast("port_create_end", payload={"port": {"device_owner": "compute:nova", "network_id": "n"}}),
                     "dhcp_agent.h", id="vm-port"),
        pytest.param(cast("port_update_end", payload={"port": {"network_id": "n"}}), "dhcp_agent.h", id="update"),
        pytest.param(cast("port_delete_end", payload={"port_id": "p", "network_id": "n"}), "dhcp_agent.h",
                     id="port-delete"),
        pytest.param(cast("network_create_end", payload={"network": {"id": "n"}}), "", id="create-on-fanout"),
        pytest.param(cast("router_added_to_agent", payload=["r"]), "q-plugin", id="odd-key"),
        pytest.param(cast("routers_updated", routers=["r"]), "", id="l3-update-on-fanout"),
        pytest.param(cast("agent_updated", payload={"admin_state_up": False}), "l3_agent.h", id="agent-updated"),
    ],
)
def test_other_casts_are_not_handled(body: bytes, key: str) -> None:
    out = decode(body, routing_key=key)
    assert isinstance(out, Rejected), out
    assert out.kind == "not handled", out.reason


def test_l3_casts_are_router_hints() -> None:
    added = decode(cast("router_added_to_agent", payload=["r1", "r2", "r1"]), routing_key="l3_agent.h")
    assert added == BusHints(routers=(RouterHint("r1", "h", HintKind.PLACED, 123.5, "router_added_to_agent"),
                                      RouterHint("r2", "h", HintKind.PLACED, 123.5, "router_added_to_agent")))
    updated = decode(cast("routers_updated", routers=["r1"]), routing_key="l3_agent.h")
    assert updated == BusHints(routers=(RouterHint("r1", "h", HintKind.CHANGED, 123.5, "routers_updated"),))
    removed = decode(cast("router_removed_from_agent", payload={"router_id": "r1"}), routing_key="l3_agent.h")
    assert removed == BusHints(routers=(RouterHint("r1", "h", HintKind.REMOVED, 123.5, "router_removed_from_agent"),))
    deleted = decode(cast("router_deleted", router_id="r1"), routing_key="")
    assert deleted == BusHints(routers=(RouterHint("r1", None, HintKind.DELETED, 123.5, "router_deleted"),))


def test_a_cast_naming_many_routers_keeps_a_bounded_number_and_says_so() -> None:
    out = decode(cast("router_added_to_agent", payload=[f"r{i}" for i in range(MAX_IDS * 10)]),
                 routing_key="l3_agent.h")
    assert isinstance(out, BusHints)
    assert len(out.routers) == MAX_IDS
    assert out.more_routers


@pytest.mark.parametrize(
    ("body", "key"),
    [
        pytest.param(cast("network_create_end", payload={"network": {"id": 5}}), "dhcp_agent.h", id="int-id"),
        pytest.param(cast("network_create_end", payload="n"), "dhcp_agent.h", id="str-payload"),
        pytest.param(cast("subnet_update_end", payload={"subnet": None}), "dhcp_agent.h", id="no-subnet"),
        pytest.param(cast("network_create_end", payload={"network": {"id": "n"}}), "dhcp_agent." + "h" * 300,
                     id="long-host"),
        pytest.param(cast("network_create_end", payload={"network": {"id": "n"}}), "dhcp_agent.", id="no-host"),
        pytest.param(cast("router_added_to_agent", payload=[]), "l3_agent.h", id="no-ids"),
        pytest.param(cast("router_added_to_agent", payload=["r", None]), "l3_agent.h", id="none-id"),
        pytest.param(cast("routers_updated", routers="r"), "l3_agent.h", id="str-routers"),
        pytest.param(cast("router_removed_from_agent", payload=["r"]), "l3_agent.h", id="list-payload"),
        pytest.param(cast("router_deleted", router_id="x" * 300), "", id="long-id"),
        pytest.param(cast("port_create_end", payload={"port": {"device_owner": "network:router_interface"}}),
                     "dhcp_agent.h", id="iface-no-ids"),
    ],
)
def test_malformed_casts_are_rejected(body: bytes, key: str) -> None:
    out = decode(body, routing_key=key)
    assert isinstance(out, Rejected), out
    assert out.kind == "bad agent cast", out.reason
    assert len(out.reason) < 200


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["network_create_end", "network_update_end", "subnet_create_end", "subnet_update_end",
                            "network_delete_end", "port_create_end", "router_added_to_agent", "routers_updated",
                            "router_removed_from_agent", "router_deleted", "port_update_end"]),
    args=st.dictionaries(st.sampled_from(["payload", "routers", "router_id"]),
                         st.recursive(st.none() | st.integers() | st.text(max_size=8),
                                      lambda c: st.lists(c, max_size=80) | st.dictionaries(
                                          st.sampled_from(["network", "subnet", "port", "id", "network_id",
                                                           "device_id", "device_owner", "router_id"]), c, max_size=4),
                                      max_leaves=120), max_size=3),
    key=st.sampled_from(["", "dhcp_agent.h", "l3_agent.h", "dhcp_agent.", "q-plugin", "l3_agent.a.b"]),
)
def test_any_cast_decodes_to_bounded_hints_or_a_rejection(method: str, args: dict[str, Any], key: str) -> None:
    out = decode(envelope(rpc(method, args)), routing_key=key)
    assert isinstance(out, (BusHints, NetworkDeleted, Rejected)), out
    if isinstance(out, BusHints):
        assert len(out.routers) <= MAX_IDS
        assert len(out.networks) <= 1
        assert all(0 < len(h.router_id) <= 255 for h in out.routers)


@pytest.mark.parametrize(
    ("event_type", "payload"),
    [
        ("network.create.end", {"network": {"id": "net-4", "name": "n"}}),
        ("network.update.end", {"network": {"id": "net-4"}}),
        ("subnet.create.end", {"subnet": {"id": "s-1", "network_id": "net-4", "enable_dhcp": True}}),
        ("subnet.update.end", {"subnet": {"id": "s-1", "network_id": "net-4"}}),
        ("subnet.delete.end", {"subnet_id": "s-1", "subnet": {"id": "s-1", "network_id": "net-4"}}),
    ],
)
def test_network_change_notifications(event_type: str, payload: dict[str, Any]) -> None:
    assert decode(envelope(notification(event_type, payload)), "notifications.info") == NetworkChanged("net-4", 123.5)


# -- rejections ---------------------------------------------------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        pytest.param(b"", "not JSON", id="empty"),
        pytest.param(b"\x80\x81garbage", "not UTF-8", id="not-utf8"),
        pytest.param(b"{not json", "not JSON", id="not-json"),
        pytest.param(b"x" * (MAX_BODY + 1), "too large", id="huge"),
        pytest.param(DEEP, "too deep", id="deeply-nested"),
        pytest.param(b"[1, 2]", "bad envelope", id="json-list"),
        pytest.param(b'"report_state"', "bad envelope", id="json-string"),
        pytest.param(b'{"oslo.version": "2.0", "oslo.message": 5}', "bad envelope", id="inner-not-string"),
        pytest.param(b'{"oslo.version": "1.0", "oslo.message": "{}"}', "bad envelope", id="old-version"),
        pytest.param(b'{"oslo.version": "2.0", "oslo.message": "[1]"}', "bad envelope", id="inner-list"),
        pytest.param(b'{"oslo.version": "2.0", "oslo.message": "{oops"}', "not JSON", id="inner-not-json"),
        pytest.param(
            json.dumps({"oslo.version": "2.0", "oslo.message": "[" * 50_000 + "]" * 50_000}).encode(),
            "too deep",
            id="inner-deeply-nested",
        ),
        pytest.param(b'{"hello": "world"}', "not handled", id="no-method"),
        pytest.param(envelope(rpc("sync_state", {})), "not handled", id="other-method"),
        pytest.param(envelope(notification("port.create.end", {"port": {}})), "not handled", id="other-event"),
        pytest.param(envelope(rpc("report_state", {})), "bad heartbeat", id="no-agent-state"),
        pytest.param(envelope({"method": "report_state", "args": [1]}), "bad envelope", id="args-list"),
        pytest.param(envelope(heartbeat_msg({"agent_type": "L3 agent"})), "bad heartbeat", id="missing-host"),
        pytest.param(envelope(heartbeat_msg({**L3_STATE, "host": 7})), "bad heartbeat", id="host-int"),
        pytest.param(envelope(heartbeat_msg({**L3_STATE, "host": ""})), "bad heartbeat", id="host-empty"),
        pytest.param(envelope(heartbeat_msg({**L3_STATE, "host": "h" * 300})), "bad heartbeat", id="host-long"),
        pytest.param(envelope(heartbeat_msg({**L3_STATE, "agent_type": None})), "bad heartbeat", id="no-type"),
        pytest.param(envelope(heartbeat_msg({**L3_STATE, "binary": 1})), "bad heartbeat", id="binary-int"),
        pytest.param(envelope(heartbeat_msg({**L3_STATE, "start_flag": "yes"})), "bad heartbeat", id="flag-str"),
        pytest.param(envelope(heartbeat_msg({**L3_STATE, "configurations": []})), "bad heartbeat", id="conf-list"),
        pytest.param(
            envelope(heartbeat_msg({**L3_STATE, "configurations": {"a": [[[[[[[[[[1]]]]]]]]]]}})),
            "bad heartbeat",
            id="conf-deep",
        ),
        pytest.param(b'{"method": "report_state", "x": NaN}', "not JSON", id="nan"),
        pytest.param(b'{"method": "report_state", "x": -Infinity}', "not JSON", id="infinity"),
        pytest.param(  # 1e400 is valid JSON that parses to inf
            envelope(heartbeat_msg({**L3_STATE, "configurations": {"x": 0}})).replace(b'"x\\": 0', b'"x\\": 1e400'),
            "bad heartbeat",
            id="conf-1e400",
        ),
        pytest.param(envelope(rpc("network_delete_end", {})), "bad network event", id="delete-no-payload"),
        pytest.param(
            envelope(notification("network.delete.end", {"network_id": 5})), "bad network event", id="bad-net-id"
        ),
        pytest.param(
            envelope(notification("subnet.create.end", {"subnet": "s"})), "bad network event", id="subnet-str"
        ),
    ],
)
def test_rejections(body: bytes, kind: str) -> None:
    out = decode(body, routing_key="")
    assert isinstance(out, Rejected), out
    assert out.kind == kind, out.reason
    assert len(out.reason) < 200


def test_nan_in_a_mapping_handed_in_directly_is_refused() -> None:
    state = {**L3_STATE, "configurations": {"load": float("nan")}}
    out = decode(heartbeat_msg(state))
    assert isinstance(out, Rejected)
    assert "non-finite" in out.reason


# -- property tests -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=30,
)
HEARTBEAT_KEYS = ["method", "args", "agent_state", "host", "agent_type", "configurations", "oslo.message", "payload"]


@given(st.binary(max_size=2048))
def test_any_bytes_decode_without_raising(body: bytes) -> None:
    assert isinstance(decode(body), (Heartbeat, NetworkDeleted, NetworkChanged, Rejected))


@given(st.dictionaries(st.sampled_from(HEARTBEAT_KEYS) | st.text(max_size=8), json_values, max_size=6))
def test_any_json_object_decodes_without_raising(obj: dict[str, Any]) -> None:
    for body in (json.dumps(obj).encode(), envelope(obj), obj):
        assert isinstance(decode(body), (Heartbeat, NetworkDeleted, NetworkChanged, Rejected))


@given(json_values, st.sampled_from(["host", "agent_type", "configurations", "start_flag", "binary"]))
def test_any_value_in_a_heartbeat_field_decodes_without_raising(value: Any, key: str) -> None:
    out = decode(envelope(heartbeat_msg({**L3_STATE, key: value})))
    assert isinstance(out, (Heartbeat, Rejected))


names = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=60)


@given(
    host=names,
    agent_type=names,
    binary=st.text(max_size=30),
    topic=st.text(max_size=30),
    az=st.none() | names,
    mode=st.none() | st.sampled_from(["legacy", "dvr", "dvr_snat", "dvr_no_external"]),
    start_flag=st.none() | st.booleans(),
    time=st.none() | st.text(max_size=40),
    twice=st.booleans(),
    form=st.sampled_from(["envelope", "legacy", "str", "mapping"]),
)
def test_well_formed_heartbeats_round_trip(
    host: str,
    agent_type: str,
    binary: str,
    topic: str,
    az: str | None,
    mode: str | None,
    start_flag: bool | None,
    time: str | None,
    twice: bool,
    form: str,
) -> None:
    state: dict[str, Any] = {"host": host, "agent_type": agent_type, "binary": binary, "topic": topic}
    if az is not None:
        state["availability_zone"] = az
    if mode is not None:
        state["configurations"] = {"agent_mode": mode, "routers": 3}
    if start_flag is not None:
        state["start_flag"] = start_flag
    msg = heartbeat_msg(state, twice=twice, time=time)
    body: Any = {
        "envelope": envelope(msg),
        "legacy": json.dumps(msg).encode(),
        "str": envelope(msg).decode(),
        "mapping": msg,
    }[form]
    hb = decode(body)
    assert isinstance(hb, Heartbeat), hb
    assert (hb.host, hb.agent_type, hb.binary, hb.topic) == (host, agent_type, binary, topic)
    assert hb.availability_zone == (az or None)
    assert hb.agent_mode == mode
    assert hb.start_flag is bool(start_flag)
    assert hb.sent_at == (time[:64] if time is not None else None)
    assert hb.received_at == 123.5


@given(depth=st.integers(min_value=2_000, max_value=200_000), opener=st.sampled_from([b"[", b'{"a":']))
@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
def test_deeply_nested_input_is_rejected(depth: int, opener: bytes) -> None:
    closer = b"]" if opener == b"[" else b"}"
    body = opener * depth + b"1" + closer * depth
    out = decode(body)
    assert isinstance(out, Rejected)
    assert out.kind == ("too deep" if len(body) <= MAX_BODY else "too large")


@given(extra=st.integers(min_value=1, max_value=4096))
@settings(max_examples=10)
def test_huge_input_is_rejected_before_parsing(extra: int) -> None:
    body = envelope(heartbeat_msg({**L3_STATE, "uuid": "x" * (MAX_BODY + extra)}))
    out = decode(body)
    assert isinstance(out, Rejected)
    assert out.kind == "too large"


# -- describe_message (Dump) --------------------------------------------------------------------


def test_describe_heartbeat_collapses_context() -> None:
    data, line = describe_message(envelope(heartbeat_msg(L3_STATE)), exchange="neutron", routing_key="q-reports-plugin")
    assert data["method"] == "report_state"
    assert data["host"] == "host-a"
    assert data["agent_type"] == "L3 agent"
    assert data["body"]["args"]["agent_state"]["agent_state"]["host"] == "host-a"  # inner message decoded
    assert data["context"]["request_id"] == CONTEXT["_context_request_id"]
    assert line.startswith('neutron/q-reports-plugin report_state host=host-a type="L3 agent" {')
    assert '"_context_*":"<22 keys>"' in line
    assert "_context_request_id" not in line
    assert "\n" not in line


def test_describe_verbose_keeps_context() -> None:
    _, line = describe_message(
        envelope(heartbeat_msg(L3_STATE)), exchange="neutron", routing_key="q-reports-plugin", verbose=True
    )
    assert '"_context_request_id":"req-36262e46' in line


def test_describe_network_event_and_garbage() -> None:
    data, line = describe_message(
        envelope(rpc("network_delete_end", {"payload": {"network_id": "net-1"}})),
        exchange="dhcp_agent_fanout",
        routing_key="",
    )
    assert data["network_id"] == "net-1"
    assert line.startswith("dhcp_agent_fanout/(none) network_delete_end network=net-1 ")
    data, line = describe_message(b"\xff\x00junk\nmore", exchange="neutron", routing_key="x")
    assert data["method"] is None
    assert data["error"].startswith("not UTF-8")
    assert line.startswith("neutron/x <undecodable: not UTF-8")
    assert "\n" not in line


def test_describe_escapes_hostile_names() -> None:
    _, line = describe_message(
        envelope(heartbeat_msg({**L3_STATE, "host": "evil\nhost\u2028x"})), exchange="neutron", routing_key="k"
    )
    assert "\n" not in line
    assert "\u2028" not in line
    assert 'host="evil\\nhost\\u2028x"' in line


@given(st.binary(max_size=512))
def test_describe_never_raises(body: bytes) -> None:
    data, line = describe_message(body, exchange="neutron", routing_key="#")
    assert data["exchange"] == "neutron"
    assert "\n" not in line
