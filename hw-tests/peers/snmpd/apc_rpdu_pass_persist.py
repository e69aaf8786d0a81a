#!/usr/bin/env python3
"""An APC rPDU outlet table for net-snmp's snmpd, over its pass_persist protocol.

snmpd handles SNMP itself (v1/v2c/v3, USM, BER); this script only answers get, getnext and
set for objects under .1.3.6.1.4.1.318.1.1.12 (PowerNet-MIB rPDU). Outlet state lives in a
JSON file (argument 1), re-read on every request so a test can change it, and written on
every set. A state file with "stuck": true acknowledges sets and changes nothing.
"""
import json
import os
import sys

BASE = (1, 3, 6, 1, 4, 1, 318, 1, 1, 12)
SERIAL = BASE + (1, 6, 0)
CONTROL = BASE + (3, 3, 1, 1, 4)
NAME = BASE + (3, 5, 1, 1, 2)
STATE = BASE + (3, 5, 1, 1, 4)

state_path = sys.argv[1]


def load():
    with open(state_path) as f:
        return json.load(f)


def save(st):
    tmp = state_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(st, f)
    os.replace(tmp, state_path)


def objects(st):
    objs = {SERIAL: ("string", st["serial"])}
    for k, o in st["outlets"].items():
        n = int(k)
        on = 1 if o["on"] else 2
        objs[CONTROL + (n,)] = ("integer", str(on))
        objs[NAME + (n,)] = ("string", o["name"])
        objs[STATE + (n,)] = ("integer", str(on))
    return objs


def parse(oid):
    return tuple(int(p) for p in oid.strip().strip(".").split(".") if p)


def dotted(oid):
    return "." + ".".join(str(p) for p in oid)


def reply(*lines):
    sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()


def main():
    while True:
        cmd = sys.stdin.readline()
        if not cmd:
            return
        cmd = cmd.strip()
        # snmpd (5.9) follows a set's value line with an empty line: not a command.
        if not cmd:
            continue
        if cmd == "PING":
            reply("PONG")
            continue
        oid = parse(sys.stdin.readline())
        objs = objects(load())
        if cmd == "get":
            if oid in objs:
                t, v = objs[oid]
                reply(dotted(oid), t, v)
            else:
                reply("NONE")
        elif cmd == "getnext":
            later = sorted(o for o in objs if o > oid)
            if later:
                t, v = objs[later[0]]
                reply(dotted(later[0]), t, v)
            else:
                reply("NONE")
        elif cmd == "set":
            typ, _, value = sys.stdin.readline().strip().partition(" ")
            st = load()
            n = oid[-1] if oid[:-1] == CONTROL else None
            if n is None or str(n) not in st["outlets"]:
                reply("not-writable")
            elif typ != "integer":
                reply("wrong-type")
            elif value not in ("1", "2"):
                reply("wrong-value")
            else:
                if not st.get("stuck"):
                    st["outlets"][str(n)]["on"] = value == "1"
                    save(st)
                reply("DONE")
        else:
            reply("NONE")


main()
