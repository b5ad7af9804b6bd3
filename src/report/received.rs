//! TLS reports other senders send us (RFC 8460 §5.3), read strictly: a `multipart/report`
//! e-mail (or any MIME message) carrying one `application/tlsrpt+gzip` or
//! `application/tlsrpt+json` part, or the bare `.json`/`.json.gz`. Bytes come from peers, so
//! every step is bounded: the message size, the MIME nesting, the decompressed size; anything
//! else is an error that says what was wrong, never a panic.

use super::tlsrpt::Report;
use base64::Engine as _;
use std::io::Read;

/// The largest report message taken (a day of a very large sender's report is well under 1 MB).
pub const MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;
/// The largest report JSON after decompression: a gzip bomb stops here.
pub const MAX_JSON_BYTES: usize = 16 * 1024 * 1024;
/// multipart inside multipart, at most this deep.
const MAX_DEPTH: usize = 4;

pub const GZIP_TYPE: &str = "application/tlsrpt+gzip";
pub const JSON_TYPE: &str = "application/tlsrpt+json";

/// Why bytes are not a report we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceivedError {
    #[error("over {0} bytes")]
    TooLarge(usize),
    #[error("no application/tlsrpt+gzip or application/tlsrpt+json part (found {0})")]
    NoReport(String),
    #[error("MIME: {0}")]
    Mime(String),
    #[error("gzip: {0}")]
    Gzip(String),
    #[error("JSON: {0}")]
    Json(String),
}

impl ReceivedError {
    /// A metric label: `too_large`, `not_a_report`, `malformed`.
    pub fn reason(&self) -> &'static str {
        match self {
            ReceivedError::TooLarge(_) => "too_large",
            ReceivedError::NoReport(_) => "not_a_report",
            _ => "malformed",
        }
    }
}

/// A report file by its name: `.json`, `.json.gz`/`.gz`, anything else a MIME message.
pub fn parse_file(name: &str, bytes: &[u8]) -> Result<Report, ReceivedError> {
    if name.ends_with(".json") {
        parse_json(bytes)
    } else if name.ends_with(".gz") {
        parse_gzip(bytes)
    } else {
        parse_message(bytes)
    }
}

/// The report's JSON (RFC 8460 §4), strictly: every required field, known result types.
pub fn parse_json(bytes: &[u8]) -> Result<Report, ReceivedError> {
    if bytes.len() > MAX_JSON_BYTES {
        return Err(ReceivedError::TooLarge(MAX_JSON_BYTES));
    }
    serde_json::from_slice(bytes).map_err(|e| ReceivedError::Json(e.to_string()))
}

/// The gzip'd JSON, decompressed up to [`MAX_JSON_BYTES`].
pub fn parse_gzip(bytes: &[u8]) -> Result<Report, ReceivedError> {
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_JSON_BYTES as u64 + 1)
        .read_to_end(&mut json)
        .map_err(|e| ReceivedError::Gzip(e.to_string()))?;
    if json.len() > MAX_JSON_BYTES {
        return Err(ReceivedError::TooLarge(MAX_JSON_BYTES));
    }
    parse_json(&json)
}

/// A report e-mail: the first `application/tlsrpt+*` part, at any depth of multipart.
pub fn parse_message(bytes: &[u8]) -> Result<Report, ReceivedError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(ReceivedError::TooLarge(MAX_MESSAGE_BYTES));
    }
    let mut seen = Vec::new();
    match find_report(bytes, 0, &mut seen)? {
        Some((media, body)) if media == GZIP_TYPE => parse_gzip(&body),
        Some((_, body)) => parse_json(&body),
        None => Err(ReceivedError::NoReport(if seen.is_empty() {
            "no Content-Type".to_string()
        } else {
            seen.join(", ")
        })),
    }
}

/// The media type and decoded body of the first report part of `entity` (headers and body).
fn find_report(
    entity: &[u8],
    depth: usize,
    seen: &mut Vec<String>,
) -> Result<Option<(String, Vec<u8>)>, ReceivedError> {
    if depth > MAX_DEPTH {
        return Err(ReceivedError::Mime(format!(
            "multipart nested deeper than {MAX_DEPTH}"
        )));
    }
    let (headers, body) = split_entity(entity);
    let headers = unfold(headers);
    let content_type = header(&headers, "content-type").unwrap_or("text/plain");
    let (media, params) = parse_content_type(content_type);
    seen.push(media.clone());
    if media == GZIP_TYPE || media == JSON_TYPE {
        let encoding = header(&headers, "content-transfer-encoding")
            .unwrap_or("7bit")
            .trim()
            .to_ascii_lowercase();
        return decode(body, &encoding).map(|b| Some((media, b)));
    }
    if !media.starts_with("multipart/") {
        return Ok(None);
    }
    let boundary = params
        .iter()
        .find(|(k, _)| k == "boundary")
        .map(|(_, v)| v.clone())
        .filter(|b| !b.is_empty() && b.len() <= 70)
        .ok_or_else(|| ReceivedError::Mime(format!("{media} without a valid boundary")))?;
    for part in split_parts(body, boundary.as_bytes())? {
        if let Some(found) = find_report(part, depth + 1, seen)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Headers and body, split at the first empty line (CRLF or LF).
fn split_entity(entity: &[u8]) -> (&[u8], &[u8]) {
    let mut start = 0;
    while start < entity.len() {
        let end = entity[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(entity.len(), |i| start + i + 1);
        let line = &entity[start..end];
        if line == b"\n" || line == b"\r\n" {
            return (&entity[..start], &entity[end..]);
        }
        start = end;
    }
    (entity, &[])
}

/// Header lines with continuation lines joined (RFC 5322 §2.2.3), as (lowercase name, value).
fn unfold(headers: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(headers);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split('\n').map(|l| l.trim_end_matches('\r')) {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = out.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    out
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// `type/subtype; name=value; name="quoted value"` → lowercase media type, parameters
/// (lowercase names).
pub fn parse_content_type(value: &str) -> (String, Vec<(String, String)>) {
    let mut parts = split_params(value).into_iter();
    let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let params = parts
        .filter_map(|p| {
            let (name, value) = p.split_once('=')?;
            let value = value.trim();
            let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(quoted) => quoted.replace("\\\"", "\"").replace("\\\\", "\\"),
                None => value.to_string(),
            };
            Some((name.trim().to_ascii_lowercase(), value))
        })
        .collect();
    (media, params)
}

/// Splits at `;` outside quotes.
fn split_params(value: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let (mut quoted, mut escaped) = (false, false);
    for c in value.chars() {
        let current = out.last_mut().expect("never empty");
        match c {
            _ if escaped => {
                escaped = false;
                current.push(c);
            }
            '\\' if quoted => {
                escaped = true;
                current.push(c);
            }
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ';' if !quoted => out.push(String::new()),
            _ => current.push(c),
        }
    }
    out
}

/// The bodies between `--boundary` lines, up to `--boundary--` (RFC 2046 §5.1.1).
fn split_parts<'a>(body: &'a [u8], boundary: &[u8]) -> Result<Vec<&'a [u8]>, ReceivedError> {
    let mut parts = Vec::new();
    let mut current: Option<usize> = None;
    let mut start = 0;
    while start < body.len() {
        let end = body[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |i| start + i + 1);
        let line = trim_line_end(&body[start..end]);
        if let Some(rest) = line
            .strip_prefix(b"--")
            .and_then(|l| l.strip_prefix(boundary))
        {
            let rest = rest.trim_ascii_end();
            if rest.is_empty() || rest == b"--" {
                if let Some(from) = current {
                    // The line break before the delimiter belongs to it.
                    let part = &body[from..start];
                    let part = part
                        .strip_suffix(b"\r\n")
                        .or_else(|| part.strip_suffix(b"\n"))
                        .unwrap_or(part);
                    parts.push(part);
                }
                if rest == b"--" {
                    return Ok(parts);
                }
                current = Some(end);
            }
        }
        start = end;
    }
    Err(ReceivedError::Mime(
        "multipart without its closing boundary".into(),
    ))
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn decode(body: &[u8], encoding: &str) -> Result<Vec<u8>, ReceivedError> {
    match encoding {
        "base64" => {
            let compact: Vec<u8> = body
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|e| ReceivedError::Mime(format!("base64: {e}")))
        }
        "7bit" | "8bit" | "binary" => Ok(body.to_vec()),
        other => Err(ReceivedError::Mime(format!(
            "unsupported Content-Transfer-Encoding {other:?}"
        ))),
    }
}

#[cfg(test)]
#[path = "received_tests.rs"]
mod tests;
