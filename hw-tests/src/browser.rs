//! A real browser for page tests: Debian's headless Chromium driven through ChromeDriver's
//! W3C WebDriver HTTP API (JSON over loopback HTTP/1.1, spoken here with `std` only: a dozen
//! commands do not need a client crate).
//!
//! Chromium runs with a new empty profile directory and without the background connections it
//! would otherwise try on a closed network (`--disable-background-networking` and friends).
//! [`Browser`] ends its session and the driver's process group on drop, also when the test
//! panics, so no browser outlives the test.

use base64::Engine as _;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The driver and browser the Debian packages install.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Chromium's binary.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Longest any one WebDriver command may take (a navigation to a loopback page is milliseconds;
/// a hung browser must fail the test, not hang it).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// What went wrong driving the browser.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// The driver could not be started.
    #[error("cannot start {CHROMEDRIVER}: {0}; install chromium and chromium-driver (scripts/install-test-deps.sh)")]
    Spawn(std::io::Error),
    /// The driver did not answer in time.
    #[error("chromedriver did not answer on port {port} within {secs} s")]
    NotReady {
        /// Its port.
        port: u16,
        /// How long we waited.
        secs: u64,
    },
    /// A WebDriver call failed at the HTTP level.
    #[error("WebDriver {method} {path}: {detail}")]
    Http {
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// What happened.
        detail: String,
    },
    /// The driver answered with a WebDriver error.
    #[error("WebDriver {method} {path} answered {status}: {error}: {message}")]
    Command {
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// HTTP status.
        status: u16,
        /// WebDriver error code.
        error: String,
        /// Its message.
        message: String,
    },
    /// A wait ran out.
    #[error("waited {secs} s for {what}; last seen: {last}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        secs: f64,
        /// The last value seen.
        last: String,
    },
    /// A screenshot could not be decoded or written.
    #[error("cannot save the screenshot to {path}: {detail}")]
    Screenshot {
        /// Where.
        path: String,
        /// Why.
        detail: String,
    },
}

/// A headless Chromium session, ended on drop.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One HTTP/1.1 exchange with the driver. ChromeDriver keeps the connection open even when
/// asked to close it, so the body is read by its `Content-Length` (or its chunks), not to EOF.
fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Vec<u8>), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(COMMAND_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(COMMAND_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let complete = |raw: &[u8]| -> Option<Result<(u16, Vec<u8>), String>> {
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        let rest = &raw[split + 4..];
        let status = match head.split_whitespace().nth(1).and_then(|c| c.parse().ok()) {
            Some(c) => c,
            None => return Some(Err(format!("bad status line in {head:?}"))),
        };
        let header = |name: &str| {
            head.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim() == name)
                .map(|(_, v)| v.trim().to_string())
        };
        if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            return match dechunk(rest) {
                Ok(b) => Some(Ok((status, b))),
                Err(Incomplete::More) => None,
                Err(Incomplete::Bad(e)) => Some(Err(e)),
            };
        }
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        (rest.len() >= len).then(|| Ok((status, rest[..len].to_vec())))
    };
    loop {
        if let Some(r) = complete(&raw) {
            return r;
        }
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the driver closed the connection mid-answer".into());
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

/// Why a chunked body could not be decoded yet.
#[derive(Debug, PartialEq)]
enum Incomplete {
    /// More bytes are needed.
    More,
    /// The encoding is wrong.
    Bad(String),
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, Incomplete> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or(Incomplete::More)?;
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| Incomplete::Bad(format!("bad chunk size {size_text:?}: {e}")))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err(Incomplete::More);
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium with a window of `width` x `height` CSS
    /// pixels. `extra_args` are added to Chromium's (e.g. `--ignore-certificate-errors` for a
    /// test server's own certificate).
    pub fn start(width: u32, height: u32, extra_args: &[&str]) -> Result<Browser, BrowserError> {
        let port = free_port().map_err(BrowserError::Spawn)?;
        let profile = tempfile::tempdir().map_err(BrowserError::Spawn)?;
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: the drop kills the driver and every browser process it
            // started, whatever they did.
            .process_group(0)
            .spawn()
            .map_err(BrowserError::Spawn)?;
        let mut b = Browser {
            driver,
            port,
            session: String::new(),
            _profile: profile,
        };
        let until = Instant::now() + Duration::from_secs(20);
        while http(port, "GET", "/status", None).is_err() {
            if Instant::now() > until {
                return Err(BrowserError::NotReady { port, secs: 20 });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--metrics-recording-only",
            "--hide-scrollbars",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("--user-data-dir={}", b._profile.path().display()));
        args.push(format!("--window-size={width},{height}"));
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": extra_args.contains(&"--ignore-certificate-errors"),
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let v = b.call("POST", "/session", Some(caps))?;
        b.session = v["sessionId"].as_str().unwrap_or_default().to_string();
        Ok(b)
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, BrowserError> {
        let (status, bytes) =
            http(self.port, method, path, body.as_ref()).map_err(|detail| BrowserError::Http {
                method: method.into(),
                path: path.into(),
                detail,
            })?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| BrowserError::Http {
            method: method.into(),
            path: path.into(),
            detail: format!(
                "answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            ),
        })?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if status != 200 {
            return Err(BrowserError::Command {
                method: method.into(),
                path: path.into(),
                status,
                error: value["error"].as_str().unwrap_or("?").to_string(),
                message: value["message"].as_str().unwrap_or("").to_string(),
            });
        }
        Ok(value)
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url` and waits for its document to load.
    pub fn goto(&self, url: &str) -> Result<(), BrowserError> {
        self.call(
            "POST",
            &self.session_path("/url"),
            Some(json!({"url": url})),
        )
        .map(drop)
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page and returns what it
    /// returns.
    pub fn run(&self, script: &str, args: Value) -> Result<Value, BrowserError> {
        self.call(
            "POST",
            &self.session_path("/execute/sync"),
            Some(json!({"script": script, "args": args})),
        )
    }

    fn element(&self, css: &str) -> Result<String, BrowserError> {
        let v = self.call(
            "POST",
            &self.session_path("/element"),
            Some(json!({"using": "css selector", "value": css})),
        )?;
        // The W3C element reference is the one member of the answer (its key is the
        // standard's constant; older drivers used `ELEMENT`).
        v.as_object()
            .and_then(|o| o.values().find_map(|x| x.as_str()))
            .map(str::to_string)
            .ok_or_else(|| BrowserError::Command {
                method: "POST".into(),
                path: "/element".into(),
                status: 200,
                error: "no element reference".into(),
                message: format!("{css}: {v}"),
            })
    }

    /// Types `text` into the element `css` selects, as a person would.
    pub fn type_into(&self, css: &str, text: &str) -> Result<(), BrowserError> {
        let id = self.element(css)?;
        self.call(
            "POST",
            &self.session_path(&format!("/element/{id}/value")),
            Some(json!({"text": text})),
        )
        .map(drop)
    }

    /// Clicks the element `css` selects.
    pub fn click(&self, css: &str) -> Result<(), BrowserError> {
        let id = self.element(css)?;
        self.call(
            "POST",
            &self.session_path(&format!("/element/{id}/click")),
            Some(json!({})),
        )
        .map(drop)
    }

    /// The rendered text and the attributes of the first element `css` selects, or `Null`.
    pub fn inspect(&self, css: &str) -> Result<Value, BrowserError> {
        self.run(
            "const e = document.querySelector(arguments[0]); if (!e) return null; \
             const a = {}; for (const x of e.attributes) a[x.name] = x.value; \
             return {text: e.innerText, hidden: e.hidden || e.offsetParent === null, attrs: a};",
            json!([css]),
        )
    }

    /// Polls [`Browser::inspect`] every 10 ms until `ok` accepts what it returns, for at most
    /// `limit`; returns the accepted value.
    pub fn wait_for(
        &self,
        css: &str,
        limit: Duration,
        ok: impl Fn(&Value) -> bool,
    ) -> Result<Value, BrowserError> {
        let start = Instant::now();
        loop {
            let v = self.inspect(css)?;
            if ok(&v) {
                return Ok(v);
            }
            if start.elapsed() > limit {
                return Err(BrowserError::Timeout {
                    what: css.to_string(),
                    secs: limit.as_secs_f64(),
                    last: v.to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Resizes the window (CSS pixels).
    pub fn resize(&self, width: u32, height: u32) -> Result<(), BrowserError> {
        self.call(
            "POST",
            &self.session_path("/window/rect"),
            Some(json!({"width": width, "height": height})),
        )
        .map(drop)
    }

    /// Saves a PNG of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) -> Result<(), BrowserError> {
        let v = self.call("GET", &self.session_path("/screenshot"), None)?;
        let err = |detail: String| BrowserError::Screenshot {
            path: path.display().to_string(),
            detail,
        };
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .map_err(|e| err(e.to_string()))?;
        if !png.starts_with(b"\x89PNG") {
            return Err(err("the driver's answer is not a PNG".into()));
        }
        std::fs::write(path, png).map_err(|e| err(e.to_string()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(self.port, "DELETE", &self.session_path(""), None);
        }
        if let Ok(pgid) = libc::pid_t::try_from(self.driver.id()) {
            // SAFETY: kill(2) on the process group our own unreaped child leads (it was
            // spawned with process_group(0), so its pid is the group id and cannot be reused
            // before we wait for it).
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let _ = self.driver.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::{dechunk, Incomplete};

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk(b"4\r\nWiki\r\n5;x=1\r\npedia\r\n0\r\n\r\n").as_deref(),
            Ok(&b"Wikipedia"[..])
        );
        assert_eq!(dechunk(b"9\r\nshort\r\n"), Err(Incomplete::More));
        assert!(matches!(dechunk(b"zz\r\n"), Err(Incomplete::Bad(_))));
    }
}
