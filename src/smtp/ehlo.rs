//! EHLO reply rewriting: the proxy, not the backend, decides whether STARTTLS is offered.

use super::Reply;

/// Rewrites a positive EHLO reply: drops the backend's own STARTTLS (the proxy answers it) and,
/// when `offer_starttls`, advertises ours last.
pub fn rewrite(reply: &Reply, offer_starttls: bool) -> Reply {
    let mut lines: Vec<Vec<u8>> = Vec::with_capacity(reply.lines.len() + 1);
    for (i, line) in reply.lines.iter().enumerate() {
        // The first line is the greeting (domain and text), never a keyword.
        if i > 0 && is_keyword(line, b"STARTTLS") {
            continue;
        }
        lines.push(line.clone());
    }
    if offer_starttls {
        lines.push(b"STARTTLS".to_vec());
    }
    Reply {
        code: reply.code,
        lines,
    }
}

/// Builds an EHLO reply for a backend that only knows HELO, so the client can still upgrade.
/// Nothing else is advertised: the backend supports no extension.
pub fn synthesise(helo_reply: &Reply, offer_starttls: bool) -> Reply {
    let mut lines = vec![helo_reply.lines.first().cloned().unwrap_or_default()];
    if offer_starttls {
        lines.push(b"STARTTLS".to_vec());
    }
    Reply { code: 250, lines }
}

/// The parameters of `keyword` in a positive EHLO reply (`XCLIENT NAME ADDR PORT` →
/// `["NAME", "ADDR", "PORT"]`, upper-cased), or `None` when it is not offered.
pub fn offered(reply: &Reply, keyword: &[u8]) -> Option<Vec<Vec<u8>>> {
    if reply.code != 250 {
        return None;
    }
    let line = reply
        .lines
        .iter()
        .skip(1)
        .find(|line| is_keyword(line, keyword))?;
    let params = line.trim_ascii_start()[keyword.len()..]
        .split(|b| b.is_ascii_whitespace() || *b == b'=')
        .filter(|p| !p.is_empty())
        .map(|p| p.to_ascii_uppercase())
        .collect();
    Some(params)
}

/// The reply without the lines offering any of `keywords` (extensions meant for the proxy, such
/// as XCLIENT, which a client must not be shown).
pub fn without(reply: &Reply, keywords: &[&[u8]]) -> Reply {
    let lines = reply
        .lines
        .iter()
        .enumerate()
        .filter(|(i, line)| *i == 0 || !keywords.iter().any(|k| is_keyword(line, k)))
        .map(|(_, line)| line.clone())
        .collect();
    Reply {
        code: reply.code,
        lines,
    }
}

/// Whether an EHLO line offers `keyword` as a client may read it: clients differ in what ends
/// the keyword (Postfix splits on SP, HTAB and `=` and drops trailing blanks and CR; Exim
/// matches `STARTTLS` followed by any whitespace), so any of those after it counts, and so do
/// leading blanks. Dropping a line some client would not have read as the keyword costs
/// nothing; passing one through would offer the backend's STARTTLS next to ours.
fn is_keyword(line: &[u8], keyword: &[u8]) -> bool {
    let line = line.trim_ascii_start();
    line.len() >= keyword.len()
        && line[..keyword.len()].eq_ignore_ascii_case(keyword)
        && line
            .get(keyword.len())
            .is_none_or(|&b| b.is_ascii_whitespace() || b == b'=')
}
