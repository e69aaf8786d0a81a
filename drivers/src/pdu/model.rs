//! Vendor models as data: for each PDU family, the OID columns of outlet state, outlet
//! control and outlet name (the outlet's table index is appended), the values that mean on
//! and off, and where the serial number is.
//!
//! Written from the vendors' MIBs (APC PowerNet-MIB: sPDUOutletCtl, rPDUOutletControl /
//! rPDUOutletStatus, rPDU2OutletSwitchedControl / rPDU2OutletSwitchedStatus; Tripp Lite
//! TRIPPLITE-PRODUCTS) and checked against the families ClusterLabs `fence_apc_snmp`
//! drives, so a PDU that agent fences is one this driver fences.

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
    /// Outlet control column (written).
    pub control: &'static str,
    /// Outlet name column (read by `list`, and to check a named outlet).
    pub names: &'static str,
    /// Sub-identifiers between a column and the outlet number (Tripp Lite's tables are
    /// indexed by device then outlet: `.1.N`).
    pub index_prefix: &'static [u32],
    /// State value meaning on.
    pub state_on: i64,
    /// State value meaning off.
    pub state_off: i64,
    /// Control value that switches on immediately.
    pub command_on: i64,
    /// Control value that switches off immediately.
    pub command_off: i64,
    /// Full OID of the serial number, if the family has one; otherwise sysName identifies.
    pub serial: Option<&'static str>,
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
        index_prefix: &[],
        // rPDUOutletStatusOutletState: outletStatusOn(1), outletStatusOff(2);
        // rPDUOutletControlOutletCommand: immediateOn(1), immediateOff(2).
        state_on: 1,
        state_off: 2,
        command_on: 1,
        command_off: 2,
        serial: Some("1.3.6.1.4.1.318.1.1.12.1.6.0"),
    },
    Model {
        name: "apc-rpdu2",
        description: "APC Switched Rack PDU 2G, rPDU2 (AP86xx/AP89xx; PowerNet-MIB rPDU2OutletSwitched)",
        sys_object_id: None,
        state: "1.3.6.1.4.1.318.1.1.26.9.2.3.1.5",
        control: "1.3.6.1.4.1.318.1.1.26.9.2.4.1.5",
        names: "1.3.6.1.4.1.318.1.1.26.9.2.3.1.3",
        index_prefix: &[],
        // rPDU2OutletSwitchedStatusState: off(1), on(2) — the reverse of rPDU's order;
        // rPDU2OutletSwitchedControlCommand: immediateOn(1), immediateOff(2).
        state_on: 2,
        state_off: 1,
        command_on: 1,
        command_off: 2,
        serial: Some("1.3.6.1.4.1.318.1.1.26.2.1.9.1"),
    },
    Model {
        name: "apc-masterswitch",
        description: "APC MasterSwitch (AP96xx; PowerNet-MIB sPDUOutletCtl), also the fallback of fence_apc_snmp",
        sys_object_id: None,
        state: "1.3.6.1.4.1.318.1.1.4.4.2.1.3",
        control: "1.3.6.1.4.1.318.1.1.4.4.2.1.3",
        names: "1.3.6.1.4.1.318.1.1.4.4.2.1.4",
        index_prefix: &[],
        // sPDUOutletCtl: outletOn(1), outletOff(2), outletReboot(3), outletUnknown(4), ...
        state_on: 1,
        state_off: 2,
        command_on: 1,
        command_off: 2,
        serial: Some("1.3.6.1.4.1.318.1.1.4.1.5.0"),
    },
    Model {
        name: "apc-masterswitch-v6",
        description: "APC MasterSwitch with firmware 6.x (state in sPDUOutletCtl, control in rPDUOutletControl)",
        sys_object_id: Some("1.3.6.1.4.1.318.1.3.4.6"),
        state: "1.3.6.1.4.1.318.1.1.4.4.2.1.3",
        control: "1.3.6.1.4.1.318.1.1.12.3.3.1.1.4",
        names: "1.3.6.1.4.1.318.1.1.4.4.2.1.4",
        index_prefix: &[],
        state_on: 1,
        state_off: 2,
        command_on: 1,
        command_off: 2,
        serial: Some("1.3.6.1.4.1.318.1.1.4.1.5.0"),
    },
    Model {
        name: "tripplite",
        description: "Tripp Lite switched PDU (PDUMH...NET; TRIPPLITE-PRODUCTS tlpPduOutlet)",
        sys_object_id: Some("1.3.6.1.4.1.850.1"),
        state: "1.3.6.1.4.1.850.10.2.3.5.1.2",
        control: "1.3.6.1.4.1.850.10.2.3.5.1.4",
        names: "1.3.6.1.4.1.850.10.2.3.5.1.5",
        index_prefix: &[1],
        // tlpPduOutletState: off(1), on(2); tlpPduOutletCommand: turnOff(1), turnOn(2).
        state_on: 2,
        state_off: 1,
        command_on: 2,
        command_off: 1,
        serial: None,
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
    fn at(&self, column: &str, outlet: u32) -> Oid {
        let mut idx = self.index_prefix.to_vec();
        idx.push(outlet);
        oid(column).child(&idx)
    }

    /// The state OID of `outlet`.
    pub fn state_oid(&self, outlet: u32) -> Oid {
        self.at(self.state, outlet)
    }

    /// The control OID of `outlet`.
    pub fn control_oid(&self, outlet: u32) -> Oid {
        self.at(self.control, outlet)
    }

    /// The name OID of `outlet`.
    pub fn name_oid(&self, outlet: u32) -> Oid {
        self.at(self.names, outlet)
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
            for col in [m.state, m.control, m.names] {
                assert!(col.parse::<Oid>().is_ok(), "{}: {col}", m.name);
            }
            assert_ne!(m.state_on, m.state_off);
            assert_ne!(m.command_on, m.command_off);
            assert_eq!(m.outlet_of_name_oid(&m.name_oid(7)), Some(7));
            assert_eq!(m.outlet_of_name_oid(&m.state_oid(7)), None);
        }
        assert_eq!(
            by_name("tripplite").unwrap().state_oid(3).to_string(),
            "1.3.6.1.4.1.850.10.2.3.5.1.2.1.3"
        );
    }
}
