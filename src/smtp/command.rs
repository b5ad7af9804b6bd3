//! Client commands, parsed only as far as the proxy needs to decide something.

/// A client command line, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo,
    Helo,
    /// `has_args`: RFC 3207 allows no parameters.
    StartTls {
        has_args: bool,
    },
    /// `domain`: the reverse-path's domain, lowercased; `None` for the null sender `<>`.
    Mail {
        domain: Option<String>,
    },
    Rcpt {
        domain: Option<String>,
    },
    Data,
    /// RFC 3030 chunk: `size` octets follow the command line.
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    /// Anything else, including malformed lines: the next hop judges those.
    Other,
}

impl Command {
    pub fn parse(line: &[u8]) -> Command {
        let (verb, rest) = match line.iter().position(|&b| b == b' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &[][..]),
        };
        let rest_trimmed = rest.trim_ascii();
        match verb.to_ascii_uppercase().as_slice() {
            b"EHLO" => Command::Ehlo,
            b"HELO" => Command::Helo,
            b"STARTTLS" => Command::StartTls {
                has_args: !rest_trimmed.is_empty(),
            },
            b"MAIL" => match path_after(rest, b"FROM:") {
                Some(path) => Command::Mail {
                    domain: path_domain(path),
                },
                None => Command::Other,
            },
            b"RCPT" => match path_after(rest, b"TO:") {
                Some(path) => Command::Rcpt {
                    domain: path_domain(path),
                },
                None => Command::Other,
            },
            b"DATA" => Command::Data,
            b"BDAT" => parse_bdat(rest_trimmed).unwrap_or(Command::Other),
            b"RSET" => Command::Rset,
            b"NOOP" => Command::Noop,
            b"QUIT" => Command::Quit,
            _ => Command::Other,
        }
    }

    /// Commands after which an uninspected session has nothing left for the proxy to decide:
    /// message content follows, or a command (AUTH, VRFY, ...) whose dialogue we do not model.
    pub fn ends_dialogue(&self) -> bool {
        matches!(self, Command::Data | Command::Bdat { .. } | Command::Other)
    }
}

/// The path in `FROM:<path> params` (tolerating a space after the colon, as many MTAs do).
fn path_after<'a>(rest: &'a [u8], keyword: &[u8]) -> Option<&'a [u8]> {
    if rest.len() < keyword.len() || !rest[..keyword.len()].eq_ignore_ascii_case(keyword) {
        return None;
    }
    let after = rest[keyword.len()..].trim_ascii_start();
    if let Some(inner) = after.strip_prefix(b"<") {
        let close = inner.iter().position(|&b| b == b'>')?;
        Some(&inner[..close])
    } else {
        // Bare address without angle brackets: up to the first space.
        let end = after.iter().position(|&b| b == b' ').unwrap_or(after.len());
        Some(&after[..end])
    }
}

/// Domain of a mailbox (after the last `@`, which also skips source routes and quoted parts).
fn path_domain(path: &[u8]) -> Option<String> {
    let at = path.iter().rposition(|&b| b == b'@')?;
    let domain = std::str::from_utf8(&path[at + 1..]).ok()?;
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    (!domain.is_empty()).then_some(domain)
}

fn parse_bdat(args: &[u8]) -> Option<Command> {
    let text = std::str::from_utf8(args).ok()?;
    let mut words = text.split_ascii_whitespace();
    let size = words.next()?.parse().ok()?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return None,
    };
    words
        .next()
        .is_none()
        .then_some(Command::Bdat { size, last })
}
