"""EVE-style event dicts: the one place that knows EVE field names.

Field names and types follow Suricata's EVE JSON so Filebeat's Suricata module and SIEM
parsers take our events as they are: integer `flow_id`, upper-case `proto`, timestamps like
`2026-11-26T12:00:00.123456+0000` (no colon in the offset: Filebeat's layout rejects `+00:00`).
"""

from __future__ import annotations

import json
import socket
from datetime import datetime, timedelta, timezone
from typing import Any

import communityid

from agent.decode import PROTO_TCP, PROTO_UDP
from agent.flows import Flow
from agent.reassembly import TOCLIENT, TOSERVER

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_PROTO_NAMES = {PROTO_TCP: "TCP", PROTO_UDP: "UDP"}
_COMMUNITY_ID = communityid.CommunityID(seed=0)


def format_ts(us: int) -> str:
    """Microseconds since the epoch -> `YYYY-MM-DDTHH:MM:SS.ffffff+0000`, exact (no float)."""
    try:
        moment = _EPOCH + timedelta(microseconds=us)
    except OverflowError:        # garbage timestamps from damaged captures: clamp, don't crash
        moment = datetime.max.replace(tzinfo=timezone.utc) if us > 0 else datetime.min.replace(tzinfo=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f+0000")


def ip_text(packed: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(packed) == 4 else socket.AF_INET6, packed)


def vlan_ids(packed: int) -> list[int]:
    """Undo the 12-bits-per-tag packing of `Packet.vlan`, outermost first."""
    ids = []
    while packed:
        ids.append(packed & 0xFFF)
        packed >>= 12
    return ids[::-1]


def community_id(flow: Flow) -> str:
    tpl = communityid.FlowTuple(flow.proto, flow.client, flow.server, flow.cport, flow.sport)
    return str(_COMMUNITY_ID.calc(tpl))


def flow_event(flow: Flow, *, pcap_filename: str | None, app_proto: str | None,
               app_fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `flow` event for a finished flow, oriented client -> server."""
    event: dict[str, Any] = {
        "timestamp": format_ts(flow.last),
        "flow_id": flow.flow_id,
    }
    if pcap_filename is not None:
        event["pcap_filename"] = pcap_filename
    event["event_type"] = "flow"
    if flow.vlan:
        event["vlan"] = vlan_ids(flow.vlan)
    event.update({
        "src_ip": ip_text(flow.client),
        "src_port": flow.cport,
        "dest_ip": ip_text(flow.server),
        "dest_port": flow.sport,
        "proto": _PROTO_NAMES.get(flow.proto, str(flow.proto)),
    })
    if app_proto:
        event["app_proto"] = app_proto
    event["community_id"] = community_id(flow)
    event["flow"] = {
        "pkts_toserver": flow.pkts[TOSERVER],
        "pkts_toclient": flow.pkts[TOCLIENT],
        "bytes_toserver": flow.bytes[TOSERVER],
        "bytes_toclient": flow.bytes[TOCLIENT],
        "start": format_ts(flow.start),
        "end": format_ts(flow.last),
        "age": (flow.last - flow.start) // 1_000_000,
        "state": flow.state,
        "reason": flow.reason,
    }
    if app_fields:
        event.update(app_fields)
    return event


def dumps(event: dict[str, Any]) -> str:
    """One EVE line. Key order is insertion order, so output is byte-identical run to run."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))
