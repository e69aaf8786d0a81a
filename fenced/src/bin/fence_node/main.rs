//! `fence_node`: the operator command for the Palisade fencer daemon.
//!
//! The command line (every verb's options, help and examples) is [`fenced::cli::fence_node`],
//! where the packaging's generator renders it as a man page and completions; this file holds the
//! dispatch; each verb runs in a file of its own, and what several verbs print is in
//! [`output`].

mod batch;
mod confirm;
mod devices;
mod error;
mod fence;
mod history;
mod output;
mod pause;
mod status;
mod timestamp;

use clap::Parser;
use error::CliError;
pub use fenced::cli::fence_node::{
    Cli, ConfirmArgs, DevicesArgs, FenceArgs, HistoryArgs, PauseArgs, StatusArgs, Verb,
};
use fenced::client::{Client, Endpoint};
use fenced::config::DEFAULT_SOCKET;
use fenced::model::Action;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The exit status of `fence_node`; scripts rely on these numbers, so they never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success; for fencing verbs: the target is confirmed fenced (or powered on, for `on`).
    Ok = 0,
    /// The operation finished without confirmation: the target is NOT fenced.
    Failed = 1,
    /// Bad usage. 2 is also clap's exit status for usage errors it finds itself.
    Usage = 2,
    /// The daemon refused the request (conflict, paused, rate-limited, unknown name, forbidden).
    Refused = 3,
    /// The daemon could not be reached, did not answer in time, or failed internally.
    Unreachable = 4,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// What every verb works with: the API client and the output mode.
pub struct Ui {
    /// The daemon's API.
    pub client: Client,
    /// `--json`: the API's answers on stdout instead of text.
    pub json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match setup(&cli).and_then(|(rt, ui)| rt.block_on(dispatch(&ui, cli.verb))) {
        Ok(exit) => exit.into(),
        Err(e) => error::report(&e, json).into(),
    }
}

/// Builds the runtime and the client from the global options.
fn setup(cli: &Cli) -> Result<(tokio::runtime::Runtime, Ui), CliError> {
    let endpoint = match &cli.url {
        Some(u) => Endpoint::from_url(u)?,
        None => Endpoint::Unix(cli.socket.clone().unwrap_or_else(|| {
            std::env::var_os("PALISADE_SOCKET")
                .filter(|s| !s.is_empty())
                .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)
        })),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let mut client = Client::new(endpoint, Duration::from_secs(cli.api_timeout.max(1)));
    if let Some(ca) = &cli.ca {
        client = client.with_tls(fenced::client::tls_config(ca)?);
    }
    let token_file = cli.token_file.clone().or_else(|| {
        std::env::var_os("PALISADE_TOKEN_FILE")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    });
    if let Some(f) = &token_file {
        client = client.with_token(fenced::client::read_token_file(f)?);
    }
    Ok((
        rt,
        Ui {
            client,
            json: cli.json,
        },
    ))
}

async fn dispatch(ui: &Ui, verb: Verb) -> Result<Exit, CliError> {
    match verb {
        Verb::Off(a) => fence::run(ui, Action::Off, a).await,
        Verb::Reboot(a) => fence::run(ui, Action::Reboot, a).await,
        Verb::On(a) => fence::run(ui, Action::On, a).await,
        Verb::Status(a) => status::run(ui, a).await,
        Verb::History(a) if a.verify => history::verify_ledger(ui).await,
        Verb::History(a) if a.audit => history::audit(ui, a.limit).await,
        Verb::History(a) => history::run(ui, a).await,
        Verb::Devices(a) => devices::run(ui, a).await,
        Verb::Confirm(a) => confirm::run(ui, a).await,
        Verb::Pause(a) => pause::run(ui, true, &a.reason).await,
        Verb::Resume(a) => pause::run(ui, false, &a.reason).await,
    }
}
