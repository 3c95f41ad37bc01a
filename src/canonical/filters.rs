//! The `filters` JSON: a bounded, strict, single-pass parser straight into the typed tree, the
//! semantic normalisation, and the canonical JSON rendering.
//!
//! The parser never builds a generic JSON value: criteria and groups are recognised while their
//! objects are read, strings borrow from the input unless they hold escapes, and anything outside
//! the grammar is only validated and skipped.

use std::borrow::Cow;

use super::{CanonicalRules, FilterMode, InvalidKind, InvalidQuery, NoCacheReason, Reject};

/// A group operator, parsed ASCII case-insensitively.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Op {
    And,
    Or,
}

impl Op {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Op::And => "and",
            Op::Or => "or",
        }
    }
}

/// One criterion; strings are JSON-unescaped and otherwise byte-exact.
///
/// Field, comparator and value share one allocation (`text` = field ‖ comparator ‖ value, with
/// the first two lengths). Equality is equality of the three strings; the derived order is some
/// total order, which is all the semantic member sort needs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Criterion {
    text: Box<str>,
    field_len: usize,
    comparator_len: usize,
}

impl Criterion {
    fn new(field: &str, comparator: &str, value: &str) -> Self {
        let mut text = String::with_capacity(field.len() + comparator.len() + value.len());
        text.push_str(field);
        text.push_str(comparator);
        text.push_str(value);
        Criterion {
            text: text.into(),
            field_len: field.len(),
            comparator_len: comparator.len(),
        }
    }

    pub(super) fn field(&self) -> &str {
        &self.text[..self.field_len]
    }

    pub(super) fn comparator(&self) -> &str {
        &self.text[self.field_len..self.field_len + self.comparator_len]
    }

    pub(super) fn value(&self) -> &str {
        &self.text[self.field_len + self.comparator_len..]
    }
}

/// The typed filter tree. The derived `Ord` is the canonical member order of semantic mode.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Node {
    Criterion(Criterion),
    Group(Op, Vec<Node>),
}

/// Parses, validates and (in semantic mode) normalises a decoded `filters` value.
///
/// # Errors
/// See the module doc of `canonical` for the precedence: syntax and limits first, then
/// uncacheable reasons, then validation.
pub(super) fn parse(src: &str, rules: &CanonicalRules) -> Result<Node, Reject> {
    let limits = &rules.limits;
    if src.len() > limits.max_bytes {
        return Err(invalid(
            InvalidKind::TooLarge,
            format!("filters longer than {} bytes", limits.max_bytes),
        ));
    }
    let mut p = Parser {
        src: src.as_bytes(),
        text: src,
        pos: 0,
        depth: 0,
        criteria: 0,
        rules,
        uncacheable: None,
        invalid: None,
    };
    let node = p.node()?;
    p.ws();
    if p.pos != p.src.len() {
        return Err(p.syntax("trailing characters"));
    }
    if let Some(reason) = p.uncacheable {
        return Err(Reject::Uncacheable(reason));
    }
    if let Some(inv) = p.invalid {
        return Err(Reject::Invalid(inv));
    }
    let Some(node) = node else {
        // Every path that yields `None` records a problem; this is a defensive fallback.
        return Err(invalid(InvalidKind::BadShape, "unusable filter"));
    };
    Ok(match rules.mode {
        FilterMode::Semantic => normalize(node),
        FilterMode::Strict => node,
    })
}

fn invalid(kind: InvalidKind, message: impl Into<String>) -> Reject {
    Reject::Invalid(InvalidQuery::new("filters", kind, message))
}

/// Semantic normalisation: flatten same-operator children, sort, dedup, unwrap one-member groups.
/// Children are normalised first, so the result is a fixed point. Works in place: a group's
/// member vector is only rebuilt when a child has to be flattened into it.
fn normalize(mut node: Node) -> Node {
    normalize_in_place(&mut node);
    node
}

fn normalize_in_place(node: &mut Node) {
    let Node::Group(op, members) = node else {
        return;
    };
    let op = *op;
    members.iter_mut().for_each(normalize_in_place);
    if members
        .iter()
        .any(|m| matches!(m, Node::Group(inner, _) if *inner == op))
    {
        let old = std::mem::take(members);
        for m in old {
            match m {
                Node::Group(inner, ms) if inner == op => members.extend(ms),
                other => members.push(other),
            }
        }
    }
    members.sort_unstable();
    members.dedup();
    if members.len() == 1
        && let Some(only) = members.pop()
    {
        *node = only;
    }
}

/// Renders the tree as compact JSON with sorted object keys.
pub(super) fn render(node: &Node) -> String {
    let mut out = String::new();
    render_into(node, &mut out);
    out
}

fn render_into(node: &Node, out: &mut String) {
    match node {
        Node::Criterion(c) => {
            out.push_str("{\"comparator\":");
            push_json_str(out, c.comparator());
            out.push_str(",\"field\":{\"api_name\":");
            push_json_str(out, c.field());
            out.push_str("},\"value\":");
            push_json_str(out, c.value());
            out.push('}');
        }
        Node::Group(op, members) => {
            out.push_str("{\"group\":[");
            for (i, m) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render_into(m, out);
            }
            out.push_str("],\"group_operator\":\"");
            out.push_str(op.as_str());
            out.push_str("\"}");
        }
    }
}

fn push_json_str(out: &mut String, s: &str) {
    // serde_json's string escaping cannot fail for a `&str`.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

/// What a `"value"` member held.
enum ValueSlot<'a> {
    Str(Cow<'a, str>),
    Other,
}

struct Parser<'a, 'r> {
    src: &'a [u8],
    text: &'a str,
    pos: usize,
    depth: usize,
    criteria: usize,
    rules: &'r CanonicalRules,
    /// First reason the filter cannot be canonicalised with certainty.
    uncacheable: Option<NoCacheReason>,
    /// First validation failure (reported only if nothing is uncacheable).
    invalid: Option<InvalidQuery>,
}

impl<'a> Parser<'a, '_> {
    fn uncache(&mut self, reason: NoCacheReason) {
        self.uncacheable.get_or_insert(reason);
    }

    fn reject(&mut self, kind: InvalidKind, message: &str) {
        if self.invalid.is_none() {
            self.invalid = Some(InvalidQuery::new("filters", kind, message));
        }
    }

    fn syntax(&self, what: &str) -> Reject {
        invalid(
            InvalidKind::InvalidJson,
            format!("invalid JSON at byte {}: {what}", self.pos),
        )
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.src.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn expect(&mut self, b: u8, what: &str) -> Result<(), Reject> {
        self.ws();
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.syntax(what))
        }
    }

    /// Enters an object or array (the byte at `pos` is `{` or `[`).
    fn enter(&mut self) -> Result<(), Reject> {
        self.depth += 1;
        if self.depth > self.rules.limits.max_depth {
            return Err(invalid(
                InvalidKind::TooDeep,
                format!("filters nested deeper than {}", self.rules.limits.max_depth),
            ));
        }
        self.pos += 1;
        Ok(())
    }

    /// Iterates the members of an object whose `{` was consumed by [`Parser::enter`], calling `f`
    /// with each key; `f` must consume the member's value. Consumes the closing `}`.
    fn object_members(
        &mut self,
        mut f: impl FnMut(&mut Self, Cow<'a, str>) -> Result<(), Reject>,
    ) -> Result<(), Reject> {
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.syntax("expected a string key"));
            }
            let key = self.string()?;
            self.expect(b':', "expected ':'")?;
            self.ws();
            f(self, key)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(self.syntax("expected ',' or '}'")),
            }
        }
    }

    /// Iterates the elements of an array whose `[` was consumed by [`Parser::enter`]; `f` must
    /// consume one value. Consumes the closing `]`.
    fn array_elements(
        &mut self,
        mut f: impl FnMut(&mut Self) -> Result<(), Reject>,
    ) -> Result<(), Reject> {
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            self.ws();
            f(self)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(self.syntax("expected ',' or ']'")),
            }
        }
    }

    /// A criterion or group at `pos` (whitespace skipped). `None` when a problem was recorded.
    fn node(&mut self) -> Result<Option<Node>, Reject> {
        self.ws();
        if self.peek() != Some(b'{') {
            self.skip_value()?;
            self.reject(
                InvalidKind::BadShape,
                "expected a criterion or group object",
            );
            return Ok(None);
        }
        self.enter()?;
        let mut field: Option<Option<Cow<'a, str>>> = None;
        let mut comparator: Option<Option<Cow<'a, str>>> = None;
        let mut value: Option<ValueSlot<'a>> = None;
        let mut op: Option<Option<Op>> = None;
        let mut group: Option<Option<(usize, Vec<Node>)>> = None;
        let mut unknown = false;
        let mut duplicate = false;
        self.object_members(|p, key| {
            match &*key {
                "field" => {
                    duplicate |= field.is_some();
                    field = Some(p.field()?);
                }
                "comparator" => {
                    duplicate |= comparator.is_some();
                    comparator = Some(p.string_member()?);
                }
                "value" => {
                    duplicate |= value.is_some();
                    value = Some(if p.peek() == Some(b'"') {
                        ValueSlot::Str(p.string()?)
                    } else {
                        p.skip_value()?;
                        ValueSlot::Other
                    });
                }
                "group_operator" => {
                    duplicate |= op.is_some();
                    op = Some(match p.string_member()? {
                        Some(s) if s.eq_ignore_ascii_case("and") => Some(Op::And),
                        Some(s) if s.eq_ignore_ascii_case("or") => Some(Op::Or),
                        Some(_) => {
                            p.reject(
                                InvalidKind::UnknownOperator,
                                "group_operator must be \"and\" or \"or\"",
                            );
                            None
                        }
                        None => None,
                    });
                }
                "group" => {
                    duplicate |= group.is_some();
                    group = Some(p.group_members()?);
                }
                _ => {
                    unknown = true;
                    p.skip_value()?;
                }
            }
            Ok(())
        })?;
        if duplicate {
            self.uncache(NoCacheReason::DuplicateJsonKey);
        }
        let is_criterion = field.is_some() || comparator.is_some() || value.is_some();
        let is_group = op.is_some() || group.is_some();
        if is_criterion {
            self.criteria += 1;
            if self.criteria > self.rules.limits.max_criteria {
                return Err(invalid(
                    InvalidKind::TooManyCriteria,
                    format!("more than {} criteria", self.rules.limits.max_criteria),
                ));
            }
        }
        if unknown || (is_criterion && is_group) {
            if is_criterion || is_group {
                self.uncache(NoCacheReason::UnknownJsonMember);
            } else {
                self.reject(
                    InvalidKind::BadShape,
                    "object is neither a criterion nor a group",
                );
            }
            return Ok(None);
        }
        if is_criterion {
            let value = match value {
                Some(ValueSlot::Str(v)) => Some(v),
                Some(ValueSlot::Other) => {
                    self.uncache(NoCacheReason::UnsupportedValueType);
                    return Ok(None);
                }
                None => None,
            };
            let (Some(field), Some(comparator), Some(value)) = (field, comparator, value) else {
                self.reject(
                    InvalidKind::BadShape,
                    "a criterion needs field, comparator and value",
                );
                return Ok(None);
            };
            let (Some(field), Some(comparator)) = (field, comparator) else {
                return Ok(None); // problem already recorded
            };
            if !self
                .rules
                .allowed_comparators
                .iter()
                .any(|c| **c == *comparator)
            {
                let msg = format!(
                    "comparator not allowed; allowed: {}",
                    self.rules.allowed_comparators.join(", ")
                );
                self.reject(InvalidKind::ComparatorNotAllowed, &msg);
                return Ok(None);
            }
            return Ok(Some(Node::Criterion(Criterion::new(
                &field,
                &comparator,
                &value,
            ))));
        }
        if is_group {
            let (Some(op), Some(group)) = (op, group) else {
                self.reject(
                    InvalidKind::BadShape,
                    "a group needs group_operator and group",
                );
                return Ok(None);
            };
            let (Some(op), Some((count, members))) = (op, group) else {
                return Ok(None); // problem already recorded
            };
            if count == 0 {
                self.reject(InvalidKind::EmptyGroup, "empty group");
                return Ok(None);
            }
            if members.len() != count {
                return Ok(None); // a member's problem is recorded
            }
            return Ok(Some(Node::Group(op, members)));
        }
        self.reject(
            InvalidKind::BadShape,
            "object is neither a criterion nor a group",
        );
        Ok(None)
    }

    /// The `field` member: `{"api_name": "<allowed field>"}`. `None` when a problem was recorded.
    fn field(&mut self) -> Result<Option<Cow<'a, str>>, Reject> {
        if self.peek() != Some(b'{') {
            self.skip_value()?;
            self.reject(
                InvalidKind::BadShape,
                "field must be an object with api_name",
            );
            return Ok(None);
        }
        self.enter()?;
        let mut api_name: Option<Option<Cow<'a, str>>> = None;
        let mut id = false;
        let mut unknown = false;
        let mut duplicate = false;
        self.object_members(|p, key| {
            match &*key {
                "api_name" => {
                    duplicate |= api_name.is_some();
                    api_name = Some(p.string_member()?);
                }
                "id" => {
                    duplicate |= id;
                    id = true;
                    p.skip_value()?;
                }
                _ => {
                    unknown = true;
                    p.skip_value()?;
                }
            }
            Ok(())
        })?;
        if duplicate {
            self.uncache(NoCacheReason::DuplicateJsonKey);
        }
        if id {
            self.uncache(NoCacheReason::UnsupportedFieldSelector);
            return Ok(None);
        }
        if unknown {
            self.uncache(NoCacheReason::UnknownJsonMember);
            return Ok(None);
        }
        match api_name {
            Some(Some(name)) => {
                if self.rules.allowed_fields.iter().any(|f| **f == *name) {
                    Ok(Some(name))
                } else {
                    let msg = format!(
                        "field not allowed; allowed: {}",
                        self.rules.allowed_fields.join(", ")
                    );
                    self.reject(InvalidKind::FieldNotAllowed, &msg);
                    Ok(None)
                }
            }
            Some(None) => Ok(None),
            None => {
                self.reject(
                    InvalidKind::BadShape,
                    "field must be an object with api_name",
                );
                Ok(None)
            }
        }
    }

    /// A member whose value must be a JSON string; `None` (recorded as bad shape) otherwise.
    fn string_member(&mut self) -> Result<Option<Cow<'a, str>>, Reject> {
        if self.peek() == Some(b'"') {
            return self.string().map(Some);
        }
        self.skip_value()?;
        self.reject(InvalidKind::BadShape, "expected a string member");
        Ok(None)
    }

    /// The `group` member: an array of nodes. Returns (number of elements, usable members);
    /// `None` when it is not an array.
    fn group_members(&mut self) -> Result<Option<(usize, Vec<Node>)>, Reject> {
        if self.peek() != Some(b'[') {
            self.skip_value()?;
            self.reject(InvalidKind::BadShape, "group must be an array");
            return Ok(None);
        }
        self.enter()?;
        let mut count = 0;
        let mut members = Vec::new();
        self.array_elements(|p| {
            count += 1;
            if let Some(n) = p.node()? {
                members.push(n);
            }
            Ok(())
        })?;
        Ok(Some((count, members)))
    }

    /// Validates and skips any JSON value at `pos`.
    fn skip_value(&mut self) -> Result<(), Reject> {
        self.ws();
        match self.peek() {
            Some(b'{') => {
                self.enter()?;
                self.object_members(|p, _| p.skip_value())
            }
            Some(b'[') => {
                self.enter()?;
                self.array_elements(|p| p.skip_value())
            }
            Some(b'"') => self.string().map(drop),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.syntax("expected a value")),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Reject> {
        if self.src[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.syntax("invalid literal"))
        }
    }

    /// RFC 8259 number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Result<(), Reject> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.syntax("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.syntax("invalid number"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.syntax("invalid number"));
            }
            self.digits();
        }
        Ok(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    /// A JSON string at `pos` (which is `"`), unescaped. Borrows when it has no escapes.
    fn string(&mut self) -> Result<Cow<'a, str>, Reject> {
        self.pos += 1;
        let start = self.pos;
        // The run up to the closing quote, an escape or a control character, in one scan.
        let run = self.src[start..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            .unwrap_or(self.src.len() - start);
        self.pos = start + run;
        match self.peek() {
            None => return Err(self.syntax("unterminated string")),
            Some(b'"') => {
                let s = &self.text[start..self.pos];
                self.pos += 1;
                return Ok(Cow::Borrowed(s));
            }
            Some(b'\\') => {}
            Some(_) => return Err(self.syntax("control character in string")),
        }
        // Slow path: escapes present.
        let mut out = String::with_capacity(self.pos - start + 16);
        out.push_str(&self.text[start..self.pos]);
        loop {
            let run = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.push_str(&self.text[run..self.pos]);
            match self.peek() {
                None => return Err(self.syntax("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let Some(e) = self.peek() else {
                        return Err(self.syntax("unterminated string"));
                    };
                    self.pos += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let c = self.unicode_escape()?;
                            out.push(c);
                        }
                        _ => {
                            self.pos -= 1;
                            return Err(self.syntax("invalid escape"));
                        }
                    }
                }
                Some(_) => return Err(self.syntax("control character in string")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, Reject> {
        let Some(h) = self.src.get(self.pos..self.pos + 4) else {
            return Err(self.syntax("invalid \\u escape"));
        };
        let mut v = 0u32;
        for &b in h {
            let d = (b as char)
                .to_digit(16)
                .ok_or_else(|| self.syntax("invalid \\u escape"))?;
            v = v << 4 | d;
        }
        self.pos += 4;
        Ok(v)
    }

    /// After `\u`: one code point, combining a surrogate pair. A lone surrogate is recorded as
    /// uncacheable and replaced by U+FFFD so the syntax check can go on.
    fn unicode_escape(&mut self) -> Result<char, Reject> {
        let hi = self.hex4()?;
        if (0xD800..0xDC00).contains(&hi) {
            if self.src[self.pos..].starts_with(b"\\u") {
                let save = self.pos;
                self.pos += 2;
                let lo = self.hex4()?;
                if (0xDC00..0xE000).contains(&lo) {
                    let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                    return Ok(char::from_u32(c).unwrap_or('\u{FFFD}'));
                }
                self.pos = save;
            }
            self.uncache(NoCacheReason::LoneSurrogate);
            return Ok('\u{FFFD}');
        }
        match char::from_u32(hi) {
            Some(c) => Ok(c),
            None => {
                self.uncache(NoCacheReason::LoneSurrogate);
                Ok('\u{FFFD}')
            }
        }
    }
}
