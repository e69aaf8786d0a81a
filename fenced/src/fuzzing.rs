//! Entry points shared by the cargo-fuzz targets in `fenced/fuzz` and the ordinary test that
//! replays their corpora on stable Rust (`fenced/tests/fuzz_corpus.rs`). Each must return
//! normally for every input: an error is an answer, a panic is a bug.

use crate::api::ReasonBody;
use crate::config::Config;
use crate::model::{FenceRequest, HistoryQuery};
use std::path::Path;

/// The config parser: any text parses or yields an error that names the file.
pub fn config_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(Path::new("/fuzz/fenced.toml"), text, &|_| {
        Some(b"pw".to_vec())
    }) {
        Ok(c) => {
            let _ = format!("{c:?}");
        }
        Err(e) => {
            let s = e.to_string();
            assert!(s.starts_with("/fuzz/fenced.toml"), "{s}");
        }
    }
}

/// API request bodies and query strings, decoded as the API decodes them.
pub fn api_body(data: &[u8]) {
    if let Ok(r) = serde_json::from_slice::<FenceRequest>(data) {
        let _ = serde_json::to_vec(&r);
    }
    let _ = serde_json::from_slice::<ReasonBody>(data);
    if let Ok(q) = std::str::from_utf8(data) {
        let uri = format!("http://x/v1/history?{q}");
        if let Ok(uri) = uri.parse::<axum::http::Uri>() {
            let _ = axum::extract::Query::<HistoryQuery>::try_from_uri(&uri);
        }
    }
}

/// The client-certificate subject parser and the tokens file parser.
pub fn credentials(data: &[u8]) {
    let _ = crate::api::tls::subject_cn(data);
    let _ = crate::api::tls::fingerprint(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::api::tokens::parse(text);
        let _ = crate::history::parse_public_key(text);
    }
}
