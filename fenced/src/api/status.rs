//! The status page (`GET /status`): one HTML document with its style and script inline, built
//! into the binary, so it works on an air-gapped fence controller with nothing else served.
//!
//! The page itself carries no data: it is the same bytes for every caller, so it is served to
//! anyone who can reach a listener (like `/healthz`). Everything it shows it reads from the API
//! with the viewer's own credentials (a client certificate, the Unix socket's peer uid behind an
//! `ssh -L` forward, or a bearer token the viewer types in, kept in the tab's sessionStorage and
//! sent only as an `Authorization` header to this origin), so a viewer without the `read` role
//! is refused by the API exactly as any other client is, and sees nothing but that refusal.
//!
//! The Content-Security-Policy allows only the inline style and script whose hashes it names,
//! and connections to this origin only: even a script injected through some future bug could
//! not load code or send a token elsewhere.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// The page's skeleton; `@CSS@` and `@JS@` are replaced by the two files below.
pub const HTML: &str = include_str!("status/page.html");
/// The page's style sheet.
pub const CSS: &str = include_str!("status/page.css");
/// The page's script.
pub const JS: &str = include_str!("status/page.js");

/// The most the assembled page may weigh, bytes. A fence controller may sit behind a slow
/// management network and a phone on a poor link at 3 a.m.; the issue asks for well under
/// 50 KiB, and a test holds the page to this.
pub const SIZE_BUDGET: usize = 40 * 1024;

/// The assembled page and its Content-Security-Policy.
pub struct Page {
    /// The HTML document with style and script inline.
    pub html: String,
    /// The policy naming the inline style's and script's hashes.
    pub csp: String,
}

fn csp_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// Builds the page: the skeleton with the style and script put in, and a policy that allows
/// exactly those two inline blocks.
pub fn build() -> Page {
    let html = HTML.replacen("@CSS@", CSS, 1).replacen("@JS@", JS, 1);
    let csp = format!(
        "default-src 'none'; style-src {}; script-src {}; connect-src 'self'; img-src 'none'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        csp_hash(CSS),
        csp_hash(JS)
    );
    Page { html, csp }
}

static PAGE: LazyLock<(String, HeaderValue)> = LazyLock::new(|| {
    let p = build();
    // The policy is ASCII by construction (hashes are base64); a failure here would be a bug
    // in `build`, and the page is then served without it rather than not at all.
    let csp = HeaderValue::from_str(&p.csp).unwrap_or(HeaderValue::from_static(
        "default-src 'none'; frame-ancestors 'none'",
    ));
    (p.html, csp)
});

/// `GET /status`.
pub(super) async fn page() -> Response {
    let (html, csp) = &*PAGE;
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, csp.clone()),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            // The page is static, but a cached copy outliving an upgrade would talk to a newer
            // API with an older script.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        html.clone(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_within_its_size_budget() {
        let p = build();
        assert!(
            p.html.len() <= SIZE_BUDGET,
            "the status page weighs {} bytes, over its budget of {SIZE_BUDGET}",
            p.html.len()
        );
        assert!(!p.html.contains("@CSS@") && !p.html.contains("@JS@"));
        assert!(p.html.contains(CSS) && p.html.contains(JS));
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        let p = build();
        for needle in [
            "http://", "https://", "//cdn", "src=", "<link", "@import", "url(",
        ] {
            assert!(
                !p.html.contains(needle),
                "the page must be self-contained, found {needle:?}"
            );
        }
        assert!(p.csp.contains("connect-src 'self'"), "{}", p.csp);
        assert!(p.csp.contains(&csp_hash(JS)) && p.csp.contains(&csp_hash(CSS)));
    }

    /// Data from the API goes in as text; these are the ways a script turns a string into
    /// markup or code, and none of them may appear.
    #[test]
    fn the_script_never_parses_strings_as_html_or_code() {
        for needle in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "DOMParser",
            "createContextualFragment",
            "localStorage",
        ] {
            assert!(!JS.contains(needle), "page.js uses {needle}");
        }
    }

    #[test]
    fn the_csp_hash_is_of_the_exact_inline_text() {
        // SHA-256 of the empty string, in base64: a published value.
        assert_eq!(
            csp_hash(""),
            "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
        );
    }
}
