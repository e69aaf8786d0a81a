//! Vendor profiles: the behaviours of real BMC families that matter to a fencer, as small
//! tables the Redfish and IPMI labs read (`palisade-lab redfish --profile idrac`).
//!
//! Each row says where the behaviour was reported. The sources are public issue trackers,
//! cited by repository and number, and vendor and project documents, cited by title; a value
//! no public source gave says "no public source found" and why it was chosen: it is there so
//! the profile exercises the code path, not as a claim about the vendor. Every
//! behaviour can also be forced on any profile with a knob, so a test never depends on a
//! vendor being exactly like its row.

use std::time::Duration;

/// How a Redfish BMC family behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedfishProfile {
    /// `--profile` name.
    pub name: &'static str,
    /// One line for `--help`.
    pub summary: &'static str,
    /// ServiceRoot `Vendor` and `Product`.
    pub vendor: &'static str,
    /// ServiceRoot `Product`.
    pub product: &'static str,
    /// ComputerSystem `Manufacturer`.
    pub manufacturer: &'static str,
    /// ComputerSystem `Model`.
    pub model: &'static str,
    /// Manager `FirmwareVersion`.
    pub firmware: &'static str,
    /// Id of the first ComputerSystem (the others get `-K` appended).
    pub system_id: &'static str,
    /// Id of the Chassis.
    pub chassis_id: &'static str,
    /// Id of the Manager.
    pub manager_id: &'static str,
    /// `ResetType@Redfish.AllowableValues`.
    pub reset_types: &'static [&'static str],
    /// How long a power change takes; `PowerState` reads `PoweringOff`/`PoweringOn` meanwhile.
    pub transition: Duration,
    /// The HTTP status of a reset into the state the system is already in or moving to
    /// (`None`: accepted, as the standard allows).
    pub same_state_status: Option<u16>,
    /// MessageId of that refusal.
    pub same_state_message: &'static str,
    /// Most sessions open at once (0: no limit).
    pub max_sessions: usize,
    /// The HTTP status of a session POST beyond the limit.
    pub session_limit_status: u16,
    /// The Reset answers 202 with a task that reports `Completed` at once, before power has
    /// changed.
    pub early_completed_task: bool,
}

/// The standard behaviour (no vendor): every reset type, instant power, no limits.
pub const PALISADE: RedfishProfile = RedfishProfile {
    name: "palisade",
    summary: "the lab's own: every ResetType, no refusals, no session limit (default)",
    vendor: "Palisade",
    product: "palisade-lab Redfish BMC",
    manufacturer: "Palisade",
    model: "lab node",
    firmware: "1.0",
    system_id: "System1",
    chassis_id: "Chassis1",
    manager_id: "BMC1",
    reset_types: &[
        "On",
        "ForceOff",
        "GracefulShutdown",
        "ForceRestart",
        "PowerCycle",
        "Nmi",
    ],
    transition: Duration::ZERO,
    same_state_status: None,
    same_state_message: "",
    max_sessions: 0,
    session_limit_status: 503,
    early_completed_task: false,
};

/// Every Redfish profile, the lab's own first.
pub const REDFISH_PROFILES: &[RedfishProfile] = &[
    PALISADE,
    // Dell iDRAC 9.
    RedfishProfile {
        name: "idrac",
        summary: "Dell iDRAC 9: 409 on a reset into the current state, no GracefulRestart, 8 sessions (503 RAC0218)",
        vendor: "Dell",
        product: "Integrated Dell Remote Access Controller",
        manufacturer: "Dell Inc.",
        model: "PowerEdge R740",
        firmware: "6.10.30.00",
        // Ids as scripts against iDRAC address them (dell/iDRAC-Redfish-Scripting#15,
        // quadsproject/badfish#10: Systems/System.Embedded.1, Managers/iDRAC.Embedded.1).
        system_id: "System.Embedded.1",
        chassis_id: "System.Embedded.1",
        manager_id: "iDRAC.Embedded.1",
        // AllowableValues of a 14th-generation PowerEdge, GracefulRestart absent
        // (quadsproject/quads#311, DMTF/Redfish-Tacklebox#82).
        reset_types: &[
            "On",
            "ForceOff",
            "ForceRestart",
            "GracefulShutdown",
            "PushPowerButton",
            "Nmi",
        ],
        // No public source found for how long iDRAC reports the old state after a ForceOff;
        // chosen: 1 s, long enough that a fencer must poll at least once.
        transition: Duration::from_millis(1000),
        // "Server is already powered ON." answered 409, MessageId IDRAC.*.PSU501
        // (dell/dellemc-openmanage-ansible-modules#132); ForceOff of a server already off
        // answered 409 and failed a fencing script (openstack-k8s-operators/infra-operator#434).
        same_state_status: Some(409),
        same_state_message: "IDRAC.2.8.PSU501",
        // "The maximum number of user sessions is reached", 503, RAC0218, with iDRAC set to
        // 8 sessions (bb-Ricardo/check_redfish#89, #198; stmcginnis/gofish#75).
        max_sessions: 8,
        session_limit_status: 503,
        early_completed_task: false,
    },
    // HPE iLO 5.
    RedfishProfile {
        name: "ilo",
        summary: "HPE iLO 5: 400 InvalidOperationForSystemState on a reset into the current state, GracefulRestart offered",
        vendor: "HPE",
        product: "ProLiant DL380 Gen10",
        manufacturer: "HPE",
        model: "ProLiant DL380 Gen10",
        firmware: "iLO 5 v2.78",
        // apache/cloudstack#12921: "Retrieved System ID '1'", Systems/1.
        system_id: "1",
        chassis_id: "1",
        manager_id: "1",
        // iLO offers GracefulRestart (stmcginnis/gofish#57) and PushPowerButton.
        reset_types: &[
            "On",
            "ForceOff",
            "GracefulShutdown",
            "ForceRestart",
            "Nmi",
            "PushPowerButton",
            "GracefulRestart",
        ],
        // No public source found for iLO's transition time; chosen: 1.5 s, between iDRAC's
        // and OpenBMC's rows, so the profiles poll different numbers of times.
        transition: Duration::from_millis(1500),
        // 400 with iLO.*.InvalidOperationForSystemState when power is off
        // (goldyfruit/ansible-ilo#1, HewlettPackard/python-redfish-utility#72); a fencer
        // that took that 400 as a failure left hosts stuck in Fencing (apache/cloudstack#12921).
        same_state_status: Some(400),
        same_state_message: "iLO.2.15.InvalidOperationForSystemState",
        // iLO "accepts a limited number of sessions" and reaching it blocks management until
        // sessions time out (HPE, "Managing iLO sessions with Redfish", developer.hpe.com,
        // 2018, updated 2024), but no public source found gives the number; chosen: 8, as
        // the idrac row, and 503 as iDRAC answers.
        max_sessions: 8,
        session_limit_status: 503,
        early_completed_task: false,
    },
    // OpenBMC (bmcweb).
    RedfishProfile {
        name: "openbmc",
        summary: "OpenBMC bmcweb: PoweringOff/PoweringOn for seconds, every ResetType, ids system/chassis/bmc",
        vendor: "OpenBMC",
        product: "bmcweb",
        manufacturer: "OpenBMC",
        model: "romulus",
        firmware: "2.14.0",
        system_id: "system",
        chassis_id: "chassis",
        manager_id: "bmc",
        // bmcweb's AllowableValues (openbmc/openbmc-test-automation#1916,
        // ibm-openbmc/bmcweb#522 before IBM's downstream removal of ForceRestart).
        reset_types: &[
            "On",
            "ForceOff",
            "ForceOn",
            "ForceRestart",
            "GracefulRestart",
            "GracefulShutdown",
            "PowerCycle",
            "Nmi",
        ],
        // bmcweb maps the state manager's transition states to PoweringOn/PoweringOff
        // (ibm-openbmc/dev#2619); a power-off "takes a few minutes" while a tool read "on"
        // (xcat2/xcat-core#3808, #4047). Seconds here, so tests stay short.
        transition: Duration::from_millis(3000),
        same_state_status: None,
        same_state_message: "",
        // bmcweb has a session threshold that its test suite exercises
        // (openbmc/openbmc-test-automation#2045, #2046), but no public source found gives
        // the number; chosen: 4, a small limit, so mass-fencing tests meet it.
        max_sessions: 4,
        session_limit_status: 503,
        early_completed_task: false,
    },
    // Supermicro X11/X12.
    RedfishProfile {
        name: "supermicro",
        summary: "Supermicro X12: the Reset's task reports Completed before power changes, 4 sessions",
        vendor: "Supermicro",
        product: "X12DPi-NT6",
        manufacturer: "Supermicro",
        model: "SYS-620P-TRT",
        firmware: "01.01.04",
        system_id: "1",
        chassis_id: "1",
        manager_id: "1",
        reset_types: &[
            "On",
            "ForceOff",
            "GracefulShutdown",
            "GracefulRestart",
            "ForceRestart",
            "Nmi",
            "ForceOn",
        ],
        // No public source found for the X12's transition time; chosen: 2 s.
        transition: Duration::from_millis(2000),
        same_state_status: None,
        same_state_message: "",
        // No public source found for the Redfish session limit (the only Supermicro figure
        // found, GraphicalConsole MaxConcurrentSessions 4 on a P9DSU BMC in
        // xcat2/xcat-core#5969, counts KVM sessions); chosen: 4, a small limit.
        max_sessions: 4,
        session_limit_status: 503,
        // Success reported before the operation completes: "power on/off commands are open
        // loop" (chaos/powerman#33), "Redfish returns success ... before it actually
        // completes" (ibm-openbmc/dev#3595), a reset task "Completed" at once
        // (device-management-toolkit/console#1051). No public source found that names
        // Supermicro for it; chosen for this profile so one profile exercises the quirk.
        early_completed_task: true,
    },
    // Lenovo XClarity Controller.
    RedfishProfile {
        name: "xcc",
        summary: "Lenovo XCC: 400 on a reset into the current state, PoweringOff for seconds, 4 sessions",
        vendor: "Lenovo",
        product: "XClarity Controller",
        manufacturer: "Lenovo",
        model: "ThinkSystem SR650 V2",
        firmware: "AFBT46N",
        system_id: "1",
        chassis_id: "1",
        manager_id: "1",
        reset_types: &[
            "On",
            "Nmi",
            "GracefulShutdown",
            "GracefulRestart",
            "ForceOn",
            "ForceOff",
            "ForceRestart",
        ],
        // No public source found for the XCC's transition time; chosen: 2 s.
        transition: Duration::from_millis(2000),
        // No public source found for what the XCC answers to a reset into the current state
        // (lenovo/python-redfish-lenovo#308 shows its errors use the standard Base
        // registry); chosen: 400 with a Base MessageId, so one profile refuses with a
        // standard rather than a vendor message.
        same_state_status: Some(400),
        same_state_message: "Base.1.8.ActionNotSupported",
        // No public source found for the XCC's session limit; chosen: 4, a small limit.
        max_sessions: 4,
        session_limit_status: 503,
        early_completed_task: false,
    },
];

/// The Redfish profile named `name`.
pub fn redfish_profile(name: &str) -> Option<&'static RedfishProfile> {
    REDFISH_PROFILES.iter().find(|p| p.name == name)
}

/// How an IPMI BMC family behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpmiProfile {
    /// `--profile` name.
    pub name: &'static str,
    /// One line for `--help`.
    pub summary: &'static str,
    /// Most sessions at once; more are refused with RMCP+ status 01h (§13.24).
    pub max_sessions: usize,
    /// The cipher suites the BMC accepts (3 and/or 17).
    pub suites: &'static [u8],
    /// How long a power change takes.
    pub transition: Duration,
    /// How long Get Chassis Status keeps reporting the state from before a power change.
    pub status_lag: Duration,
}

/// Every IPMI profile, the lab's own first.
pub const IPMI_PROFILES: &[IpmiProfile] = &[
    IpmiProfile {
        name: "palisade",
        summary: "the lab's own: suites 3 and 17, 32 sessions, no lag (default)",
        max_sessions: 32,
        suites: &[3, 17],
        transition: Duration::ZERO,
        status_lag: Duration::ZERO,
    },
    IpmiProfile {
        name: "idrac",
        summary: "Dell iDRAC: 5 sessions, suites 3 and 17, chassis status lags a power command",
        // No public source found for iDRAC's IPMI-over-LAN session count; chosen: 5, so
        // one profile sits near the 4-5 sessions operators report for small BMCs.
        max_sessions: 5,
        suites: &[3, 17],
        // No public source found for the time; chosen: 1 s, as the Redfish idrac row.
        transition: Duration::from_millis(1000),
        // Dell answers "Command not supported in present state" to an off when already off
        // (bmc-toolbox/bmclib#417); status that trails the change is what made
        // home-assistant-ipmi add an off delay (ateodorescu/home-assistant-ipmi#39).
        status_lag: Duration::from_millis(1000),
    },
    IpmiProfile {
        name: "ilo",
        summary: "HPE iLO 5: only cipher suite 17 (3 disabled), 4 sessions",
        // No public source found for iLO's IPMI session count; chosen: 4, a small limit.
        max_sessions: 4,
        // Vendors dropping suite 3 (chu11/freeipmi-mirror#82; Intel disabled it and
        // recommends 17, xcat2/xcat-core#6002; ipmitool/ipmitool#29).
        suites: &[17],
        // No public source found for the time; chosen: 1.5 s, as the Redfish ilo row.
        transition: Duration::from_millis(1500),
        status_lag: Duration::ZERO,
    },
    IpmiProfile {
        name: "openbmc",
        summary: "OpenBMC ipmid: the state follows seconds after the command, status lags",
        // phosphor-net-ipmid allows 15 sessions per LAN channel (maxSessionCountPerChannel
        // in openbmc/phosphor-net-ipmid session.hpp) and refuses more with "insufficient
        // resources for session" (openbmc/openbmc#1241).
        max_sessions: 15,
        suites: &[3, 17],
        // Power state still 0 minutes after a power-on (openbmc/openbmc#804); chassis state
        // out of step with the host's (openbmc/openbmc#1933). Those report minutes; no
        // public source found for a typical figure; chosen: 3 s and 1.5 s, so tests stay
        // short.
        transition: Duration::from_millis(3000),
        status_lag: Duration::from_millis(1500),
    },
    IpmiProfile {
        name: "supermicro",
        summary: "Supermicro: 4 sessions, suites 3 and 17",
        // No public source found for Supermicro's IPMI session count, transition or lag;
        // chosen: 4 sessions, 2 s (as the Redfish row) and a 0.5 s lag, so one profile
        // has a lag shorter than its transition.
        max_sessions: 4,
        suites: &[3, 17],
        transition: Duration::from_millis(2000),
        status_lag: Duration::from_millis(500),
    },
    IpmiProfile {
        name: "xcc",
        summary: "Lenovo XCC: only cipher suite 17, 4 sessions",
        // No public source found for the XCC's IPMI session count; chosen: 4.
        max_sessions: 4,
        // Suite 17 by default on recent firmware, as Intel's (xcat2/xcat-core#6002 names
        // Lenovo's pyghmi gaining HMAC-SHA256 for it).
        suites: &[17],
        // No public source found for the time; chosen: 2 s, as the Redfish xcc row.
        transition: Duration::from_millis(2000),
        status_lag: Duration::ZERO,
    },
];

/// The IPMI profile named `name`.
pub fn ipmi_profile(name: &str) -> Option<&'static IpmiProfile> {
    IPMI_PROFILES.iter().find(|p| p.name == name)
}

/// `--help` text: one line per profile of both kinds.
pub fn profiles_help(redfish: bool) -> String {
    let mut s =
        String::from("Profiles (`--profile NAME`; knobs given after it override its values):\n");
    if redfish {
        for p in REDFISH_PROFILES {
            s.push_str(&format!("  {:<11} {}\n", p.name, p.summary));
        }
    } else {
        for p in IPMI_PROFILES {
            s.push_str(&format!("  {:<11} {}\n", p.name, p.summary));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_every_redfish_profile_can_power_off_and_on() {
        for (i, p) in REDFISH_PROFILES.iter().enumerate() {
            assert!(REDFISH_PROFILES[..i].iter().all(|q| q.name != p.name));
            assert!(p.reset_types.contains(&"ForceOff"), "{}", p.name);
            assert!(p.reset_types.contains(&"On"), "{}", p.name);
        }
        for (i, p) in IPMI_PROFILES.iter().enumerate() {
            assert!(IPMI_PROFILES[..i].iter().all(|q| q.name != p.name));
            assert!(p.suites.iter().all(|s| [3, 17].contains(s)), "{}", p.name);
            assert!(p.max_sessions > 0);
        }
    }
}
