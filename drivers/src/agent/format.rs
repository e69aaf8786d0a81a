//! The ClusterLabs fence agent API's text formats, as pure functions over bytes: the
//! `key=value` option lines an agent reads on stdin, the `metadata` XML it prints, and the
//! `plug,alias` lines of `list`. Shared by the `agent` driver (which runs agents) and
//! `fence_palisade` (which is one).

use std::fmt;

/// Why agent text could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    /// 1-based line (or 0 when not line-based).
    pub line: usize,
    /// What is wrong.
    pub detail: String,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: {}", self.line, self.detail)
        } else {
            f.write_str(&self.detail)
        }
    }
}

impl std::error::Error for FormatError {}

fn err(line: usize, detail: impl Into<String>) -> FormatError {
    FormatError {
        line,
        detail: detail.into(),
    }
}

/// Parses option lines as agents read them on stdin: `name=value`, one per line; blank lines
/// and `#` comments skipped; a value wrapped in double quotes loses them; a line without `=` is
/// a flag (`name` alone, value empty). Names are normalised to `snake_case` (`-` becomes `_`),
/// as fence-agents accept both spellings. A later line overrides an earlier one of the same
/// name.
pub fn parse_options(input: &[u8]) -> Result<Vec<(String, String)>, FormatError> {
    let text = std::str::from_utf8(input).map_err(|e| {
        err(
            0,
            format!("options are not UTF-8 (byte {})", e.valid_up_to()),
        )
    })?;
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line.split_once('=').unwrap_or((line, ""));
        let name = name.trim().replace('-', "_");
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(err(
                i + 1,
                format!("`{name}` is not an option name (letters, digits, `_` and `-`)"),
            ));
        }
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        out.retain(|(n, _)| *n != name);
        out.push((name, value.to_string()));
    }
    Ok(out)
}

/// Encodes options as stdin lines for an agent. Refuses names or values that would break the
/// line format (a newline in a value would smuggle in another option).
pub fn encode_option(out: &mut Vec<u8>, name: &str, value: &[u8]) -> Result<(), FormatError> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(err(0, format!("`{name}` is not a valid agent option name")));
    }
    if value.iter().any(|b| *b == b'\n' || *b == b'\r' || *b == 0) {
        return Err(err(
            0,
            format!("the value of option `{name}` holds a line break or NUL byte, which the agent stdin format cannot carry"),
        ));
    }
    out.extend_from_slice(name.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
    Ok(())
}

/// One `<parameter>` of an agent's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    /// Its name, as given on stdin.
    pub name: String,
    /// Whether the agent says it is required.
    pub required: bool,
    /// Whether it is an old name kept for compatibility.
    pub deprecated: bool,
}

/// What an agent's `metadata` action says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The `name` attribute of `<resource-agent>`.
    pub name: String,
    /// Its `<parameter>`s.
    pub parameters: Vec<Parameter>,
    /// Its `<action>` names.
    pub actions: Vec<String>,
}

impl Metadata {
    /// Whether the agent accepts an option of this name (either spelling of `-`/`_`).
    pub fn has_parameter(&self, name: &str) -> bool {
        let n = name.replace('-', "_");
        self.parameters
            .iter()
            .any(|p| p.name.replace('-', "_") == n)
    }

    /// Whether the agent lists this action.
    pub fn has_action(&self, name: &str) -> bool {
        self.actions.iter().any(|a| a == name)
    }
}

/// One XML tag as the scanner sees it.
struct Tag<'a> {
    name: &'a str,
    closing: bool,
    attrs: Vec<(&'a str, String)>,
}

/// Decodes the five predefined XML entities and numeric character references.
fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after.find(';')?;
        let ent = &after[..end];
        let c = match ent {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let n = if let Some(h) = ent.strip_prefix("#x") {
                    u32::from_str_radix(h, 16).ok()?
                } else {
                    ent.strip_prefix('#')?.parse().ok()?
                };
                char::from_u32(n)?
            }
        };
        out.push(c);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

fn parse_tag(body: &str, line: usize) -> Result<Tag<'_>, FormatError> {
    let (closing, body) = match body.strip_prefix('/') {
        Some(b) => (true, b),
        None => (false, body),
    };
    let body = body.strip_suffix('/').unwrap_or(body);
    let name_end = body
        .find(|c: char| c.is_ascii_whitespace())
        .unwrap_or(body.len());
    let name = &body[..name_end];
    if name.is_empty() {
        return Err(err(line, "a tag without a name"));
    }
    let mut attrs = Vec::new();
    let mut rest = body[name_end..].trim_start();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or_else(|| err(line, format!("attribute without a value in <{name}>")))?;
        let key = rest[..eq].trim();
        let after = rest[eq + 1..].trim_start();
        let quote = after
            .chars()
            .next()
            .filter(|c| *c == '"' || *c == '\'')
            .ok_or_else(|| err(line, format!("unquoted attribute `{key}` in <{name}>")))?;
        let close = after[1..]
            .find(quote)
            .ok_or_else(|| err(line, format!("unterminated attribute `{key}` in <{name}>")))?;
        let value = unescape(&after[1..1 + close])
            .ok_or_else(|| err(line, format!("bad entity in attribute `{key}` of <{name}>")))?;
        attrs.push((key, value));
        rest = after[close + 2..].trim_start();
    }
    Ok(Tag {
        name,
        closing,
        attrs,
    })
}

/// Parses an agent's `metadata` XML (the ClusterLabs `resource-agent` format) far enough to
/// know its parameters and actions. Not a general XML parser: it reads tags and attributes and
/// skips text, comments, processing instructions and doctype declarations.
pub fn parse_metadata(input: &[u8]) -> Result<Metadata, FormatError> {
    let text = std::str::from_utf8(input).map_err(|e| {
        err(
            0,
            format!("metadata is not UTF-8 (byte {})", e.valid_up_to()),
        )
    })?;
    let mut name = None;
    let mut parameters = Vec::new();
    let mut actions = Vec::new();
    let mut rest = text;
    let mut line = 1usize;
    let mut open_root = false;
    let mut closed_root = false;
    while let Some(lt) = rest.find('<') {
        line += rest[..lt].bytes().filter(|b| *b == b'\n').count();
        let after = &rest[lt + 1..];
        let (skip, tag_body) = if let Some(c) = after.strip_prefix("!--") {
            let end = c
                .find("-->")
                .ok_or_else(|| err(line, "unterminated comment"))?;
            (lt + 1 + 3 + end + 3, None)
        } else if after.starts_with('?') || after.starts_with('!') {
            let end = after
                .find('>')
                .ok_or_else(|| err(line, "unterminated declaration"))?;
            (lt + 1 + end + 1, None)
        } else {
            let end = after
                .find('>')
                .ok_or_else(|| err(line, "unterminated tag"))?;
            (lt + 1 + end + 1, Some(after[..end].trim()))
        };
        if let Some(body) = tag_body {
            let tag = parse_tag(body, line)?;
            let attr = |k: &str| {
                tag.attrs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.clone())
            };
            match (tag.name, tag.closing) {
                ("resource-agent", false) => {
                    if open_root || closed_root {
                        return Err(err(line, "a second <resource-agent>"));
                    }
                    open_root = true;
                    name = Some(
                        attr("name").ok_or_else(|| err(line, "<resource-agent> without a name"))?,
                    );
                }
                ("resource-agent", true) => closed_root = true,
                ("parameter", false) if open_root && !closed_root => {
                    let pname = attr("name")
                        .filter(|n| !n.is_empty())
                        .ok_or_else(|| err(line, "<parameter> without a name"))?;
                    parameters.push(Parameter {
                        name: pname,
                        required: attr("required").as_deref() == Some("1"),
                        deprecated: attr("deprecated").as_deref() == Some("1"),
                    });
                }
                ("action", false) if open_root && !closed_root => {
                    actions.push(
                        attr("name")
                            .filter(|n| !n.is_empty())
                            .ok_or_else(|| err(line, "<action> without a name"))?,
                    );
                }
                _ => {}
            }
        }
        line += rest[lt..skip].bytes().filter(|b| *b == b'\n').count();
        rest = &rest[skip..];
    }
    match name {
        Some(name) if closed_root => Ok(Metadata {
            name,
            parameters,
            actions,
        }),
        Some(_) => Err(err(0, "metadata ends before </resource-agent>")),
        None => Err(err(
            0,
            "no <resource-agent> element: this is not fence agent metadata",
        )),
    }
}

/// One line of an agent's `list` (or `list-status`) output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The plug (port) id to pass back as `plug=`.
    pub plug: String,
    /// The alias (often the node name), if the agent printed one.
    pub alias: Option<String>,
    /// `ON`/`OFF`/`UNKNOWN` for `list-status`.
    pub status: Option<String>,
}

/// Parses `list`/`list-status` output: `plug[,alias[,status]]` per line. `Ok(None)` when the
/// agent says it has no plugs (`N/A`, as single-node agents print).
pub fn parse_list(input: &[u8]) -> Result<Option<Vec<ListEntry>>, FormatError> {
    let text = std::str::from_utf8(input).map_err(|e| {
        err(
            0,
            format!("list output is not UTF-8 (byte {})", e.valid_up_to()),
        )
    })?;
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    if lines.len() == 1 && lines[0].1 == "N/A" {
        return Ok(None);
    }
    let mut out = Vec::new();
    for (n, l) in lines {
        let mut parts = l.splitn(3, ',').map(str::trim);
        let plug = parts.next().unwrap_or_default();
        if plug.is_empty() || plug.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(err(n, format!("`{l}` is not a `plug,alias` line")));
        }
        let alias = parts.next().filter(|a| !a.is_empty()).map(str::to_string);
        let status = parts.next().map(str::to_string);
        if let Some(s) = &status {
            if !matches!(
                s.as_str(),
                "ON" | "OFF" | "UNKNOWN" | "on" | "off" | "unknown"
            ) {
                return Err(err(n, format!("status `{s}` is not ON, OFF or UNKNOWN")));
            }
        }
        out.push(ListEntry {
            plug: plug.to_string(),
            alias,
            status,
        });
    }
    Ok(Some(out))
}

/// Makes an agent's stderr fit for history: every occurrence of a secret replaced by `***`,
/// control characters other than newlines escaped, and only the last `limit` bytes kept (the
/// end of the output usually holds the error).
pub fn scrub(stderr: &[u8], secrets: &[&[u8]], limit: usize) -> String {
    let mut bytes = stderr.to_vec();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i..].starts_with(s) {
                out.extend_from_slice(b"***");
                i += s.len();
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        bytes = out;
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut clean: String = text
        .chars()
        .flat_map(|c| {
            let esc: Vec<char> = if c == '\n' || !c.is_control() {
                vec![c]
            } else {
                c.escape_default().collect()
            };
            esc
        })
        .collect();
    let trimmed = clean.trim().len();
    if clean.len() > limit || trimmed != clean.len() {
        let t = clean.trim().to_string();
        clean = if t.len() > limit {
            let mut start = t.len() - limit;
            while !t.is_char_boundary(start) {
                start += 1;
            }
            format!("...{}", &t[start..])
        } else {
            t
        };
    }
    clean
}

/// Runs every parser on one input (fuzzing and the corpus replay test).
#[doc(hidden)]
pub fn fuzz_all(data: &[u8]) {
    let _ = parse_options(data);
    let _ = parse_metadata(data);
    let _ = parse_list(data);
    let _ = scrub(data, &[b"pw", b"a"], 64);
    let mut out = Vec::new();
    let _ = encode_option(&mut out, "password", data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_lines_quotes_comments_and_dashes() {
        let o = parse_options(b"# c\naction=off\n\nplug=\"node 1\"\nipport=623\nlanplus\npower-wait=0\naction=reboot\n").unwrap();
        assert_eq!(
            o,
            vec![
                ("plug".to_string(), "node 1".to_string()),
                ("ipport".into(), "623".into()),
                ("lanplus".into(), "".into()),
                ("power_wait".into(), "0".into()),
                ("action".into(), "reboot".into()),
            ]
        );
        assert!(parse_options(b"bad name=1\n").is_err());
        assert!(parse_options(b"\xff=1").is_err());
        assert_eq!(parse_options(b"").unwrap(), vec![]);
    }

    #[test]
    fn encoding_refuses_line_breaks() {
        let mut v = Vec::new();
        encode_option(&mut v, "password", b"p w").unwrap();
        assert_eq!(v, b"password=p w\n");
        assert!(encode_option(&mut v, "password", b"x\naction=on").is_err());
        assert!(encode_option(&mut v, "a=b", b"x").is_err());
        // What we write is what an agent reads back.
        assert_eq!(
            parse_options(&v).unwrap(),
            vec![("password".to_string(), "p w".to_string())]
        );
    }

    #[test]
    fn metadata_of_a_real_agent_shape() {
        let xml = br#"<?xml version="1.0" ?>
<resource-agent name="fence_x" shortdesc="X &amp; Y" >
<symlink name="fence_y" shortdesc="y"/>
<longdesc>text with <b>no</b> meaning</longdesc>
<!-- a comment with <parameter name="fake"> -->
<parameters>
	<parameter name="action" unique="0" required="1">
		<getopt mixed="-o, --action=[action]" />
		<content type="string" default="reboot"  />
	</parameter>
	<parameter name="ipaddr" unique="0" required="0" deprecated="1">
	</parameter>
	<parameter name='ip' unique="0" required="0" obsoletes="ipaddr"/>
</parameters>
<actions>
	<action name="on" automatic="0"/>
	<action name="off" />
	<action name="status" />
</actions>
</resource-agent>
"#;
        let m = parse_metadata(xml).unwrap();
        assert_eq!(m.name, "fence_x");
        let names: Vec<&str> = m.parameters.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["action", "ipaddr", "ip"]);
        assert!(m.parameters[0].required && m.parameters[1].deprecated);
        assert!(m.has_parameter("ip") && !m.has_parameter("fake"));
        assert_eq!(m.actions, ["on", "off", "status"]);
    }

    #[test]
    fn metadata_garbage_is_an_error() {
        assert!(parse_metadata(b"hello").is_err());
        assert!(parse_metadata(b"<resource-agent name=\"x\">").is_err());
        assert!(parse_metadata(b"<resource-agent name=x></resource-agent>").is_err());
        assert!(
            parse_metadata(b"<resource-agent name=\"x\"><parameter></resource-agent>").is_err()
        );
        assert!(parse_metadata(b"<resource-agent name=\"&bogus;\"></resource-agent>").is_err());
    }

    #[test]
    fn list_lines() {
        assert_eq!(parse_list(b"N/A\n").unwrap(), None);
        let l = parse_list(b"1,node1\n2,node2,OFF\n3\n").unwrap().unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].alias.as_deref(), Some("node1"));
        assert_eq!(l[1].status.as_deref(), Some("OFF"));
        assert_eq!(l[2].alias, None);
        assert!(parse_list(b"1,node1,MAYBE\n").is_err());
        assert!(parse_list(b"some garbage here\n").is_err());
        assert!(parse_list(b"\x00\x01").is_err());
    }

    #[test]
    fn scrub_hides_secrets_and_bounds_length() {
        let s = scrub(b"ipmitool -P hunter2 failed\x07\n", &[b"hunter2"], 100);
        assert_eq!(s, "ipmitool -P *** failed\\u{7}");
        let long = vec![b'x'; 1000];
        let s = scrub(&long, &[], 10);
        assert_eq!(s, format!("...{}", "x".repeat(10)));
    }
}
