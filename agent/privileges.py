"""Giving up privileges once the capture sockets are open (the way Suricata's `--user` does).

The AF_PACKET sockets, the promiscuous-mode membership and a metrics port below 1024 need
privileges only to be opened; an open socket keeps working without them. So the agent opens
everything as root (or with CAP_NET_RAW/CAP_NET_ADMIN from systemd), then:
- as root: empties the capability bounding set, sets supplementary groups, gid and uid to the
  `--user` account (the kernel clears every capability on the switch away from uid 0), and
  sets no_new_privs so nothing it could execute regains any;
- as another user holding capabilities (systemd AmbientCapabilities): clears the ambient,
  inheritable, permitted and effective sets with capset(2), then no_new_privs.
`current()` reads back what the process holds, so the caller and the tests can check.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import grp
import os
import pwd
from dataclasses import dataclass

from agent.errors import UsageError

_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAP_LAST_FALLBACK = 40
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


@dataclass(frozen=True, slots=True)
class Held:
    uid: int
    gid: int
    effective_caps: int
    permitted_caps: int
    bounding_caps: int
    no_new_privs: bool


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _prctl(libc: ctypes.CDLL, option: int, arg: int = 0) -> int:
    return libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return _CAP_LAST_FALLBACK


def resolve_user(name: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise UsageError(f"--user {name}: no such user") from None
    return entry.pw_uid, entry.pw_gid


def drop(user: str) -> None:
    """Give up every privilege: switch to `user` when root, else clear held capabilities."""
    libc = _libc()
    if os.geteuid() == 0:
        uid, gid = resolve_user(user)
        for cap in range(_last_cap() + 1):
            _prctl(libc, _PR_CAPBSET_DROP, cap)
        groups = [g.gr_gid for g in grp.getgrall() if user in g.gr_mem]
        os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    else:
        _prctl(libc, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        if libc.capset(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "capset failed")
    if _prctl(libc, _PR_SET_NO_NEW_PRIVS, 1) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    held = current()
    if held.effective_caps or held.permitted_caps:
        raise OSError(f"capabilities still held after dropping privileges: {held}")


def current(pid: int | str = "self") -> Held:
    """What a process holds, from /proc/PID/status."""
    fields: dict[str, str] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return Held(uid=int(fields["Uid"].split()[1]), gid=int(fields["Gid"].split()[1]),
                effective_caps=int(fields["CapEff"], 16), permitted_caps=int(fields["CapPrm"], 16),
                bounding_caps=int(fields["CapBnd"], 16), no_new_privs=fields.get("NoNewPrivs") == "1")
