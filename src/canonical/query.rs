//! Splitting and form-decoding the raw query string, and the `page` / `per_page` numbers.

use std::borrow::Cow;

use super::{
    InvalidKind, InvalidQuery, MAX_SCHEMA_PARAMS, NoCacheReason, ParamSchema, Reject, SentParams,
    UnknownParams,
};

/// The query split into the schema's parameters (raw decoded values, by schema position) and
/// the rest.
pub(super) struct Parts<'a> {
    /// Decoded value of each schema parameter, in schema order (`Some("")` for a segment
    /// without `=`).
    pub(super) known: [Option<Cow<'a, str>>; MAX_SCHEMA_PARAMS],
    /// Decoded (name, value), value `None` for a segment without `=`; stably sorted by name.
    pub(super) others: Vec<(Box<str>, Option<Box<str>>)>,
}

/// Which of `schema`'s parameters `raw` names (for a query that has no key: names are
/// form-decoded, a name that does not decode names nothing).
pub(super) fn sent(raw: &str, schema: &ParamSchema) -> SentParams {
    let mut flags = [false; MAX_SCHEMA_PARAMS];
    for segment in raw.split('&').filter(|s| !s.is_empty()) {
        let name = segment.split_once('=').map_or(segment, |(n, _)| n);
        let Ok(name) = decode(name) else { continue };
        if let Some(i) = schema.params().iter().position(|p| p.name == name) {
            flags[i] = true;
        }
    }
    SentParams::from_flags(&flags)
}

/// Splits `raw` on `&`, skips empty segments, form-decodes every name and value exactly once.
///
/// # Errors
/// [`Reject::Invalid`] (`param = "query"`, [`InvalidKind::BadEncoding`]) for bad percent-encoding
/// or UTF-8 anywhere; then [`NoCacheReason::UnencodedCharacter`] for raw characters RFC 3986 does
/// not allow in a query; then [`NoCacheReason::RepeatedParam`] for a repeated schema parameter;
/// then, for a parameter the schema does not name, [`NoCacheReason::UnknownParam`] or
/// [`InvalidKind::UnknownParam`] as the schema's [`UnknownParams`] says.
pub(super) fn split<'a>(raw: &'a str, schema: &ParamSchema) -> Result<Parts<'a>, Reject> {
    let mut parts = Parts {
        known: Default::default(),
        others: Vec::new(),
    };
    let mut repeated = false;
    // Every byte of `raw` but the `&` and `=` separators (query characters themselves) is in a
    // name or a value, so checking those as they are decoded checks the whole query.
    let mut unencoded = false;
    for segment in raw.split('&') {
        if segment.is_empty() {
            continue;
        }
        let (name, value) = match segment.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (segment, None),
        };
        let name = decode_checked(name, &mut unencoded)?;
        let value = value
            .map(|v| decode_checked(v, &mut unencoded))
            .transpose()?;
        let Some(i) = schema.params().iter().position(|p| p.name == name) else {
            parts
                .others
                .push((name.into(), value.map(Box::<str>::from)));
            continue;
        };
        let slot = &mut parts.known[i];
        if slot.is_some() {
            repeated = true;
        }
        // A known parameter without `=` is taken as an empty value (not a number / not JSON).
        *slot = Some(value.unwrap_or(Cow::Borrowed("")));
    }
    if unencoded {
        return Err(Reject::Uncacheable(NoCacheReason::UnencodedCharacter));
    }
    if repeated {
        return Err(Reject::Uncacheable(NoCacheReason::RepeatedParam));
    }
    if !parts.others.is_empty() {
        match schema.unknown() {
            UnknownParams::Key => {}
            UnknownParams::Bypass => {
                return Err(Reject::Uncacheable(NoCacheReason::UnknownParam));
            }
            UnknownParams::Reject => {
                return Err(Reject::Invalid(InvalidQuery::new(
                    "query",
                    InvalidKind::UnknownParam,
                    "unknown parameter for this route",
                )));
            }
        }
    }
    // Stable: repeated names keep their request order.
    parts.others.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(parts)
}

/// What [`decode_checked`] does with a byte of the raw query.
const PLAIN: u8 = 0;
const PERCENT: u8 = 1;
const PLUS: u8 = 2;
/// Not allowed unencoded in a query by RFC 3986: copied as it is, and noted.
const UNENCODED: u8 = 3;

/// Byte classes: RFC 3986 `query` characters (pchar / "/" / "?") are [`PLAIN`], except `%` and
/// `+`, which decode; every other byte is [`UNENCODED`].
const CLASS: [u8; 256] = {
    let mut t = [UNENCODED; 256];
    let mut i = 0;
    while i < 256 {
        if (i as u8).is_ascii_alphanumeric() {
            t[i] = PLAIN;
        }
        i += 1;
    }
    let extra = b"-._~!$&'()*,;=:@/?";
    let mut j = 0;
    while j < extra.len() {
        t[extra[j] as usize] = PLAIN;
        j += 1;
    }
    t[b'%' as usize] = PERCENT;
    t[b'+' as usize] = PLUS;
    t
};

/// Hex digit values; `0xFF` for a non-hex byte.
const HEX: [u8; 256] = {
    let mut t = [0xFF; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Form-decodes one name or value: `+` → space, `%XX` → byte; the result must be UTF-8.
/// Borrows when there is nothing to decode.
pub(super) fn decode(s: &str) -> Result<Cow<'_, str>, Reject> {
    decode_checked(s, &mut false)
}

/// [`decode`] in the same pass as the query-character check: sets `unencoded` when `s` holds a
/// byte RFC 3986 does not allow unencoded in a query (which is copied as it is).
fn decode_checked<'s>(s: &'s str, unencoded: &mut bool) -> Result<Cow<'s, str>, Reject> {
    let bytes = s.as_bytes();
    let mut at = 0;
    // Borrow while there is nothing to decode.
    loop {
        let Some(&b) = bytes.get(at) else {
            return Ok(Cow::Borrowed(s));
        };
        match CLASS[usize::from(b)] {
            PLAIN => {}
            UNENCODED => *unencoded = true,
            _ => break,
        }
        at += 1;
    }
    // The decoded text is never longer than `s`.
    let mut out = vec![0u8; bytes.len()];
    out[..at].copy_from_slice(&bytes[..at]);
    let mut len = at;
    while let Some(&b) = bytes.get(at) {
        out[len] = match CLASS[usize::from(b)] {
            PERCENT => {
                let (hi, lo) = match bytes.get(at + 1..at + 3) {
                    Some(&[h, l]) => (HEX[usize::from(h)], HEX[usize::from(l)]),
                    _ => (0xFF, 0xFF),
                };
                if (hi | lo) & 0xF0 != 0 {
                    return Err(bad_encoding("invalid percent-encoding"));
                }
                at += 3;
                hi << 4 | lo
            }
            PLUS => {
                at += 1;
                b' '
            }
            class => {
                *unencoded |= class == UNENCODED;
                at += 1;
                b
            }
        };
        len += 1;
    }
    out.truncate(len);
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| bad_encoding("percent-decoded bytes are not UTF-8"))
}

fn bad_encoding(message: &str) -> Reject {
    Reject::Invalid(InvalidQuery::new(
        "query",
        InvalidKind::BadEncoding,
        message,
    ))
}

/// Parses an integer parameter: ASCII digits only, leading zeros allowed, value in `min..=max`.
///
/// # Errors
/// [`InvalidKind::NotANumber`] for an empty value or any non-digit (signs and spaces included);
/// [`InvalidKind::OutOfRange`] outside `min..=max`.
#[allow(clippy::ptr_arg)] // a `Cow` so that the error clones a borrowed name for free
pub(super) fn parse_int(
    param: &Cow<'static, str>,
    v: &str,
    min: u32,
    max: u32,
) -> Result<u32, Reject> {
    let name = || Cow::clone(param);
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Reject::Invalid(InvalidQuery::new(
            name(),
            InvalidKind::NotANumber,
            if min >= 1 {
                format!("{param} must be a positive integer")
            } else {
                format!("{param} must be a non-negative integer")
            },
        )));
    }
    let digits = v.trim_start_matches('0');
    // At most 10 significant digits fit a u64 comfortably; more is out of range for sure.
    let n = match digits.len() {
        0 => Some(0),
        1..=10 => digits.parse::<u64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n >= u64::from(min) && n <= u64::from(max) => Ok(n as u32),
        _ => Err(Reject::Invalid(InvalidQuery::new(
            name(),
            InvalidKind::OutOfRange,
            format!("{param} must be between {min} and {max}"),
        ))),
    }
}
