//! Vendor models as data: for each PDU family, the OID columns of outlet state, outlet
//! control and outlet name (the outlet's table index is appended), the values that mean on
//! and off, and where the serial number is.
//!
//! Written from the vendors' MIBs (APC PowerNet-MIB: sPDUOutletCtl, rPDUOutletControl /
//! rPDUOutletStatus, rPDU2OutletSwitchedControl / rPDU2OutletSwitchedStatus; Tripp Lite
//! TRIPPLITE-PRODUCTS; Eaton EATON-EPDU-MIB outletControlTable; Raritan PDU2-MIB
//! outletSwitchControlTable; Server Technology Sentry3-MIB outletTable and Sentry4-MIB
//! st4OutletControlTable) and checked against the families ClusterLabs `fence_apc_snmp`
//! drives, so a PDU that agent fences is one this driver fences. The OIDs of the MIB-backed
//! rows were checked by `snmptranslate -On` against the vendors' published MIB texts
//! (hw-tests/figures/pdu-profiles.md says which texts and how).
//!
//! Only the immediate commands are ever sent: a fencer must not leave an outlet switching
//! "later" (APC delayedOff, Eaton's off-after-N-seconds, Sentry4 queueOff), and whatever the
//! command, fencing is confirmed only by reading the state column back.

use super::ber::Oid;

/// One PDU family's OIDs and values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// The name used in the configuration (`model = "apc-rpdu"`).
    pub name: &'static str,
    /// For operators.
    pub description: &'static str,
    /// The sysObjectID such PDUs report, where one is characteristic.
    pub sys_object_id: Option<&'static str>,
    /// Outlet state column (read).
    pub state: &'static str,
    /// Outlet control column (written); the one for off when `control_on` is set.
    pub control: &'static str,
    /// A separate column for switching on (Eaton's outletControlOnCmd beside
    /// outletControlOffCmd); `None`: `control` takes both commands.
    pub control_on: Option<&'static str>,
    /// Outlet name column (read by `list`, and to check a named outlet).
    pub names: &'static str,
    /// Sub-identifiers between a column and the outlet number (Tripp Lite's tables are
    /// indexed by device then outlet: `.1.N`; Sentry's by tower/unit and infeed/cord:
    /// `.1.1.N`; Eaton's by daisy-chain position, 0 for the first unit: `.0.N`).
    pub index_prefix: &'static [u32],
    /// State value meaning on.
    pub state_on: i64,
    /// State value meaning off.
    pub state_off: i64,
    /// Control value that switches on immediately.
    pub command_on: i64,
    /// Control value that switches off immediately.
    pub command_off: i64,
    /// State values (going off, going on) that mean a command is accepted but not carried
    /// out yet (Eaton pendingOff/pendingOn, Sentry3 offWait/onWait). The driver reads them,
    /// like any value but `state_on`/`state_off`, as unknown: never as off.
    pub state_pending: Option<(i64, i64)>,
    /// Full OID of the serial number, if the family has one; otherwise sysName identifies.
    pub serial: Option<&'static str>,
    /// Outlet active-power column in watts, on families that meter each outlet (APC
    /// rPDU2OutletMeteredStatusPower); `None` where the driver knows no such column. The
    /// `power-path` witness's `max_watts` reads it.
    pub outlet_watts: Option<&'static str>,
}

/// Every model the driver knows, the APC families first.
pub const MODELS: &[Model] = &[
    Model {
        name: "apc-rpdu",
        description: "APC Switched Rack PDU, rPDU (AP79xx, AOS 3.x; PowerNet-MIB rPDUOutletControl)",
        sys_object_id: Some("1.3.6.1.4.1.318.1.3.4.5"),
        state: "1.3.6.1.4.1.318.1.1.12.3.5.1.1.4",
        control: "1.3.6.1.4.1.318.1.1.12.3.3.1.1.4",
        names: "1.3.6.1.4.1.318.1.1.12.3.5.1.1.2",
        control_on: None,
        index_prefix: &[],
        // rPDUOutletStatusOutletState: outletStatusOn(1), outletStatusOff(2);
        // rPDUOutletControlOutletCommand: immediateOn(1), immediateOff(2).
        state_on: 1,
        state_off: 2,
        command_on: 1,
        command_off: 2,
        state_pending: None,
        serial: Some("1.3.6.1.4.1.318.1.1.12.1.6.0"),
        outlet_watts: None,
    },
    Model {
        name: "apc-rpdu2",
        description: "APC Switched Rack PDU 2G, rPDU2 (AP86xx/AP89xx; PowerNet-MIB rPDU2OutletSwitched)",
        sys_object_id: None,
        state: "1.3.6.1.4.1.318.1.1.26.9.2.3.1.5",
        control: "1.3.6.1.4.1.318.1.1.26.9.2.4.1.5",
        names: "1.3.6.1.4.1.318.1.1.26.9.2.3.1.3",
        control_on: None,
        index_prefix: &[],
        // rPDU2OutletSwitchedStatusState: off(1), on(2) — the reverse of rPDU's order;
        // rPDU2OutletSwitchedControlCommand: immediateOn(1), immediateOff(2).
        state_on: 2,
        state_off: 1,
        command_on: 1,
        command_off: 2,
        state_pending: None,
        serial: Some("1.3.6.1.4.1.318.1.1.26.2.1.9.1"),
        // rPDU2OutletMeteredStatusPower (rPDU2OutletMeteredStatusTable .26.9.4.3, column 7):
        // the outlet's load in watts, on metered-by-outlet units (AP86xx, AP88xx). Indexed by
        // rPDU2OutletMeteredStatusIndex, which on a single (not daisy-chained) unit is the
        // outlet number. Units without outlet metering answer noSuchInstance: a read error,
        // which the witness takes as no evidence.
        // Checked against APC's PowerNet-MIB v4.5.2 (2023-11-08), as kept in
        // github.com/DotZero24/pysnmp-mibs mibs/apc/PowerNet-MIB (commit 3ff4d5d0): apc = 318,
        // products 1, hardware 1, rPDU2 26, rPDU2Outlet 9, rPDU2OutletMetered 4, StatusTable 3,
        // Entry 1, Power 7; SYNTAX INTEGER, read-only. Its DESCRIPTION names no unit (unlike
        // the same entry's current, "tenths of Amps", or rPDU2DeviceStatusPower, "hundredths
        // of kilowatts"), but the sibling rPDU2OutletMeteredConfigTable's thresholds for the
        // same outlets (LowLoad/NearOverload/OverloadCurrentThreshold) are "in Watts": whole
        // watts, no scaling, which is what `watts_of` (pdu/device.rs) assumes.
        outlet_watts: Some("1.3.6.1.4.1.318.1.1.26.9.4.3.1.7"),
    },
    Model {
        name: "apc-masterswitch",
        description: "APC MasterSwitch (AP96xx; PowerNet-MIB sPDUOutletCtl), also the fallback of fence_apc_snmp",
        sys_object_id: None,
        state: "1.3.6.1.4.1.318.1.1.4.4.2.1.3",
        control: "1.3.6.1.4.1.318.1.1.4.4.2.1.3",
        names: "1.3.6.1.4.1.318.1.1.4.4.2.1.4",
        control_on: None,
        index_prefix: &[],
        // sPDUOutletCtl: outletOn(1), outletOff(2), outletReboot(3), outletUnknown(4), ...
        state_on: 1,
        state_off: 2,
        command_on: 1,
        command_off: 2,
        state_pending: None,
        serial: Some("1.3.6.1.4.1.318.1.1.4.1.5.0"),
        outlet_watts: None,
    },
    Model {
        name: "apc-masterswitch-v6",
        description: "APC MasterSwitch with firmware 6.x (state in sPDUOutletCtl, control in rPDUOutletControl)",
        sys_object_id: Some("1.3.6.1.4.1.318.1.3.4.6"),
        state: "1.3.6.1.4.1.318.1.1.4.4.2.1.3",
        control: "1.3.6.1.4.1.318.1.1.12.3.3.1.1.4",
        names: "1.3.6.1.4.1.318.1.1.4.4.2.1.4",
        control_on: None,
        index_prefix: &[],
        state_on: 1,
        state_off: 2,
        command_on: 1,
        command_off: 2,
        state_pending: None,
        serial: Some("1.3.6.1.4.1.318.1.1.4.1.5.0"),
        outlet_watts: None,
    },
    Model {
        name: "tripplite",
        description: "Tripp Lite switched PDU (PDUMH...NET; TRIPPLITE-PRODUCTS tlpPduOutlet)",
        sys_object_id: Some("1.3.6.1.4.1.850.1"),
        state: "1.3.6.1.4.1.850.10.2.3.5.1.2",
        control: "1.3.6.1.4.1.850.10.2.3.5.1.4",
        names: "1.3.6.1.4.1.850.10.2.3.5.1.5",
        control_on: None,
        index_prefix: &[1],
        // tlpPduOutletState: off(1), on(2); tlpPduOutletCommand: turnOff(1), turnOn(2).
        state_on: 2,
        state_off: 1,
        command_on: 2,
        command_off: 1,
        state_pending: None,
        serial: None,
        outlet_watts: None,
    },
    Model {
        name: "tripplite-lx",
        description: "Tripp Lite switched PDU with the LX platform (TRIPPLITE-PRODUCTS tlpPduOutletTable under tlpPdu 850.1.1.3.2)",
        // fence_tripplite_snmp picks its TrippliteLXPDU class by this sysObjectID.
        sys_object_id: Some("1.3.6.1.4.1.850.1.1.1"),
        // tlpPduOutletState, tlpPduOutletCommand, tlpPduOutletName; INDEX { tlpDeviceIndex,
        // tlpPduOutletIndex }.
        state: "1.3.6.1.4.1.850.1.1.3.2.3.3.1.1.4",
        control: "1.3.6.1.4.1.850.1.1.3.2.3.3.1.1.6",
        control_on: None,
        names: "1.3.6.1.4.1.850.1.1.3.2.3.3.1.1.2",
        index_prefix: &[1],
        // tlpPduOutletState: unknown(0), off(1), on(2);
        // tlpPduOutletCommand: idle(0), turnOff(1), turnOn(2), cycle(3).
        state_on: 2,
        state_off: 1,
        command_on: 2,
        command_off: 1,
        state_pending: None,
        serial: None,
        outlet_watts: None,
    },
    Model {
        name: "eaton-epdu",
        description: "Eaton ePDU G2/G3 switched (EATON-EPDU-MIB outletControlTable, eatonEpdu 534.6.6.7)",
        sys_object_id: Some("1.3.6.1.4.1.534.6.6.7"),
        // outletControlStatus, outletControlOffCmd, outletControlOnCmd, outletName
        // (outletConfigurationTable); INDEX { strappingIndex, outletIndex }, strappingIndex
        // 0 being the first (or only) unit of a daisy chain.
        state: "1.3.6.1.4.1.534.6.6.7.6.6.1.2",
        control: "1.3.6.1.4.1.534.6.6.7.6.6.1.3",
        control_on: Some("1.3.6.1.4.1.534.6.6.7.6.6.1.4"),
        names: "1.3.6.1.4.1.534.6.6.7.6.1.1.3",
        index_prefix: &[0],
        // outletControlStatus: off(0), on(1), pendingOff(2), pendingOn(3).
        // outletControl{Off,On}Cmd: Integer32 (-1..99999), seconds until the command is
        // carried out: 0 is immediate, -1 cancels; it reads -1 when nothing is pending.
        state_on: 1,
        state_off: 0,
        command_on: 0,
        command_off: 0,
        state_pending: Some((2, 3)),
        // serialNumber.0 (unitTable, INDEX { unitIndex }, 0 for the first unit).
        serial: Some("1.3.6.1.4.1.534.6.6.7.1.2.1.4.0"),
        outlet_watts: None,
    },
    Model {
        name: "raritan-px2",
        description: "Raritan PX2/PX3 (PDU2-MIB outletSwitchControlTable, pdu2 13742.6)",
        sys_object_id: Some("1.3.6.1.4.1.13742.6"),
        // outletSwitchingState, switchingOperation, outletName (outletConfigurationTable);
        // INDEX { pduId, outletId }, pduId 1 for a stand-alone PDU.
        state: "1.3.6.1.4.1.13742.6.4.1.2.1.3",
        control: "1.3.6.1.4.1.13742.6.4.1.2.1.2",
        control_on: None,
        names: "1.3.6.1.4.1.13742.6.3.5.3.1.3",
        index_prefix: &[1],
        // outletSwitchingState is a SensorStateEnumeration: on(7), off(8);
        // switchingOperation: off(0), on(1), cycle(2).
        state_on: 7,
        state_off: 8,
        command_on: 1,
        command_off: 0,
        state_pending: None,
        // pduSerialNumber.1.
        serial: Some("1.3.6.1.4.1.13742.6.3.2.1.1.4.1"),
        outlet_watts: None,
    },
    Model {
        name: "sentry3",
        description: "Server Technology Sentry CDU, 3rd generation (Sentry3-MIB outletTable, sentry3 1718.3)",
        sys_object_id: Some("1.3.6.1.4.1.1718.3"),
        // outletStatus, outletControlAction, outletName; INDEX { towerIndex, infeedIndex,
        // outletIndex }: tower A, infeed A is .1.1.
        state: "1.3.6.1.4.1.1718.3.2.3.1.5",
        control: "1.3.6.1.4.1.1718.3.2.3.1.11",
        control_on: None,
        names: "1.3.6.1.4.1.1718.3.2.3.1.3",
        index_prefix: &[1, 1],
        // outletStatus: off(0), on(1), offWait(2), onWait(3), offError(4), onError(5),
        // noComm(6), reading(7), offFuse(8), onFuse(9);
        // outletControlAction: none(0), on(1), off(2), reboot(3).
        state_on: 1,
        state_off: 0,
        command_on: 1,
        command_off: 2,
        state_pending: Some((2, 3)),
        // systemNICSerialNumber.0.
        serial: Some("1.3.6.1.4.1.1718.3.1.2.0"),
        outlet_watts: None,
    },
    Model {
        name: "sentry4",
        description: "Server Technology Sentry/PRO2, 4th generation (Sentry4-MIB st4OutletControlTable, sentry4 1718.4)",
        sys_object_id: Some("1.3.6.1.4.1.1718.4"),
        // st4OutletState (st4OutletStatusTable), st4OutletControlAction,
        // st4OutletName; INDEX { st4UnitIndex, st4InputCordIndex, st4OutletIndex }.
        state: "1.3.6.1.4.1.1718.4.1.8.3.1.1",
        control: "1.3.6.1.4.1.1718.4.1.8.5.1.2",
        control_on: None,
        names: "1.3.6.1.4.1.1718.4.1.8.2.1.3",
        index_prefix: &[1, 1],
        // st4OutletState: unknown(0), on(1), off(2);
        // st4OutletControlAction: none(0), on(1), off(2), reboot(3), queueOn(4),
        // queueOff(5), queueReboot(6).
        state_on: 1,
        state_off: 2,
        command_on: 1,
        command_off: 2,
        state_pending: None,
        // st4SystemNICSerialNumber.0.
        serial: Some("1.3.6.1.4.1.1718.4.1.1.1.5.0"),
        outlet_watts: None,
    },
];

/// sysDescr.0.
pub const SYS_DESCR: &str = "1.3.6.1.2.1.1.1.0";
/// sysObjectID.0.
pub const SYS_OBJECT_ID: &str = "1.3.6.1.2.1.1.2.0";
/// sysName.0.
pub const SYS_NAME: &str = "1.3.6.1.2.1.1.5.0";

/// The model named `name`.
pub fn by_name(name: &str) -> Option<&'static Model> {
    MODELS.iter().find(|m| m.name == name)
}

/// The names of every model, for error messages.
pub fn names() -> String {
    MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}

/// Parses a dotted OID constant of this table.
pub fn oid(s: &str) -> Oid {
    s.parse().unwrap_or_default()
}

impl Model {
    /// The OID of `outlet`'s row in `column` (one of this model's columns).
    pub fn at_column(&self, column: &str, outlet: u32) -> Oid {
        let mut idx = self.index_prefix.to_vec();
        idx.push(outlet);
        oid(column).child(&idx)
    }

    /// The state OID of `outlet`.
    pub fn state_oid(&self, outlet: u32) -> Oid {
        self.at_column(self.state, outlet)
    }

    /// The control OID of `outlet` that takes the off command.
    pub fn control_oid(&self, outlet: u32) -> Oid {
        self.at_column(self.control, outlet)
    }

    /// The control OID and value that switch `outlet` on (`on`) or off, immediately.
    pub fn command(&self, outlet: u32, on: bool) -> (Oid, i64) {
        match (on, self.control_on) {
            (true, Some(column)) => (self.at_column(column, outlet), self.command_on),
            (true, None) => (self.at_column(self.control, outlet), self.command_on),
            (false, _) => (self.at_column(self.control, outlet), self.command_off),
        }
    }

    /// The name OID of `outlet`.
    pub fn name_oid(&self, outlet: u32) -> Oid {
        self.at_column(self.names, outlet)
    }

    /// The active-power OID of `outlet`, on families that meter each outlet.
    pub fn watts_oid(&self, outlet: u32) -> Option<Oid> {
        self.outlet_watts.map(|c| self.at_column(c, outlet))
    }

    /// The outlet number of a name-column OID, if it is one of this model's rows.
    pub fn outlet_of_name_oid(&self, o: &Oid) -> Option<u32> {
        match o.suffix(&oid(self.names))? {
            [prefix @ .., n] if prefix == self.index_prefix => Some(*n),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_parses_and_indexes() {
        for m in MODELS {
            for col in [m.state, m.control, m.names]
                .into_iter()
                .chain(m.control_on)
            {
                assert!(col.parse::<Oid>().is_ok(), "{}: {col}", m.name);
            }
            assert_ne!(m.state_on, m.state_off);
            if let Some((off, on)) = m.state_pending {
                for v in [off, on] {
                    assert!(v != m.state_on && v != m.state_off, "{}", m.name);
                }
            }
            // On and off must differ by value or by column.
            assert_ne!(m.command(7, true), m.command(7, false), "{}", m.name);
            assert_eq!(m.outlet_of_name_oid(&m.name_oid(7)), Some(7));
            assert_eq!(m.outlet_of_name_oid(&m.state_oid(7)), None);
        }
        assert_eq!(
            by_name("tripplite").unwrap().state_oid(3).to_string(),
            "1.3.6.1.4.1.850.10.2.3.5.1.2.1.3"
        );
        let eaton = by_name("eaton-epdu").unwrap();
        assert_eq!(
            eaton.command(4, true).0.to_string(),
            "1.3.6.1.4.1.534.6.6.7.6.6.1.4.0.4"
        );
        assert_eq!(
            by_name("sentry3").unwrap().state_oid(2).to_string(),
            "1.3.6.1.4.1.1718.3.2.3.1.5.1.1.2"
        );
    }
}
