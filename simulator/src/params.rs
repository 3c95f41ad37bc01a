//! Query-string and form decoding, Zoho style.
//!
//! Uses `application/x-www-form-urlencoded` rules (WHATWG URL §5.1):
//! `+` decodes to a space and `%2B` to a plus (Zoho decodes `+` as a space,
//! API-NOTES.md §3); empty segments (`a=1&&b=2`, a trailing `&`) are ignored;
//! a name without `=` has the empty value; malformed `%` escapes are kept
//! literally and invalid UTF-8 is replaced by U+FFFD. Names are
//! case-sensitive. Unknown parameters are ignored (**choice**).

use super::config::DuplicateParams;

/// Decoded parameters in the order received.
#[derive(Debug, Clone, Default)]
pub(crate) struct Params(Vec<(String, String)>);

/// A parameter appeared more than once under [`DuplicateParams::Reject`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Repeated(pub &'static str);

impl Params {
    pub(crate) fn parse(raw: &[u8]) -> Params {
        Params(
            form_urlencoded::parse(raw)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// Adds `other`'s pairs after these (so `First` prefers `self`).
    pub(crate) fn extend(&mut self, other: Params) {
        self.0.extend(other.0);
    }

    /// The value of `name` under the duplicate policy.
    pub(crate) fn get(
        &self,
        name: &'static str,
        policy: DuplicateParams,
    ) -> Result<Option<&str>, Repeated> {
        let mut values = self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
        let first = values.next();
        match policy {
            DuplicateParams::First => Ok(first.map(String::as_str)),
            DuplicateParams::Last => Ok(values.next_back().or(first).map(String::as_str)),
            DuplicateParams::Reject => match values.next() {
                Some(_) => Err(Repeated(name)),
                None => Ok(first.map(String::as_str)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_form_style() {
        let p = Params::parse(b"a=x+y%2Bz&&b=%7B%22k%22%7D&c&a=second&");
        let first = DuplicateParams::First;
        assert_eq!(p.get("a", first), Ok(Some("x y+z")));
        assert_eq!(p.get("b", first), Ok(Some("{\"k\"}")));
        assert_eq!(p.get("c", first), Ok(Some("")));
        assert_eq!(p.get("d", first), Ok(None));
        assert_eq!(p.get("a", DuplicateParams::Last), Ok(Some("second")));
        assert_eq!(p.get("a", DuplicateParams::Reject), Err(Repeated("a")));
        assert_eq!(p.get("b", DuplicateParams::Reject), Ok(Some("{\"k\"}")));
    }
}
