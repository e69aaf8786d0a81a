//! The dialogue's decisions as pure functions: given what the PDU printed last (the half line
//! after the last line end), what to send next. The transport only reads with a timeout,
//! hands the bytes here and sends what it is told; so a login loop, a repeated password
//! question or a confirmation question is tested without a port.
//!
//! Secrets never pass through here: the answer says "send the password", and the transport
//! writes it from its [`crate::Secret`].

use super::model::Model;
use super::parse::{asks, prompt_at_end};

/// What to do after reading during login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginAction {
    /// The command prompt is showing: logged in.
    Ready,
    /// Send the configured user name.
    SendUser,
    /// Send the password.
    SendPassword,
    /// Nothing recognisable yet: keep reading until the read timeout, then send a bare line
    /// end to wake the console (a serial console prints nothing until it gets a key).
    Wait,
}

/// What has been sent so far during login.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoginProgress {
    /// The user name was sent.
    pub user_sent: bool,
    /// The password was sent.
    pub password_sent: bool,
}

/// Why a login cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// The PDU asked for the password (or user name) again after we sent it.
    #[error("the PDU asked for the {what} again after it was sent: the credentials are wrong; check the user name and password file configured for this PDU")]
    Rejected {
        /// `password` or `user name`.
        what: &'static str,
    },
    /// The PDU asks for a user name but none is configured.
    #[error("the PDU asks for a user name but none is configured for it; set the user name")]
    NoUser,
    /// The PDU asks for a password but none is configured.
    #[error("the PDU asks for a password but none is configured for it; set the password file")]
    NoPassword,
}

/// Decides the next login step from the half line `tail`.
pub fn login_step(
    model: &Model,
    tail: &[u8],
    have_user: bool,
    have_password: bool,
    progress: LoginProgress,
) -> Result<LoginAction, LoginError> {
    if prompt_at_end(model, tail).is_some() {
        return Ok(LoginAction::Ready);
    }
    // Password first: "User Name : admin\r\nPassword  :" leaves only the password question in
    // the half line, but some firmware prints both on one line.
    if asks(model.password_prompts, tail) {
        if progress.password_sent {
            return Err(LoginError::Rejected { what: "password" });
        }
        if !have_password {
            return Err(LoginError::NoPassword);
        }
        return Ok(LoginAction::SendPassword);
    }
    if asks(model.user_prompts, tail) {
        if progress.user_sent {
            return Err(LoginError::Rejected { what: "user name" });
        }
        if !have_user {
            return Err(LoginError::NoUser);
        }
        return Ok(LoginAction::SendUser);
    }
    Ok(LoginAction::Wait)
}

/// What to do after reading, once a switching or status command was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandAction {
    /// The prompt is back: the reply is complete, parse it.
    Done,
    /// The PDU asks for confirmation: send this answer (once).
    Answer(&'static str),
    /// Keep reading until the read timeout (then the command failed: no reply).
    Wait,
}

/// Decides the next step after a command from the half line `tail`; `answered` says
/// whether the confirmation question was already answered (a second question is not
/// answered again: the transport times out and reports it).
pub fn command_step(model: &Model, tail: &[u8], answered: bool) -> CommandAction {
    if prompt_at_end(model, tail).is_some() {
        return CommandAction::Done;
    }
    match model.confirm {
        Some((question, answer)) if !answered && asks(&[question], tail) => {
            CommandAction::Answer(answer)
        }
        _ => CommandAction::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::{APC_AP79XX, BAYTECH_RPC, WTI_NPS};
    use super::*;

    #[test]
    fn apc_login_walks_user_then_password_then_prompt() {
        let mut p = LoginProgress::default();
        let m = &APC_AP79XX;
        assert_eq!(login_step(m, b"", true, true, p), Ok(LoginAction::Wait));
        assert_eq!(
            login_step(m, b"User Name : ", true, true, p),
            Ok(LoginAction::SendUser)
        );
        p.user_sent = true;
        assert_eq!(
            login_step(m, b"Password  : ", true, true, p),
            Ok(LoginAction::SendPassword)
        );
        p.password_sent = true;
        assert_eq!(
            login_step(m, b"apc>", true, true, p),
            Ok(LoginAction::Ready)
        );
        // Asked again: wrong password, never a loop.
        assert_eq!(
            login_step(m, b"Password  : ", true, true, p),
            Err(LoginError::Rejected { what: "password" })
        );
    }

    #[test]
    fn missing_credentials_are_named() {
        let p = LoginProgress::default();
        assert_eq!(
            login_step(&WTI_NPS, b"Enter Password: ", true, false, p),
            Err(LoginError::NoPassword)
        );
        assert_eq!(
            login_step(&BAYTECH_RPC, b"Enter username>", false, true, p),
            Err(LoginError::NoUser)
        );
        // No login at all on a console without passwords.
        assert_eq!(
            login_step(&BAYTECH_RPC, b"RPC-3>", false, false, p),
            Ok(LoginAction::Ready)
        );
    }

    #[test]
    fn confirmation_is_answered_once() {
        let q = b"Turn Off Outlet 3 (Y/N)?";
        assert_eq!(
            command_step(&BAYTECH_RPC, q, false),
            CommandAction::Answer("Y")
        );
        assert_eq!(command_step(&BAYTECH_RPC, q, true), CommandAction::Wait);
        assert_eq!(
            command_step(&BAYTECH_RPC, b"RPC-3>", true),
            CommandAction::Done
        );
        // APC asks nothing.
        assert_eq!(command_step(&APC_AP79XX, q, false), CommandAction::Wait);
    }
}
