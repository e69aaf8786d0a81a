"""Drives a Redfish service with OpenStack's sushy (as Ironic does): a session, TLS verified
against the CA file given, ForceOff then On of the only system, waiting for each state.
Usage: sushy_off_on.py URL USER CA_FILE  (password on stdin). Prints one line per step."""
import sys, time
import sushy
from sushy import auth

url, user, ca = sys.argv[1], sys.argv[2], sys.argv[3]
password = sys.stdin.readline().rstrip("\n")
root = sushy.Sushy(url, verify=ca,
                   auth=auth.SessionAuth(username=user, password=password))
systems = root.get_system_collection()
members = systems.get_members()
system = members[0]
print("system", system.identity, system.power_state, "boot", system.boot.enabled, "auth", type(root._auth).__name__)
for reset, want in ((sushy.RESET_FORCE_OFF, sushy.POWER_STATE_OFF), (sushy.RESET_ON, sushy.POWER_STATE_ON)):
    system.reset_system(reset)
    deadline = time.monotonic() + 30
    while True:
        system.refresh()
        if system.power_state == want:
            break
        if time.monotonic() > deadline:
            print("timeout waiting for", want, "last", system.power_state)
            sys.exit(1)
        time.sleep(0.1)
    print("reset", reset, "->", system.power_state)
print("chassis", [c.identity for c in root.get_chassis_collection().get_members()], "managers", [m.identity for m in root.get_manager_collection().get_members()])
root._auth.close()
