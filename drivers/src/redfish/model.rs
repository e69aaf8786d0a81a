//! The Redfish resources the fencing path reads, as serde types (DMTF DSP0266 / DSP8010).
//!
//! Only the properties we use are declared; everything else a BMC sends is ignored, so vendor
//! extensions (`Oem`) cannot break parsing. Properties a BMC may omit or send as `null` are
//! `Option`s: a missing `PowerState` must read as "unknown", never as "off".

use serde::{Deserialize, Serialize};

/// A reference to another resource (`{"@odata.id": "/redfish/v1/..."}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Link {
    /// The referenced resource's URI (a path on the same service).
    #[serde(rename = "@odata.id")]
    pub odata_id: String,
}

/// `/redfish/v1/`: the service root (DSP0266 §"Service root").
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRoot {
    /// Redfish protocol version the service implements.
    pub redfish_version: Option<String>,
    /// The service's UUID (not the system's).
    #[serde(rename = "UUID")]
    pub uuid: Option<String>,
    /// Vendor name, for the device description.
    pub vendor: Option<String>,
    /// Product name, for the device description.
    pub product: Option<String>,
    /// The Systems collection.
    pub systems: Option<Link>,
    /// The SessionService, where the service has one.
    pub session_service: Option<Link>,
    /// `Links.Sessions`: the sessions collection a client POSTs to (DSP0266 requires it at
    /// the root, so a client need not read the SessionService first).
    pub links: Option<RootLinks>,
}

/// `ServiceRoot.Links`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RootLinks {
    /// The sessions collection.
    pub sessions: Option<Link>,
}

/// A resource collection (`Members` only).
#[derive(Debug, Clone, Deserialize)]
pub struct Collection {
    /// The members' links.
    #[serde(rename = "Members", default)]
    pub members: Vec<Link>,
}

/// `ComputerSystem`: the properties fencing reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ComputerSystem {
    /// The system's id within the collection.
    pub id: Option<String>,
    /// Human name.
    pub name: Option<String>,
    /// The system's UUID (SMBIOS), the identity of the node.
    #[serde(rename = "UUID")]
    pub uuid: Option<String>,
    /// Manufacturer, for the description.
    pub manufacturer: Option<String>,
    /// Model, for the description.
    pub model: Option<String>,
    /// `On`, `Off`, `PoweringOn`, `PoweringOff`, `Paused`; absent or `null` when unknown.
    pub power_state: Option<String>,
    /// The system's actions.
    pub actions: Option<SystemActions>,
}

/// `ComputerSystem.Actions`.
#[derive(Debug, Clone, Deserialize)]
pub struct SystemActions {
    /// `#ComputerSystem.Reset`.
    #[serde(rename = "#ComputerSystem.Reset")]
    pub reset: Option<ResetAction>,
}

/// The Reset action: where to POST and which reset types it allows.
#[derive(Debug, Clone, Deserialize)]
pub struct ResetAction {
    /// The URI to POST `{"ResetType": ...}` to.
    pub target: String,
    /// The allowed reset types, when listed inline.
    #[serde(rename = "ResetType@Redfish.AllowableValues")]
    pub allowable_values: Option<Vec<String>>,
    /// The ActionInfo resource that lists them otherwise.
    #[serde(rename = "@Redfish.ActionInfo")]
    pub action_info: Option<String>,
}

/// `ActionInfo`: the parameters of an action.
#[derive(Debug, Clone, Deserialize)]
pub struct ActionInfo {
    /// The action's parameters.
    #[serde(rename = "Parameters", default)]
    pub parameters: Vec<ActionParameter>,
}

/// One parameter of an [`ActionInfo`].
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActionParameter {
    /// Its name (`ResetType`).
    pub name: String,
    /// The values it accepts.
    pub allowable_values: Option<Vec<String>>,
}

/// A Task (what a task monitor returns when it finishes, and what a 202 may carry).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    /// The task's URI.
    #[serde(rename = "@odata.id")]
    pub odata_id: Option<String>,
    /// `New`, `Running`, `Completed`, `Exception`, `Killed`, `Cancelled`, ...
    pub task_state: Option<String>,
    /// `OK`, `Warning`, `Critical`.
    pub task_status: Option<String>,
    /// Messages, the first of which usually says why a task failed.
    #[serde(default)]
    pub messages: Vec<Message>,
}

impl Task {
    /// Whether the task reached an end state (DSP8010 `TaskState`).
    pub fn finished(&self) -> bool {
        matches!(
            self.task_state.as_deref(),
            Some("Completed" | "Exception" | "Killed" | "Cancelled" | "Interrupted" | "Suspended")
        )
    }

    /// Whether it finished well.
    pub fn succeeded(&self) -> bool {
        self.task_state.as_deref() == Some("Completed")
            && !matches!(self.task_status.as_deref(), Some("Critical"))
    }
}

/// A Redfish message (`Message` registry entry as sent).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Message {
    /// The registry message id.
    pub message_id: Option<String>,
    /// The text.
    pub message: Option<String>,
}

/// The error body of a failed request (DSP0266 §"Error responses").
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// `error` of an [`ErrorBody`].
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorDetail {
    /// The main message.
    pub message: Option<String>,
    /// Extended messages.
    #[serde(rename = "@Message.ExtendedInfo", default)]
    pub extended_info: Vec<Message>,
}

impl ErrorBody {
    /// The most specific human message in the body.
    pub fn describe(&self) -> Option<String> {
        self.error
            .extended_info
            .iter()
            .find_map(|m| m.message.clone())
            .or_else(|| self.error.message.clone())
    }
}

/// The body that opens a session. Not `Debug`: it holds the password.
#[derive(Serialize)]
pub struct SessionRequest<'a> {
    /// The account.
    #[serde(rename = "UserName")]
    pub user_name: &'a str,
    /// The password.
    #[serde(rename = "Password")]
    pub password: &'a str,
}

/// The body of a reset.
#[derive(Debug, Serialize)]
pub struct ResetRequest<'a> {
    /// `ForceOff` or `On` (never a cycle, see the crate docs).
    #[serde(rename = "ResetType")]
    pub reset_type: &'a str,
}

/// Decodes arbitrary bytes as every resource the fencing path reads and checks the properties
/// fencing relies on: only the exact string `Off` reads as off, a succeeded task is finished.
/// Shared by the cargo-fuzz target (`drivers/fuzz`, target `redfish_json`) and the seed-corpus
/// replay test, so CI on stable runs the same checks.
pub fn fuzz_decode(data: &[u8]) {
    use crate::PowerState;
    if let Ok(s) = serde_json::from_slice::<ComputerSystem>(data) {
        let state = super::power_state_of(s.power_state.as_deref());
        assert_eq!(
            state == PowerState::Off,
            s.power_state.as_deref() == Some("Off"),
            "only the exact value Off may read as off"
        );
        if let Some(reset) = s.actions.and_then(|a| a.reset) {
            let _ = reset.allowable_values.map(|v| v.len());
        }
    }
    if let Ok(t) = serde_json::from_slice::<Task>(data) {
        assert!(
            !t.succeeded() || t.finished(),
            "a running task cannot have succeeded"
        );
    }
    if let Ok(e) = serde_json::from_slice::<ErrorBody>(data) {
        let _ = e.describe();
    }
    let _ = serde_json::from_slice::<ServiceRoot>(data);
    let _ = serde_json::from_slice::<Collection>(data);
    let _ = serde_json::from_slice::<ActionInfo>(data);
    let _ = serde_json::from_slice::<Link>(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_state_null_and_missing_read_as_none() {
        let s: ComputerSystem = serde_json::from_str(r#"{"PowerState": null}"#).unwrap();
        assert_eq!(s.power_state, None);
        let s: ComputerSystem = serde_json::from_str(r#"{"Id": "1"}"#).unwrap();
        assert_eq!(s.power_state, None);
    }

    #[test]
    fn reset_action_reads_inline_values_and_action_info() {
        let s: ComputerSystem = serde_json::from_str(
            r##"{"Actions": {"#ComputerSystem.Reset": {"target": "/r", "ResetType@Redfish.AllowableValues": ["On", "ForceOff"], "@Redfish.ActionInfo": "/ai", "Oem": {}}}}"##,
        )
        .unwrap();
        let r = s.actions.unwrap().reset.unwrap();
        assert_eq!(r.target, "/r");
        assert_eq!(r.allowable_values.unwrap(), vec!["On", "ForceOff"]);
        assert_eq!(r.action_info.as_deref(), Some("/ai"));
    }

    #[test]
    fn error_bodies_prefer_extended_info() {
        let e: ErrorBody = serde_json::from_str(
            r#"{"error": {"code": "Base.1.8.GeneralError", "message": "general", "@Message.ExtendedInfo": [{"MessageId": "x", "Message": "specific"}]}}"#,
        )
        .unwrap();
        assert_eq!(e.describe().as_deref(), Some("specific"));
    }
}
