//! Client commands, parsed only as far as the proxy needs to decide something.
//!
//! MAIL and RCPT are read the way MTAs read them, not the way RFC 5321 writes them: the
//! listed-domain checks are only as strong as the agreement between this parser and the next
//! hop's (issue 15: `MAIL<TAB>FROM:` once passed as an unknown command). So the verb is split
//! from its arguments on runs of SP/HTAB after any leading blanks; the path may have blanks
//! after the colon and inside the brackets, RFC 5322 comments, quoted strings and escapes; and a
//! line that looks like MAIL or RCPT but cannot be read becomes [`Command::BadEnvelope`], which
//! the callers refuse wherever a policy reads the path. What Postfix 3.7 accepts is in
//! `tests/policy.rs` (`postfix_spellings_*`).

/// A client command line, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo,
    Helo,
    /// `has_args`: RFC 3207 allows no parameters.
    StartTls {
        has_args: bool,
    },
    /// The reverse-path.
    Mail(Path),
    /// The forward-path.
    Rcpt(Path),
    /// A line whose verb is MAIL or RCPT (or begins like one, or is one of RFC 821's SEND,
    /// SOML, SAML) but whose path cannot be read: refused where a policy reads the path, since
    /// the next hop may read it differently.
    BadEnvelope,
    Data,
    /// RFC 3030 chunk: `size` octets follow the command line.
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    /// A PROXY protocol v1 line where none is expected (a peer not in `proxy_protocol_from`,
    /// or one inside a session): a bad command the proxy answers itself, never passed on, so
    /// a backend that trusts PROXY headers from us is not told a client-chosen address.
    Proxy,
    /// XCLIENT or XFORWARD (Postfix): attributes a trusted proxy sets for its client. A backend
    /// that trusts our address for them would believe a client that sent them through us.
    Xclient,
    /// Anything else: the next hop judges those.
    Other,
}

/// A MAIL or RCPT path, reduced to the domains a policy may care about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Path {
    /// The mailbox's domain (after its last `@`), lowercased without a trailing dot; `None` for
    /// the null path `<>` and for a bare local part such as `<postmaster>`.
    pub domain: Option<String>,
    /// Every domain the path names besides `domain`: source-route hosts, the `%` hack
    /// (`u%host@relay`), a UUCP bang path (`host!u`), further `@` in the local part. An MTA may
    /// route by any of them, so a listed-domain check looks at all.
    pub also_named: Vec<String>,
}

impl Path {
    /// All domains the path names, `domain` first.
    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.domain
            .iter()
            .chain(self.also_named.iter())
            .map(String::as_str)
    }
}

impl Command {
    pub fn parse(line: &[u8]) -> Command {
        let (verb, rest) = split_verb(line);
        let rest_trimmed = rest.trim_ascii();
        match verb.to_ascii_uppercase().as_slice() {
            b"EHLO" => Command::Ehlo,
            b"HELO" => Command::Helo,
            b"STARTTLS" => Command::StartTls {
                has_args: !rest_trimmed.is_empty(),
            },
            b"MAIL" => parse_path(rest, b"FROM").map_or(Command::BadEnvelope, Command::Mail),
            b"RCPT" => parse_path(rest, b"TO").map_or(Command::BadEnvelope, Command::Rcpt),
            b"SEND" | b"SOML" | b"SAML" => Command::BadEnvelope,
            b"DATA" => Command::Data,
            b"BDAT" => parse_bdat(rest_trimmed).unwrap_or(Command::Other),
            b"RSET" => Command::Rset,
            b"NOOP" => Command::Noop,
            b"QUIT" => Command::Quit,
            b"PROXY" => Command::Proxy,
            b"XCLIENT" | b"XFORWARD" => Command::Xclient,
            // `MAILFROM:<x>` and the like: no MTA we know takes them, but one that did would
            // start a transaction we never checked.
            v if v.starts_with(b"MAIL") || v.starts_with(b"RCPT") => Command::BadEnvelope,
            _ => Command::Other,
        }
    }

    /// Commands after which an uninspected session has nothing left for the proxy to decide:
    /// message content follows, or a command (AUTH, VRFY, ...) whose dialogue we do not model.
    pub fn ends_dialogue(&self) -> bool {
        matches!(self, Command::Data | Command::Bdat { .. } | Command::Other)
    }
}

/// The mailbox of a `MAIL FROM:` line (source route dropped, lowercased); `None` for another
/// command, the null path or a path that cannot be read.
pub fn reverse_path_mailbox(line: &[u8]) -> Option<String> {
    path_mailbox(line, b"MAIL", b"FROM:")
}

/// The mailbox of a `RCPT TO:` line, as [`reverse_path_mailbox`] reads it.
pub fn forward_path_mailbox(line: &[u8]) -> Option<String> {
    path_mailbox(line, b"RCPT", b"TO:")
}

fn path_mailbox(line: &[u8], verb: &[u8], keyword: &[u8]) -> Option<String> {
    let (found, rest) = split_verb(line);
    if !found.eq_ignore_ascii_case(verb) {
        return None;
    }
    let after = rest
        .get(..keyword.len())
        .filter(|k| k.eq_ignore_ascii_case(keyword))
        .map(|_| &rest[keyword.len()..])?;
    let start = after
        .iter()
        .position(|&b| !is_blank(b))
        .unwrap_or(after.len());
    let address = clean_address(&after[start..])?;
    let mailbox = address.rsplit(':').next().unwrap_or_default();
    (!mailbox.is_empty()).then(|| mailbox.to_ascii_lowercase())
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// The verb and what follows the blanks after it; leading blanks are skipped, as Postfix does.
fn split_verb(line: &[u8]) -> (&[u8], &[u8]) {
    let start = line
        .iter()
        .position(|&b| !is_blank(b))
        .unwrap_or(line.len());
    let line = &line[start..];
    let end = line.iter().position(|&b| is_blank(b)).unwrap_or(line.len());
    let args = &line[end..];
    let args_start = args
        .iter()
        .position(|&b| !is_blank(b))
        .unwrap_or(args.len());
    (&line[..end], &args[args_start..])
}

/// `FROM:<path> params` or `TO:<path> params`: the keyword, a colon right after it, blanks, then
/// the path up to the first blank outside brackets, quotes and comments.
fn parse_path(args: &[u8], keyword: &[u8]) -> Option<Path> {
    let after = args
        .get(..keyword.len() + 1)
        .filter(|k| k[..keyword.len()].eq_ignore_ascii_case(keyword) && k[keyword.len()] == b':')
        .map(|_| &args[keyword.len() + 1..])?;
    let start = after
        .iter()
        .position(|&b| !is_blank(b))
        .unwrap_or(after.len());
    let address = clean_address(&after[start..])?;
    Some(path_domains(&address))
}

/// The address as an RFC 5322 tokenizer leaves it: comments and blanks outside quotes dropped,
/// quotes and backslashes removed, angle brackets dropped. `None` when it cannot be read: an
/// unclosed `<`, control characters, or bytes that are not UTF-8.
fn clean_address(text: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let (mut quoted, mut comment, mut angle, mut escaped) = (false, 0usize, 0usize, false);
    for &b in text {
        if b.is_ascii_control() && b != b'\t' {
            return None;
        }
        if escaped {
            escaped = false;
            if comment == 0 {
                out.push(b);
            }
            continue;
        }
        match b {
            b'\\' => escaped = true,
            b'"' if comment == 0 => quoted = !quoted,
            _ if quoted => out.push(b),
            b'(' => comment += 1,
            b')' if comment > 0 => comment -= 1,
            // Brackets group before comments do (Postfix takes `<a@d(>` as `a@d`).
            b'>' if comment > 0 && angle > 0 => (comment, angle) = (0, angle - 1),
            _ if comment > 0 => {}
            b'<' => angle += 1,
            b'>' => angle = angle.saturating_sub(1),
            // The path ends at the first blank outside brackets; ESMTP parameters follow.
            b' ' | b'\t' if angle == 0 => break,
            b' ' | b'\t' => {}
            _ => out.push(b),
        }
    }
    // An unclosed comment or quote runs to the end of the line (Postfix accepts both); an
    // unclosed bracket is refused by Postfix and by us.
    if angle > 0 {
        return None;
    }
    String::from_utf8(out).ok()
}

/// The domain after the last `@` and every other domain the address names.
fn path_domains(address: &str) -> Path {
    // A source route (`@a,@b:u@d`) ends at the last colon; `,` and `;` separate list members
    // that some tokenizers accept. Every member is looked at.
    let mut path = Path::default();
    let mut members: Vec<&str> = address
        .split([',', ';', ':'])
        .filter(|m| !m.is_empty())
        .collect();
    let mailbox = members.pop().unwrap_or_default();
    let mut rest = mailbox;
    while let Some(at) = rest.rfind('@') {
        push_domain(&mut path, &rest[at + 1..]);
        rest = &rest[..at];
    }
    if let Some(pct) = rest.rfind('%') {
        push_domain(&mut path, &rest[pct + 1..]);
        rest = &rest[..pct];
    }
    if let Some(bang) = rest.find('!') {
        push_domain(&mut path, &rest[..bang]);
    }
    for member in members {
        for host in member.split('@').skip(1) {
            push_domain(&mut path, host);
        }
    }
    path
}

fn push_domain(path: &mut Path, raw: &str) {
    // Blanks and brackets inside quotes are not part of any host name; dropping them can only
    // make a listed domain match (`"secure .test"`), never hide one.
    let domain: String = raw
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '<' | '>'))
        .collect();
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty() {
        return;
    }
    if path.domain.is_none() {
        path.domain = Some(domain);
    } else if path.domain.as_ref() != Some(&domain) && !path.also_named.contains(&domain) {
        path.also_named.push(domain);
    }
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
