//! Serial-console PDUs (device kind `serial-pdu`): power strips driven by typing commands at
//! their console, over a serial line or a console server's TCP port.
//!
//! The dialogue is data and the parsing is pure:
//! - [`model`]: each vendor's dialogue as a table (prompts, login questions, on/off/status
//!   commands, confirmation question, status layout, how a command is acknowledged), with
//!   built-in models for WTI NPS/IPS, APC AP79xx (AOS CLI) and BayTech RPC.
//! - [`parse`]: line splitting, prompt and question recognition, status and acknowledgement
//!   parsing over bytes, with damaged lines discarded whole and resynchronisation by line.
//! - [`dialogue`]: the login and command steps as pure decisions over what the PDU printed
//!   last (send the user, the password, the confirmation answer; ready; wait).
//! - [`transport`]: the byte stream, a local port (`tokio-serial`, locked by lock file,
//!   `TIOCEXCL` and `flock`) or a console server's TCP port, behind one [`Link`] trait.
//! - [`session`]: walks the dialogue over a link, with a timeout on every read, a cap on
//!   every reply, and resynchronisation (a line end, then everything up to the prompt
//!   discarded) after garbage, a half line or a cancelled call.
//! - [`device`]: [`SerialPduDevice`], the [`crate::PowerDevice`] whose ports are outlets.

pub mod device;
pub mod dialogue;
pub mod model;
pub mod parse;
pub mod session;
pub mod transport;

pub use device::{SerialPduConfig, SerialPduDevice};
pub use dialogue::{command_step, login_step, CommandAction, LoginAction, LoginError};
pub use model::{Ack, Model, StatusLayout, MODELS};
pub use parse::{OutletStatus, ParseError, StatusReport};
pub use session::Timeouts;
pub use transport::{Endpoint, Link, Parity, SerialLine};
