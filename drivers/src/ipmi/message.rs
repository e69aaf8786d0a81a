//! IPMI messages: LAN message framing (§13.8) and the bodies of the commands the fencing path
//! uses, plus the RMCP+ session-setup payloads (Open Session, RAKP 1–4, §13.17–§13.23).
//!
//! Every body has both directions (`encode` and `decode`) for requests and responses, so a BMC
//! simulator decodes what the client encodes and vice versa. Response bodies exclude the
//! completion code, which lives in [`IpmiResponse`].

use super::{byte, le32, take, WireError};

/// Slave address of the BMC (§13.8: responder address on the LAN channel).
pub const BMC_SLAVE_ADDR: u8 = 0x20;
/// Software id of a remote console (§5.5: 0x81 is "remote console software 1").
pub const REMOTE_CONSOLE_SWID: u8 = 0x81;
/// Network function: chassis requests.
pub const NETFN_CHASSIS: u8 = 0x00;
/// Network function: application requests.
pub const NETFN_APP: u8 = 0x06;

/// Privilege level: callback.
pub const PRIV_CALLBACK: u8 = 0x01;
/// Privilege level: user (may read status, may not control power).
pub const PRIV_USER: u8 = 0x02;
/// Privilege level: operator (enough for Chassis Control).
pub const PRIV_OPERATOR: u8 = 0x03;
/// Privilege level: administrator.
pub const PRIV_ADMINISTRATOR: u8 = 0x04;
/// RAKP 1 role bit 4: look the user up by name only, not by name and privilege (§13.20).
pub const ROLE_NAME_ONLY_LOOKUP: u8 = 0x10;

/// Two's-complement checksum: the bytes plus the checksum sum to zero (§13.8).
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |acc, &b| acc.wrapping_add(b))
        .wrapping_neg()
}

fn check(bytes: &[u8], sum: u8, what: &'static str) -> Result<(), WireError> {
    if checksum(bytes) == sum {
        Ok(())
    } else {
        Err(WireError::Mismatch { what })
    }
}

/// An IPMI request message as framed on LAN: rsAddr, netFn/rsLUN, checksum, rqAddr,
/// rqSeq/rqLUN, cmd, data, checksum (§13.8, Table 13-4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpmiRequest {
    /// Responder's slave address (the BMC, 0x20).
    pub rs_addr: u8,
    /// Network function (even: a request), 6 bits.
    pub net_fn: u8,
    /// Responder's LUN, 2 bits.
    pub rs_lun: u8,
    /// Requester's address (0x81 for a remote console).
    pub rq_addr: u8,
    /// Request sequence number, 6 bits: how a response is matched to its request.
    pub rq_seq: u8,
    /// Requester's LUN, 2 bits.
    pub rq_lun: u8,
    /// Command number.
    pub cmd: u8,
    /// Request data.
    pub data: Vec<u8>,
}

/// An IPMI response message as framed on LAN (§13.8, Table 13-5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpmiResponse {
    /// Requester's address the response goes back to.
    pub rq_addr: u8,
    /// Network function of the response (the request's plus one), 6 bits.
    pub net_fn: u8,
    /// Requester's LUN, 2 bits.
    pub rq_lun: u8,
    /// Responder's address.
    pub rs_addr: u8,
    /// The request's sequence number, echoed, 6 bits.
    pub rq_seq: u8,
    /// Responder's LUN, 2 bits.
    pub rs_lun: u8,
    /// Command number, echoed.
    pub cmd: u8,
    /// Completion code (0 = success, §5.2 Table 5-2).
    pub completion_code: u8,
    /// Response data after the completion code.
    pub data: Vec<u8>,
}

fn encode_frame(a: u8, netfn_lun: u8, b: u8, seq_lun: u8, cmd: u8, rest: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![a, netfn_lun, checksum(&[a, netfn_lun]), b, seq_lun, cmd];
    for r in rest {
        out.extend_from_slice(r);
    }
    let sum = checksum(out.get(3..).unwrap_or_default());
    out.push(sum);
    out
}

/// Splits a framed message into its six header bytes and body, checking both checksums.
fn decode_frame(buf: &[u8]) -> Result<([u8; 6], &[u8]), WireError> {
    let h = take::<6>(buf, 0, "IPMI message header")?;
    let (&sum2, without_sum) = buf.split_last().ok_or(WireError::Truncated {
        what: "IPMI message",
        needed: 7,
        got: 0,
    })?;
    if buf.len() < 7 {
        return Err(WireError::Truncated {
            what: "IPMI message",
            needed: 7,
            got: buf.len(),
        });
    }
    check(&h[..2], h[2], "IPMI header checksum")?;
    check(
        without_sum.get(3..).unwrap_or_default(),
        sum2,
        "IPMI data checksum",
    )?;
    Ok((h, without_sum.get(6..).unwrap_or_default()))
}

impl IpmiRequest {
    /// A request from a remote console to the BMC's LUN 0 (what every fencing call sends).
    pub fn to_bmc(net_fn: u8, cmd: u8, rq_seq: u8, data: Vec<u8>) -> Self {
        Self {
            rs_addr: BMC_SLAVE_ADDR,
            net_fn,
            rs_lun: 0,
            rq_addr: REMOTE_CONSOLE_SWID,
            rq_seq,
            rq_lun: 0,
            cmd,
            data,
        }
    }

    /// Frames the request. Out-of-range bit fields are masked to their width.
    pub fn encode(&self) -> Vec<u8> {
        encode_frame(
            self.rs_addr,
            (self.net_fn << 2) | (self.rs_lun & 3),
            self.rq_addr,
            (self.rq_seq << 2) | (self.rq_lun & 3),
            self.cmd,
            &[&self.data],
        )
    }

    /// Parses a framed request, checking both checksums.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let (h, data) = decode_frame(buf)?;
        Ok(Self {
            rs_addr: h[0],
            net_fn: h[1] >> 2,
            rs_lun: h[1] & 3,
            rq_addr: h[3],
            rq_seq: h[4] >> 2,
            rq_lun: h[4] & 3,
            cmd: h[5],
            data: data.to_vec(),
        })
    }

    /// The response a BMC sends to this request, with the given completion code and data.
    pub fn response(&self, completion_code: u8, data: Vec<u8>) -> IpmiResponse {
        IpmiResponse {
            rq_addr: self.rq_addr,
            net_fn: (self.net_fn | 1) & 0x3F,
            rq_lun: self.rq_lun,
            rs_addr: self.rs_addr,
            rq_seq: self.rq_seq,
            rs_lun: self.rs_lun,
            cmd: self.cmd,
            completion_code,
            data,
        }
    }
}

impl IpmiResponse {
    /// Frames the response.
    pub fn encode(&self) -> Vec<u8> {
        encode_frame(
            self.rq_addr,
            (self.net_fn << 2) | (self.rq_lun & 3),
            self.rs_addr,
            (self.rq_seq << 2) | (self.rs_lun & 3),
            self.cmd,
            &[&[self.completion_code], &self.data],
        )
    }

    /// Parses a framed response, checking both checksums.
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let (h, body) = decode_frame(buf)?;
        let (&completion_code, data) = body.split_first().ok_or(WireError::Truncated {
            what: "IPMI response completion code",
            needed: 8,
            got: buf.len(),
        })?;
        Ok(Self {
            rq_addr: h[0],
            net_fn: h[1] >> 2,
            rq_lun: h[1] & 3,
            rs_addr: h[3],
            rq_seq: h[4] >> 2,
            rs_lun: h[4] & 3,
            cmd: h[5],
            completion_code,
            data: data.to_vec(),
        })
    }

    /// Whether this is the response to `req`: same sequence number, the matching response
    /// netFn, same command and addresses (§13.8: rqSeq alone can wrap after 64 requests).
    pub fn answers(&self, req: &IpmiRequest) -> bool {
        self.rq_seq == req.rq_seq & 0x3F
            && self.net_fn == (req.net_fn | 1) & 0x3F
            && self.cmd == req.cmd
            && self.rq_addr == req.rq_addr
            && self.rs_addr == req.rs_addr
    }
}

/// A request or response body: the data bytes of one command in one direction.
pub trait Body: Sized {
    /// Encodes the body.
    fn encode(&self) -> Vec<u8>;
    /// Decodes the body; extra trailing bytes are tolerated where the spec lets later
    /// revisions add fields.
    fn decode(data: &[u8]) -> Result<Self, WireError>;
}

/// Ties a request body to its netFn, command number and response body.
pub trait Command: Body {
    /// Network function of the request.
    const NET_FN: u8;
    /// Command number.
    const CMD: u8;
    /// Human name for error messages, as the spec names the command.
    const NAME: &'static str;
    /// The response body type.
    type Response: Body;
}

macro_rules! command {
    ($req:ty, $resp:ty, $netfn:expr, $cmd:expr, $name:expr) => {
        impl Command for $req {
            const NET_FN: u8 = $netfn;
            const CMD: u8 = $cmd;
            const NAME: &'static str = $name;
            type Response = $resp;
        }
    };
}

/// A body with no bytes (several requests and responses are empty).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Empty;

impl Body for Empty {
    fn encode(&self) -> Vec<u8> {
        Vec::new()
    }
    fn decode(_: &[u8]) -> Result<Self, WireError> {
        Ok(Empty)
    }
}

/// Get Channel Authentication Capabilities request (§22.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetChannelAuthCapabilities {
    /// Channel number, 4 bits (0xE = the channel this request arrives on).
    pub channel: u8,
    /// Bit 7: ask for IPMI v2.0 extended data (a 1.5-only BMC then answers with an error,
    /// which is exactly how a console learns it speaks no RMCP+).
    pub extended: bool,
    /// Requested maximum privilege level, 4 bits.
    pub privilege: u8,
}

impl Body for GetChannelAuthCapabilities {
    fn encode(&self) -> Vec<u8> {
        vec![
            (self.channel & 0x0F) | if self.extended { 0x80 } else { 0 },
            self.privilege & 0x0F,
        ]
    }
    fn decode(d: &[u8]) -> Result<Self, WireError> {
        let c = byte(d, 0, "Get Channel Auth Capabilities request")?;
        let p = byte(d, 1, "Get Channel Auth Capabilities request")?;
        Ok(Self {
            channel: c & 0x0F,
            extended: c & 0x80 != 0,
            privilege: p & 0x0F,
        })
    }
}

/// Get Channel Authentication Capabilities response (§22.13, Table 22-15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelAuthCapabilities {
    /// Channel number that answered.
    pub channel: u8,
    /// Authentication type support byte, raw (bit 7: IPMI v2.0 extended capabilities follow).
    pub auth_types: u8,
    /// Login/KG status byte, raw (bit 5: KG is set to a non-zero value).
    pub status: u8,
    /// Extended capabilities byte, raw (bit 1: IPMI 2.0 connections, bit 0: IPMI 1.5).
    pub extended: u8,
    /// OEM IANA number, 3 bytes LS first.
    pub oem_iana: u32,
    /// OEM auxiliary data.
    pub oem_aux: u8,
}

impl ChannelAuthCapabilities {
    /// Whether the channel accepts IPMI v2.0/RMCP+ sessions.
    pub fn supports_rmcp_plus(&self) -> bool {
        self.auth_types & 0x80 != 0 && self.extended & 0x02 != 0
    }

    /// Whether the BMC key KG is set (then the SIK needs it, not the password).
    pub fn kg_set(&self) -> bool {
        self.status & 0x20 != 0
    }
}

impl Body for ChannelAuthCapabilities {
    fn encode(&self) -> Vec<u8> {
        let iana = self.oem_iana.to_le_bytes();
        vec![
            self.channel,
            self.auth_types,
            self.status,
            self.extended,
            iana[0],
            iana[1],
            iana[2],
            self.oem_aux,
        ]
    }
    fn decode(d: &[u8]) -> Result<Self, WireError> {
        let b = take::<8>(d, 0, "Get Channel Auth Capabilities response")?;
        Ok(Self {
            channel: b[0],
            auth_types: b[1],
            status: b[2],
            extended: b[3],
            oem_iana: u32::from_le_bytes([b[4], b[5], b[6], 0]),
            oem_aux: b[7],
        })
    }
}
command!(
    GetChannelAuthCapabilities,
    ChannelAuthCapabilities,
    NETFN_APP,
    0x38,
    "Get Channel Authentication Capabilities"
);

/// Get Channel Cipher Suites request (§22.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetChannelCipherSuites {
    /// Channel number, 4 bits (0xE = this channel).
    pub channel: u8,
    /// Payload type the suites are asked for (0 = IPMI).
    pub payload_type: u8,
    /// Bit 7 of the index byte: list algorithms by cipher suite (what consoles want).
    pub list_by_suite: bool,
    /// Which 16-byte chunk of the record list, 6 bits.
    pub index: u8,
}

impl Body for GetChannelCipherSuites {
    fn encode(&self) -> Vec<u8> {
        vec![
            self.channel & 0x0F,
            self.payload_type & 0x3F,
            (self.index & 0x3F) | if self.list_by_suite { 0x80 } else { 0 },
        ]
    }
    fn decode(d: &[u8]) -> Result<Self, WireError> {
        let b = take::<3>(d, 0, "Get Channel Cipher Suites request")?;
        Ok(Self {
            channel: b[0] & 0x0F,
            payload_type: b[1] & 0x3F,
            list_by_suite: b[2] & 0x80 != 0,
            index: b[2] & 0x3F,
        })
    }
}

/// Get Channel Cipher Suites response: one chunk of at most 16 record bytes (§22.15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelCipherSuites {
    /// Channel number that answered.
    pub channel: u8,
    /// Record bytes of this chunk (a chunk shorter than 16 bytes is the last one).
    pub records: Vec<u8>,
}

impl Body for ChannelCipherSuites {
    fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.channel];
        v.extend_from_slice(&self.records);
        v
    }
    fn decode(d: &[u8]) -> Result<Self, WireError> {
        let (&channel, records) = d.split_first().ok_or(WireError::Truncated {
            what: "Get Channel Cipher Suites response",
            needed: 1,
            got: 0,
        })?;
        if records.len() > 16 {
            return Err(WireError::TooLong {
                what: "cipher suite record chunk",
                len: records.len(),
                max: 16,
            });
        }
        Ok(Self {
            channel,
            records: records.to_vec(),
        })
    }
}
command!(
    GetChannelCipherSuites,
    ChannelCipherSuites,
    NETFN_APP,
    0x54,
    "Get Channel Cipher Suites"
);

/// The cipher suite ids in a concatenated cipher suite record list (§22.15.1, Table 22-19):
/// each record starts with 0xC0 (standard) or 0xC1 (OEM, followed by a 3-byte IANA) and
/// the suite id, then algorithm bytes tagged in bits 7:6 with 00, 01 or 10.
pub fn cipher_suite_ids(records: &[u8]) -> Vec<u8> {
    let mut ids = Vec::new();
    let mut i = 0usize;
    while let Some(&start) = records.get(i) {
        let skip = match start {
            0xC0 => 2,
            0xC1 => 5,
            _ => {
                // An algorithm byte or garbage: skip it rather than give up on the list.
                i += 1;
                continue;
            }
        };
        if let Some(&id) = records.get(i + 1) {
            if start == 0xC0 {
                ids.push(id);
            }
        }
        i += skip;
    }
    ids
}

/// Set Session Privilege Level request (§22.18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetSessionPrivilegeLevel {
    /// Requested level, 4 bits (0 = just report the present level).
    pub level: u8,
}

impl Body for SetSessionPrivilegeLevel {
    fn encode(&self) -> Vec<u8> {
        vec![self.level & 0x0F]
    }
    fn decode(d: &[u8]) -> Result<Self, WireError> {
        Ok(Self {
            level: byte(d, 0, "Set Session Privilege Level request")? & 0x0F,
        })
    }
}

/// Set Session Privilege Level response: the level now in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPrivilegeLevel {
    /// New privilege level, 4 bits.
    pub level: u8,
}

impl Body for SessionPrivilegeLevel {
    fn encode(&self) -> Vec<u8> {
        vec![self.level & 0x0F]
    }
    fn decode(d: &[u8]) -> Result<Self, WireError> {
        Ok(Self {
            level: byte(d, 0, "Set Session Privilege Level response")? & 0x0F,
        })
    }
}
command!(
    SetSessionPrivilegeLevel,
    SessionPrivilegeLevel,
    NETFN_APP,
    0x3B,
    "Set Session Privilege Level"
);

/// Get System GUID request (§22.14): no data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GetSystemGuid;

impl Body for GetSystemGuid {
    fn encode(&self) -> Vec<u8> {
        Vec::new()
    }
    fn decode(_: &[u8]) -> Result<Self, WireError> {
        Ok(GetSystemGuid)
    }
}

/// Get System GUID response: 16 bytes, wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemGuid {
    /// The GUID as the BMC sent it (LS byte first, §20.8).
    pub guid: [u8; 16],
}

impl SystemGuid {
    /// The GUID as `ipmitool mc guid` prints it: all 16 wire bytes reversed, then hyphenated
    /// 8-4-4-4-12. Checked against ipmitool 1.8.19 and ipmi_sim configured with
    /// `guid a123456789abcdefa123456789abcdef`: the wire carries a1 23 45 … ef in that order
    /// and ipmitool prints `efcdab89-6745-23a1-efcd-ab89674523a1` ("GUID Encoding : IPMI").
    /// Note that this is not the RFC 4122 mixed-endian reading some vendors use; operators
    /// compare against ipmitool, so this is what we report.
    pub fn to_ipmitool_string(&self) -> String {
        let mut b = self.guid;
        b.reverse();
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            h.get(0..8).unwrap_or_default(),
            h.get(8..12).unwrap_or_default(),
            h.get(12..16).unwrap_or_default(),
            h.get(16..20).unwrap_or_default(),
            h.get(20..32).unwrap_or_default()
        )
    }
}

impl Body for SystemGuid {
    fn encode(&self) -> Vec<u8> {
        self.guid.to_vec()
    }
    fn decode(d: &[u8]) -> Result<Self, WireError> {
        Ok(Self {
            guid: take::<16>(d, 0, "Get System GUID response")?,
        })
    }
}
command!(
    GetSystemGuid,
    SystemGuid,
    NETFN_APP,
    0x37,
    "Get System GUID"
);

/// Get Chassis Status request (§28.2): no data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GetChassisStatus;

impl Body for GetChassisStatus {
    fn encode(&self) -> Vec<u8> {
        Vec::new()
    }
    fn decode(_: &[u8]) -> Result<Self, WireError> {
        Ok(GetChassisStatus)
    }
}

/// Get Chassis Status response (§28.2, Table 28-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChassisStatus {
    /// Current power state byte (bit 0: power is on; bits 1–4: overload, interlock, power
    /// fault, control fault; bits 6:5: restore policy).
    pub power_state: u8,
    /// Last power event byte.
    pub last_power_event: u8,
    /// Miscellaneous chassis state byte.
    pub misc: u8,
    /// Front panel button capabilities (optional in the spec).
    pub front_panel: Option<u8>,
}

impl ChassisStatus {
    /// Whether system power is on (bit 0 of the current power state).
    pub fn power_on(&self) -> bool {
        self.power_state & 0x01 != 0
    }
}

impl Body for ChassisStatus {
    fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.power_state, self.last_power_event, self.misc];
        v.extend(self.front_panel);
        v
    }
    fn decode(d: &[u8]) -> Result<Self, WireError> {
        let b = take::<3>(d, 0, "Get Chassis Status response")?;
        Ok(Self {
            power_state: b[0],
            last_power_event: b[1],
            misc: b[2],
            front_panel: d.get(3).copied(),
        })
    }
}
command!(
    GetChassisStatus,
    ChassisStatus,
    NETFN_CHASSIS,
    0x01,
    "Get Chassis Status"
);

/// Chassis control values (§28.3, Table 28-4). The client sends only power down and power up;
/// the others exist so a simulator can decode (and refuse or log) whatever it is sent.
pub mod chassis_control {
    /// Power down: a hard off, the OS is not asked.
    pub const POWER_DOWN: u8 = 0x00;
    /// Power up.
    pub const POWER_UP: u8 = 0x01;
    /// Power cycle: never sent (it cannot be confirmed; see `crate::power`).
    pub const POWER_CYCLE: u8 = 0x02;
    /// Hard reset: never sent.
    pub const HARD_RESET: u8 = 0x03;
    /// Pulse diagnostic interrupt: never sent.
    pub const DIAGNOSTIC_INTERRUPT: u8 = 0x04;
    /// Soft shutdown via ACPI: never sent (the OS may ignore it, so it cannot fence).
    pub const SOFT_SHUTDOWN: u8 = 0x05;
}

/// Chassis Control request (§28.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChassisControl {
    /// Control value, 4 bits (see [`chassis_control`]).
    pub control: u8,
}

impl Body for ChassisControl {
    fn encode(&self) -> Vec<u8> {
        vec![self.control & 0x0F]
    }
    fn decode(d: &[u8]) -> Result<Self, WireError> {
        Ok(Self {
            control: byte(d, 0, "Chassis Control request")? & 0x0F,
        })
    }
}
command!(
    ChassisControl,
    Empty,
    NETFN_CHASSIS,
    0x02,
    "Chassis Control"
);

/// Close Session request (§22.19).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseSession {
    /// The BMC's id of the session to close.
    pub session_id: u32,
}

impl Body for CloseSession {
    fn encode(&self) -> Vec<u8> {
        self.session_id.to_le_bytes().to_vec()
    }
    fn decode(d: &[u8]) -> Result<Self, WireError> {
        Ok(Self {
            session_id: le32(d, 0, "Close Session request")?,
        })
    }
}
command!(CloseSession, Empty, NETFN_APP, 0x3C, "Close Session");

/// Get Device ID request (§20.1): no data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GetDeviceId;

impl Body for GetDeviceId {
    fn encode(&self) -> Vec<u8> {
        Vec::new()
    }
    fn decode(_: &[u8]) -> Result<Self, WireError> {
        Ok(GetDeviceId)
    }
}

/// Get Device ID response (§20.1, Table 20-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceId {
    /// Device id.
    pub device_id: u8,
    /// Device revision byte (bit 7: provides SDRs).
    pub device_revision: u8,
    /// Firmware major revision byte (bit 7: update in progress).
    pub firmware_major: u8,
    /// Firmware minor revision, BCD.
    pub firmware_minor: u8,
    /// IPMI version, BCD with the major digit in bits 3:0 and the minor in bits 7:4
    /// (0x02 = 2.0, 0x51 = 1.5).
    pub ipmi_version: u8,
    /// Additional device support bits.
    pub additional_support: u8,
    /// Manufacturer IANA number (20 bits, 3 bytes LS first).
    pub manufacturer_id: u32,
    /// Product id.
    pub product_id: u16,
    /// Auxiliary firmware revision (optional).
    pub aux_firmware: Option<[u8; 4]>,
}

impl DeviceId {
    /// A one-line description for operators: manufacturer, product, firmware.
    pub fn describe(&self) -> String {
        format!(
            "IPMI {}.{} BMC, manufacturer {} product {:#06x}, firmware {}.{:02x}",
            self.ipmi_version & 0x0F,
            self.ipmi_version >> 4,
            self.manufacturer_id,
            self.product_id,
            self.firmware_major & 0x7F,
            self.firmware_minor
        )
    }
}

impl Body for DeviceId {
    fn encode(&self) -> Vec<u8> {
        let m = self.manufacturer_id.to_le_bytes();
        let p = self.product_id.to_le_bytes();
        let mut v = vec![
            self.device_id,
            self.device_revision,
            self.firmware_major,
            self.firmware_minor,
            self.ipmi_version,
            self.additional_support,
            m[0],
            m[1],
            m[2],
            p[0],
            p[1],
        ];
        if let Some(aux) = self.aux_firmware {
            v.extend_from_slice(&aux);
        }
        v
    }
    fn decode(d: &[u8]) -> Result<Self, WireError> {
        let b = take::<11>(d, 0, "Get Device ID response")?;
        Ok(Self {
            device_id: b[0],
            device_revision: b[1],
            firmware_major: b[2],
            firmware_minor: b[3],
            ipmi_version: b[4],
            additional_support: b[5],
            manufacturer_id: u32::from_le_bytes([b[6], b[7], b[8], 0]),
            product_id: u16::from_le_bytes([b[9], b[10]]),
            aux_firmware: take::<4>(d, 11, "aux firmware").ok(),
        })
    }
}
command!(GetDeviceId, DeviceId, NETFN_APP, 0x01, "Get Device ID");

/// The text of an IPMI completion code (§5.2, Table 5-2), with what to do where it is ours
/// to fix.
pub fn completion_code_text(cc: u8) -> String {
    let s = match cc {
        0x00 => "success",
        0xC0 => "node busy; retry later",
        0xC1 => "invalid command (the BMC does not implement it)",
        0xC2 => "command invalid for the given LUN",
        0xC3 => "timeout while processing the command",
        0xC4 => "out of space",
        0xC5 => "reservation cancelled or invalid",
        0xC6 => "request data truncated",
        0xC7 => "request data length invalid",
        0xC8 => "request data field length limit exceeded",
        0xC9 => "parameter out of range",
        0xCA => "cannot return the number of requested data bytes",
        0xCB => "requested sensor, data or record not present",
        0xCC => "invalid data field in request",
        0xCD => "command illegal for this sensor or record type",
        0xCE => "command response could not be provided",
        0xCF => "cannot execute a duplicated request",
        0xD0 => "SDR repository in update mode",
        0xD1 => "device in firmware update mode",
        0xD2 => "BMC initialization in progress; retry later",
        0xD3 => "destination unavailable",
        0xD4 => "insufficient privilege level; raise the IPMI user's privilege (operator at least for power control, e.g. `ipmitool user priv ID 4`) or lower the configured privilege",
        0xD5 => "command not supported in the present state",
        0xD6 => "command sub-function disabled or unavailable",
        0xFF => "unspecified error",
        0x01..=0x7E => "device-specific (OEM) completion code",
        0x80..=0xBE => "command-specific completion code",
        _ => "reserved completion code",
    };
    format!("completion code {cc:#04x}: {s}")
}

/// The text of an RMCP+ and RAKP message status code (§13.24, Table 13-15).
pub fn rakp_status_text(status: u8) -> &'static str {
    match status {
        0x00 => "no errors",
        0x01 => "insufficient resources to create a session",
        0x02 => "invalid session id",
        0x03 => "invalid payload type",
        0x04 => "invalid authentication algorithm",
        0x05 => "invalid integrity algorithm",
        0x06 => "no matching authentication payload",
        0x07 => "no matching integrity payload",
        0x08 => "inactive session id",
        0x09 => "invalid role",
        0x0A => "unauthorized role or privilege level requested",
        0x0B => "insufficient resources to create a session at the requested role",
        0x0C => "invalid name length",
        0x0D => "unauthorized name",
        0x0E => "unauthorized GUID",
        0x0F => "invalid integrity check value",
        0x10 => "invalid confidentiality algorithm",
        0x11 => "no cipher suite match with proposed security algorithms",
        0x12 => "illegal or unrecognized parameter",
        _ => "reserved status code",
    }
}

/// Reads the session id at bytes 4..8 of a session-setup message, tolerating refusals cut
/// short after the status byte: OpenIPMI's ipmi_sim answers an Open Session Request it
/// refuses with just tag and status (2 bytes). Such a refusal decodes with session id 0.
fn setup_session_id(d: &[u8], status: u8, what: &'static str) -> Result<u32, WireError> {
    match le32(d, 4, what) {
        Err(_) if status != 0 && d.len() <= 4 => Ok(0),
        r => r,
    }
}

/// RMCP+ status: unauthorized name (§13.24).
pub const RAKP_UNAUTHORIZED_NAME: u8 = 0x0D;
/// RMCP+ status: invalid integrity check value (§13.24): the password is wrong.
pub const RAKP_INVALID_INTEGRITY_CHECK: u8 = 0x0F;

/// The algorithm proposals of an Open Session Request/Response, by wire number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Algorithms {
    /// Authentication algorithm number.
    pub auth: u8,
    /// Integrity algorithm number.
    pub integrity: u8,
    /// Confidentiality algorithm number.
    pub confidentiality: u8,
}

impl Algorithms {
    fn encode(&self, out: &mut Vec<u8>) {
        // Three 8-byte payloads: type, reserved ×2, length 8, algorithm, reserved ×3 (§13.17).
        for (t, a) in [
            (0u8, self.auth),
            (1, self.integrity),
            (2, self.confidentiality),
        ] {
            out.extend_from_slice(&[t, 0, 0, 8, a & 0x3F, 0, 0, 0]);
        }
    }

    fn decode(d: &[u8], at: usize, what: &'static str) -> Result<Self, WireError> {
        let b = take::<24>(d, at, what)?;
        let mut algs = [0u8; 3];
        for (i, alg) in algs.iter_mut().enumerate() {
            let t = b.get(i * 8).copied().unwrap_or(0xFF);
            if usize::from(t) != i {
                return Err(WireError::BadValue {
                    what: "Open Session algorithm payload type",
                    value: t.into(),
                });
            }
            *alg = b.get(i * 8 + 4).copied().unwrap_or(0) & 0x3F;
        }
        Ok(Self {
            auth: algs[0],
            integrity: algs[1],
            confidentiality: algs[2],
        })
    }
}

/// RMCP+ Open Session Request (§13.17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenSessionRequest {
    /// Message tag, echoed in the response.
    pub tag: u8,
    /// Requested maximum privilege (0 = the highest the proposed algorithms allow).
    pub max_privilege: u8,
    /// The session id the console chose (the BMC addresses its packets with it).
    pub console_session_id: u32,
    /// Proposed algorithms.
    pub algorithms: Algorithms,
}

impl Body for OpenSessionRequest {
    fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.tag, self.max_privilege & 0x0F, 0, 0];
        v.extend_from_slice(&self.console_session_id.to_le_bytes());
        self.algorithms.encode(&mut v);
        v
    }
    fn decode(d: &[u8]) -> Result<Self, WireError> {
        Ok(Self {
            tag: byte(d, 0, "Open Session Request")?,
            max_privilege: byte(d, 1, "Open Session Request")? & 0x0F,
            console_session_id: le32(d, 4, "Open Session Request")?,
            algorithms: Algorithms::decode(d, 8, "Open Session Request")?,
        })
    }
}

/// RMCP+ Open Session Response (§13.18). A refusal carries only the first 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenSessionResponse {
    /// Message tag of the request.
    pub tag: u8,
    /// RMCP+ status code ([`rakp_status_text`]).
    pub status: u8,
    /// Maximum privilege level granted.
    pub max_privilege: u8,
    /// The console's session id, echoed.
    pub console_session_id: u32,
    /// When accepted: the BMC's session id and the algorithms it chose.
    pub accepted: Option<(u32, Algorithms)>,
}

impl Body for OpenSessionResponse {
    fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.tag, self.status, self.max_privilege & 0x0F, 0];
        v.extend_from_slice(&self.console_session_id.to_le_bytes());
        if let Some((bmc_id, algs)) = self.accepted {
            v.extend_from_slice(&bmc_id.to_le_bytes());
            algs.encode(&mut v);
        }
        v
    }
    fn decode(d: &[u8]) -> Result<Self, WireError> {
        let status = byte(d, 1, "Open Session Response")?;
        let accepted = if d.len() >= 36 {
            Some((
                le32(d, 8, "Open Session Response")?,
                Algorithms::decode(d, 12, "Open Session Response")?,
            ))
        } else if status == 0 {
            return Err(WireError::Truncated {
                what: "Open Session Response",
                needed: 36,
                got: d.len(),
            });
        } else {
            None
        };
        Ok(Self {
            tag: byte(d, 0, "Open Session Response")?,
            status,
            // Absent from ipmi_sim's 2-byte refusals (see setup_session_id).
            max_privilege: match byte(d, 2, "Open Session Response") {
                Err(_) if status != 0 => 0,
                r => r? & 0x0F,
            },
            console_session_id: setup_session_id(d, status, "Open Session Response")?,
            accepted,
        })
    }
}

/// RAKP Message 1 (§13.20).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp1 {
    /// Message tag.
    pub tag: u8,
    /// The BMC's session id from the Open Session Response.
    pub bmc_session_id: u32,
    /// The console's random number Rm.
    pub console_random: [u8; 16],
    /// Requested maximum privilege byte, with the name-only lookup bit (ROLEm).
    pub role: u8,
    /// User name, at most 16 bytes (empty = null user).
    pub username: Vec<u8>,
}

impl Rakp1 {
    /// Longest user name RAKP 1 can carry.
    pub const MAX_USERNAME: usize = 16;
}

impl Body for Rakp1 {
    fn encode(&self) -> Vec<u8> {
        let name = self
            .username
            .get(..Self::MAX_USERNAME)
            .unwrap_or(&self.username);
        let mut v = vec![self.tag, 0, 0, 0];
        v.extend_from_slice(&self.bmc_session_id.to_le_bytes());
        v.extend_from_slice(&self.console_random);
        // name.len() <= 16, so it fits a byte.
        v.extend_from_slice(&[self.role, 0, 0, name.len() as u8]);
        v.extend_from_slice(name);
        v
    }
    fn decode(d: &[u8]) -> Result<Self, WireError> {
        let len = usize::from(byte(d, 27, "RAKP 1")?);
        if len > Self::MAX_USERNAME {
            return Err(WireError::TooLong {
                what: "RAKP 1 user name",
                len,
                max: Self::MAX_USERNAME,
            });
        }
        Ok(Self {
            tag: byte(d, 0, "RAKP 1")?,
            bmc_session_id: le32(d, 4, "RAKP 1")?,
            console_random: take::<16>(d, 8, "RAKP 1")?,
            role: byte(d, 24, "RAKP 1")?,
            username: d
                .get(28..28 + len)
                .ok_or(WireError::Truncated {
                    what: "RAKP 1 user name",
                    needed: 28 + len,
                    got: d.len(),
                })?
                .to_vec(),
        })
    }
}

/// The accepted part of RAKP Message 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp2Accepted {
    /// The BMC's random number Rc.
    pub bmc_random: [u8; 16],
    /// The BMC's GUID (wire order).
    pub bmc_guid: [u8; 16],
    /// Key exchange authentication code (20 bytes for SHA1, 32 for SHA256, 0 for none).
    pub auth_code: Vec<u8>,
}

/// RAKP Message 2 (§13.21). A refusal carries only the first 8 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp2 {
    /// Message tag of RAKP 1.
    pub tag: u8,
    /// RMCP+ status code.
    pub status: u8,
    /// The console's session id.
    pub console_session_id: u32,
    /// The rest, when the BMC went on.
    pub accepted: Option<Rakp2Accepted>,
}

impl Body for Rakp2 {
    fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.tag, self.status, 0, 0];
        v.extend_from_slice(&self.console_session_id.to_le_bytes());
        if let Some(a) = &self.accepted {
            v.extend_from_slice(&a.bmc_random);
            v.extend_from_slice(&a.bmc_guid);
            v.extend_from_slice(&a.auth_code);
        }
        v
    }
    fn decode(d: &[u8]) -> Result<Self, WireError> {
        let status = byte(d, 1, "RAKP 2")?;
        let accepted = if d.len() >= 40 {
            Some(Rakp2Accepted {
                bmc_random: take::<16>(d, 8, "RAKP 2")?,
                bmc_guid: take::<16>(d, 24, "RAKP 2")?,
                auth_code: d.get(40..).unwrap_or_default().to_vec(),
            })
        } else if status == 0 {
            return Err(WireError::Truncated {
                what: "RAKP 2",
                needed: 40,
                got: d.len(),
            });
        } else {
            None
        };
        Ok(Self {
            tag: byte(d, 0, "RAKP 2")?,
            status,
            console_session_id: setup_session_id(d, status, "RAKP 2")?,
            accepted,
        })
    }
}

/// RAKP Message 3 (§13.22).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp3 {
    /// Message tag.
    pub tag: u8,
    /// RMCP+ status code: non-zero tells the BMC the console rejects RAKP 2.
    pub status: u8,
    /// The BMC's session id.
    pub bmc_session_id: u32,
    /// Key exchange authentication code (empty on error).
    pub auth_code: Vec<u8>,
}

impl Body for Rakp3 {
    fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.tag, self.status, 0, 0];
        v.extend_from_slice(&self.bmc_session_id.to_le_bytes());
        v.extend_from_slice(&self.auth_code);
        v
    }
    fn decode(d: &[u8]) -> Result<Self, WireError> {
        let status = byte(d, 1, "RAKP 3")?;
        Ok(Self {
            tag: byte(d, 0, "RAKP 3")?,
            status,
            bmc_session_id: setup_session_id(d, status, "RAKP 3")?,
            auth_code: d.get(8..).unwrap_or_default().to_vec(),
        })
    }
}

/// RAKP Message 4 (§13.23).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp4 {
    /// Message tag.
    pub tag: u8,
    /// RMCP+ status code.
    pub status: u8,
    /// The console's session id.
    pub console_session_id: u32,
    /// Integrity check value (empty on error).
    pub integrity_check: Vec<u8>,
}

impl Body for Rakp4 {
    fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.tag, self.status, 0, 0];
        v.extend_from_slice(&self.console_session_id.to_le_bytes());
        v.extend_from_slice(&self.integrity_check);
        v
    }
    fn decode(d: &[u8]) -> Result<Self, WireError> {
        let status = byte(d, 1, "RAKP 4")?;
        Ok(Self {
            tag: byte(d, 0, "RAKP 4")?,
            status,
            console_session_id: setup_session_id(d, status, "RAKP 4")?,
            integrity_check: d.get(8..).unwrap_or_default().to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    #[test]
    fn ipmitool_get_channel_auth_caps_frame() {
        let req = IpmiRequest::decode(&hex("20 18 c8 81 00 38 8e 04 b5")).unwrap();
        assert_eq!((req.net_fn, req.cmd, req.rq_seq), (NETFN_APP, 0x38, 0));
        let body = GetChannelAuthCapabilities::decode(&req.data).unwrap();
        assert_eq!(
            body,
            GetChannelAuthCapabilities {
                channel: 0x0E,
                extended: true,
                privilege: PRIV_ADMINISTRATOR
            }
        );
        assert_eq!(req.encode(), hex("20 18 c8 81 00 38 8e 04 b5"));
        // ipmi_sim's answer.
        let resp =
            IpmiResponse::decode(&hex("81 1c 63 20 00 38 00 01 97 06 03 00 00 00 00 07")).unwrap();
        assert!(resp.answers(&req));
        assert_eq!(resp.completion_code, 0);
        let caps = ChannelAuthCapabilities::decode(&resp.data).unwrap();
        assert!(caps.supports_rmcp_plus());
        assert!(!caps.kg_set());
        assert_eq!(caps.encode(), resp.data);
    }

    #[test]
    fn ipmitool_session_commands() {
        // Set Session Privilege Level (rqSeq 1) and ipmi_sim's reply, decrypted.
        let req = IpmiRequest::decode(&hex("20 18 c8 81 04 3b 04 3c")).unwrap();
        assert_eq!(
            SetSessionPrivilegeLevel::decode(&req.data).unwrap().level,
            PRIV_ADMINISTRATOR
        );
        let resp = IpmiResponse::decode(&hex("81 1c 63 20 04 3b 00 04 9d")).unwrap();
        assert!(resp.answers(&req));
        assert_eq!(SessionPrivilegeLevel::decode(&resp.data).unwrap().level, 4);
        // A reply to another rqSeq is not an answer.
        let other = IpmiRequest::to_bmc(NETFN_APP, 0x3b, 2, vec![4]);
        assert!(!resp.answers(&other));
        // Get Device ID request as ipmitool framed it (rqSeq 3).
        let dev = IpmiRequest::decode(&hex("20 18 c8 81 0c 01 72")).unwrap();
        assert_eq!(dev, IpmiRequest::to_bmc(NETFN_APP, 0x01, 3, vec![]));
    }

    #[test]
    fn checksums_are_checked() {
        assert!(IpmiRequest::decode(&hex("20 18 c9 81 00 38 8e 04 b5")).is_err());
        assert!(IpmiRequest::decode(&hex("20 18 c8 81 00 38 8e 04 b6")).is_err());
        assert!(IpmiResponse::decode(&hex("81 1c 63 20 00 38 00 a8")).is_ok());
        // No completion code.
        assert!(IpmiResponse::decode(&hex("81 1c 63 20 00 38 c8")).is_err());
    }

    #[test]
    fn open_session_and_rakp_from_capture() {
        let req = OpenSessionRequest::decode(&hex("00 00 00 00 a4 a3 a2 a0 00 00 00 08 01 00 00 00 01 00 00 08 01 00 00 00 02 00 00 08 01 00 00 00")).unwrap();
        assert_eq!(req.console_session_id, 0xa0a2a3a4);
        assert_eq!(
            req.algorithms,
            Algorithms {
                auth: 1,
                integrity: 1,
                confidentiality: 1
            }
        );
        let resp = OpenSessionResponse::decode(&hex("00 00 00 00 a4 a3 a2 a0 82 01 00 00 00 00 00 08 01 00 00 00 01 00 00 08 01 00 00 00 02 00 00 08 01 00 00 00")).unwrap();
        assert_eq!(resp.accepted.map(|a| a.0), Some(0x182));
        let r1 = hex("00 00 00 00 82 01 00 00 7b 8f e6 93 84 e3 07 93 2a 7b 05 53 df c5 e1 01 14 00 00 01 75");
        let rakp1 = Rakp1::decode(&r1).unwrap();
        assert_eq!((rakp1.role, rakp1.username.as_slice()), (0x14, &b"u"[..]));
        assert_eq!(rakp1.encode(), r1);
        let r2 = Rakp2::decode(&hex("00 00 00 00 a4 a3 a2 a0 ce 74 99 e7 60 d8 d8 bc a9 2c 1b a3 d3 5b d6 f5 a1 23 45 67 89 ab cd ef a1 23 45 67 89 ab cd ef 26 b7 47 07 1b 52 0f 0c d8 ac be 43 db b6 c4 fd a8 54 44 fe")).unwrap();
        assert_eq!(r2.accepted.map(|a| a.auth_code.len()), Some(20));
        let r4 = Rakp4::decode(&hex(
            "00 00 00 00 a4 a3 a2 a0 42 8e b2 bc 5b e5 c4 f0 ae b8 aa a3",
        ))
        .unwrap();
        assert_eq!(r4.integrity_check.len(), 12);
        // A refusal is 8 bytes.
        let refused = Rakp2::decode(&hex("00 0d 00 00 a4 a3 a2 a0")).unwrap();
        assert_eq!(
            (refused.status, refused.accepted),
            (RAKP_UNAUTHORIZED_NAME, None)
        );
        assert!(Rakp2::decode(&hex("00 00 00 00 a4 a3 a2 a0")).is_err());
        // ipmi_sim refuses suite 17 with 2 bytes: tag, status 0x04.
        let short = OpenSessionResponse::decode(&hex("00 04")).unwrap();
        assert_eq!(
            (short.status, short.console_session_id, short.accepted),
            (4, 0, None)
        );
        assert!(OpenSessionResponse::decode(&hex("00 00")).is_err());
    }

    #[test]
    fn guid_prints_like_ipmitool() {
        let g =
            SystemGuid::decode(&hex("a1 23 45 67 89 ab cd ef a1 23 45 67 89 ab cd ef")).unwrap();
        assert_eq!(
            g.to_ipmitool_string(),
            "efcdab89-6745-23a1-efcd-ab89674523a1"
        );
    }

    #[test]
    fn cipher_suite_records() {
        // Suites 3 and 17, plus an OEM record, as a Supermicro-style list.
        let recs = hex("c0 03 01 41 81 c0 11 03 44 81 c1 80 00 00 a2 01 41 81");
        assert_eq!(cipher_suite_ids(&recs), vec![3, 17]);
        assert_eq!(cipher_suite_ids(&[0xc0]), Vec::<u8>::new());
    }

    #[test]
    fn texts_say_what_to_do() {
        assert!(completion_code_text(0xD4).contains("raise the IPMI user's privilege"));
        assert_eq!(rakp_status_text(0x0D), "unauthorized name");
    }
}
