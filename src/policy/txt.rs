//! The `v=VERSION; name=value; ...` TXT record syntax that MTA-STS (RFC 8461 §3.1) and TLS-RPT
//! (RFC 8460 §3) share: which of a name's TXT strings are the record, and its fields.

/// Whether `txt` starts with `version` and a delimiter (RFC 8461 erratum 6285: blanks may
/// come before the `;`): a record of someone else's otherwise, to be ignored.
pub fn is_record(txt: &str, version: &str) -> bool {
    txt.strip_prefix(version)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([';', ' ', '\t']))
}

/// The `name=value` fields after `version`, blanks around the `;` delimiters trimmed; one
/// trailing delimiter is allowed, an empty field anywhere else is not. `Err` says what is wrong.
pub fn fields<'a>(txt: &'a str, version: &str) -> Result<Vec<(&'a str, &'a str)>, &'static str> {
    let mut parts: Vec<&str> = txt
        .split(';')
        .map(|f| f.trim_matches([' ', '\t']))
        .collect();
    if parts.len() > 1 && parts.last() == Some(&"") {
        parts.pop();
    }
    if parts.first() != Some(&version) {
        return Err("not the record's version first");
    }
    parts[1..]
        .iter()
        .map(|f| f.split_once('=').ok_or("malformed field"))
        .collect()
}
