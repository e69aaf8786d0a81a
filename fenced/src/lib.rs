//! Palisade's fencer: configuration, the fencing engine, durable history and the fencer API.

pub mod api;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod devices;
pub mod engine;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod history;
pub mod model;

pub use engine::{Clock, DeviceSlot, Engine};
pub use error::EngineError;
