//! The Zoho search `criteria` grammar: a bounded single-pass parser straight into a typed tree,
//! the semantic normalisation, the key byte stream and the canonical rendering.
//!
//! The contract (what merges, what is uncacheable, what is invalid) is written in the `canonical`
//! module doc, section "`criteria`". The parser works on bytes: every byte with a meaning in the
//! grammar is ASCII, so slicing at them never splits a UTF-8 sequence.

use serde::Deserialize;

use super::{InvalidKind, InvalidQuery, NoCacheReason, Reject};

/// Bounds on the `criteria` parameter.
///
/// `max_criteria` and `max_in_values` are Zoho's documented limits and exceeding them is
/// answered locally ([`InvalidKind::CriteriaLimitExceeded`], [`InvalidKind::TooManyValues`]).
/// `max_bytes` and `max_depth` only protect the gateway: Zoho's own bounds are unknown, so
/// exceeding them makes the request [`NoCacheReason::CriteriaTooComplex`] (forwarded as-is).
/// All fields default independently when deserialised.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct CriteriaLimits {
    /// Maximum length in bytes of the decoded criteria. Default: 8192.
    #[serde(default = "CriteriaLimits::default_max_bytes")]
    pub max_bytes: usize,
    /// Maximum parenthesis nesting (a lone criterion is depth 1, `((A)and(B))` depth 2).
    /// Parsing, normalising and writing the key recurse once per level, so keep it in the
    /// hundreds at most. Default: 16.
    #[serde(default = "CriteriaLimits::default_max_depth")]
    pub max_depth: usize,
    /// Maximum number of `(field:operator:value)` criteria, as written (duplicates count).
    /// Zoho's v8 OpenAPI spec answers more than 15 with 400 `CRITERIA_LIMIT_EXCEEDED`.
    /// Default: 15.
    #[serde(default = "CriteriaLimits::default_max_criteria")]
    pub max_criteria: usize,
    /// Maximum number of values in one `in` list. Zoho's v8 OpenAPI spec answers more than 100
    /// with 400 `INVALID_QUERY` ("Only 100 values are allowed in \"IN\" criteria"). Default: 100.
    #[serde(default = "CriteriaLimits::default_max_in_values")]
    pub max_in_values: usize,
}

impl CriteriaLimits {
    fn default_max_bytes() -> usize {
        8192
    }
    fn default_max_depth() -> usize {
        16
    }
    fn default_max_criteria() -> usize {
        15
    }
    fn default_max_in_values() -> usize {
        100
    }
}

impl Default for CriteriaLimits {
    fn default() -> Self {
        CriteriaLimits {
            max_bytes: Self::default_max_bytes(),
            max_depth: Self::default_max_depth(),
            max_criteria: Self::default_max_criteria(),
            max_in_values: Self::default_max_in_values(),
        }
    }
}

/// A search operator, as Zoho's search-records docs list them (lowercase, byte-exact).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Operator {
    Equals,
    NotEqual,
    StartsWith,
    In,
    NotIn,
    GreaterThan,
    GreaterEqual,
    LessThan,
    LessEqual,
    Between,
}

/// How many values an operator takes, and whether their order matters.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arity {
    /// Exactly one value; an unescaped comma in it is not understood.
    One,
    /// A comma-separated set: order does not matter, duplicates are kept.
    Set,
    /// Exactly two comma-separated values, in order (a range).
    Pair,
}

impl Operator {
    const ALL: [Operator; 10] = [
        Operator::Equals,
        Operator::NotEqual,
        Operator::StartsWith,
        Operator::In,
        Operator::NotIn,
        Operator::GreaterThan,
        Operator::GreaterEqual,
        Operator::LessThan,
        Operator::LessEqual,
        Operator::Between,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Operator::Equals => "equals",
            Operator::NotEqual => "not_equal",
            Operator::StartsWith => "starts_with",
            Operator::In => "in",
            Operator::NotIn => "not_in",
            Operator::GreaterThan => "greater_than",
            Operator::GreaterEqual => "greater_equal",
            Operator::LessThan => "less_than",
            Operator::LessEqual => "less_equal",
            Operator::Between => "between",
        }
    }

    fn arity(self) -> Arity {
        match self {
            Operator::In | Operator::NotIn => Arity::Set,
            Operator::Between => Arity::Pair,
            Operator::Equals
            | Operator::NotEqual
            | Operator::StartsWith
            | Operator::GreaterThan
            | Operator::GreaterEqual
            | Operator::LessThan
            | Operator::LessEqual => Arity::One,
        }
    }
}

/// How the members of a group combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Join {
    And,
    Or,
}

impl Join {
    fn as_str(self) -> &'static str {
        match self {
            Join::And => "and",
            Join::Or => "or",
        }
    }
}

/// One `(field:operator:value)`; values are unescaped and otherwise byte-exact.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Criterion {
    field: Box<str>,
    op: Operator,
    /// One value for [`Arity::One`], two in order for [`Arity::Pair`], sorted for [`Arity::Set`].
    values: Box<[Box<str>]>,
}

/// The typed tree. The derived `Ord` is the canonical member order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Node {
    Criterion(Criterion),
    Group(Join, Vec<Node>),
}

/// A canonical Zoho search `criteria` expression.
///
/// Two criteria that mean the same search under the `canonical` contract compare equal and write
/// the same key bytes; [`Criteria::render`] gives the canonical Zoho spelling.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Criteria {
    root: Node,
}

// Key stream tags. Every node is `tag, then its fields`; strings are u64-LE-length-prefixed,
// lists count-prefixed, so the stream is prefix-free.
const K_CRITERION: u8 = b'C';
const K_GROUP: u8 = b'G';

impl Criteria {
    /// Writes the canonical form as a self-delimiting byte stream: a criterion is `'C'`, the
    /// field, the operator name, the value count and the values; a group is `'G'`, the
    /// operator name, the member count and the members (strings prefixed with their length as
    /// u64 little-endian). No stream is a prefix of another, so the caller can append it to a
    /// key after its own field tag. Allocates nothing.
    pub fn write_key(&self, sink: &mut impl FnMut(&[u8])) {
        write_node(&self.root, sink);
    }

    /// The canonical Zoho spelling: no whitespace, `and`/`or` in lowercase, groups in one pair
    /// of parentheses, members in canonical order, `(`, `)` and `,` in values escaped with a
    /// backslash. Parsing it again gives an equal [`Criteria`].
    pub fn render(&self) -> String {
        let mut out = String::new();
        render_into(&self.root, &mut out);
        out
    }

    /// Number of `(field:operator:value)` criteria.
    pub fn criteria_count(&self) -> usize {
        count(&self.root)
    }
}

fn count(node: &Node) -> usize {
    match node {
        Node::Criterion(_) => 1,
        Node::Group(_, members) => members.iter().map(count).sum(),
    }
}

fn write_str(sink: &mut impl FnMut(&[u8]), s: &str) {
    sink(&(s.len() as u64).to_le_bytes());
    sink(s.as_bytes());
}

fn write_node(node: &Node, sink: &mut impl FnMut(&[u8])) {
    match node {
        Node::Criterion(c) => {
            sink(&[K_CRITERION]);
            write_str(sink, &c.field);
            write_str(sink, c.op.as_str());
            sink(&(c.values.len() as u64).to_le_bytes());
            for v in &c.values {
                write_str(sink, v);
            }
        }
        Node::Group(join, members) => {
            sink(&[K_GROUP]);
            write_str(sink, join.as_str());
            sink(&(members.len() as u64).to_le_bytes());
            for m in members {
                write_node(m, sink);
            }
        }
    }
}

fn render_into(node: &Node, out: &mut String) {
    match node {
        Node::Criterion(c) => {
            out.push('(');
            out.push_str(&c.field);
            out.push(':');
            out.push_str(c.op.as_str());
            out.push(':');
            for (i, v) in c.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                for ch in v.chars() {
                    if matches!(ch, '(' | ')' | ',') {
                        out.push('\\');
                    }
                    out.push(ch);
                }
            }
            out.push(')');
        }
        Node::Group(join, members) => {
            out.push('(');
            for (i, m) in members.iter().enumerate() {
                if i > 0 {
                    out.push_str(join.as_str());
                }
                render_into(m, out);
            }
            out.push(')');
        }
    }
}

/// Parses, validates and normalises a decoded (percent- and `+`-decoded once) `criteria` value.
///
/// Never panics; time and memory are linear in `decoded.len()` (bounded by
/// [`CriteriaLimits::max_bytes`]) apart from the member sort.
///
/// # Errors
/// [`Reject::Uncacheable`] when the meaning is not certain, [`Reject::Invalid`] (param
/// `"criteria"`) when Zoho would answer 400; precedence as in the `canonical` module doc.
pub(crate) fn parse(decoded: &str, limits: &CriteriaLimits) -> Result<Criteria, Reject> {
    if decoded.len() > limits.max_bytes {
        return Err(Reject::Uncacheable(NoCacheReason::CriteriaTooComplex));
    }
    let mut p = Parser {
        src: decoded.as_bytes(),
        text: decoded,
        pos: 0,
        depth: 0,
        criteria: 0,
        limits,
        uncacheable: None,
        invalid: None,
    };
    p.spaces();
    if p.pos == p.src.len() {
        return Err(Reject::Uncacheable(NoCacheReason::CriteriaEmpty));
    }
    let root = p.sequence(false)?;
    if let Some(reason) = p.uncacheable {
        return Err(Reject::Uncacheable(reason));
    }
    if p.criteria > limits.max_criteria {
        return Err(Reject::Invalid(InvalidQuery::new(
            "criteria",
            InvalidKind::CriteriaLimitExceeded,
            format!("more than {} criteria", limits.max_criteria),
        )));
    }
    if let Some(inv) = p.invalid {
        return Err(Reject::Invalid(inv));
    }
    let Some(mut root) = root else {
        // Every path that yields `None` records a problem; this is a defensive fallback.
        return Err(Reject::Uncacheable(NoCacheReason::CriteriaEmpty));
    };
    normalize(&mut root);
    Ok(Criteria { root })
}

fn syntax(what: &str) -> Reject {
    Reject::Invalid(InvalidQuery::new(
        "criteria",
        InvalidKind::CriteriaSyntax,
        format!("invalid criteria: {what}"),
    ))
}

/// Flattens same-operator children, unwraps one-member groups, sorts members. Never removes a
/// member: the multiset of criteria (and so their number) is unchanged. Children first, so the
/// result is a fixed point.
fn normalize(node: &mut Node) {
    let Node::Group(join, members) = node else {
        return;
    };
    let join = *join;
    members.iter_mut().for_each(normalize);
    if members
        .iter()
        .any(|m| matches!(m, Node::Group(inner, _) if *inner == join))
    {
        let old = std::mem::take(members);
        for m in old {
            match m {
                Node::Group(inner, ms) if inner == join => members.extend(ms),
                other => members.push(other),
            }
        }
    }
    members.sort_unstable();
    if members.len() == 1
        && let Some(only) = members.pop()
    {
        *node = only;
    }
}

struct Parser<'a, 'l> {
    src: &'a [u8],
    text: &'a str,
    pos: usize,
    depth: usize,
    criteria: usize,
    limits: &'l CriteriaLimits,
    /// First reason the criteria cannot be canonicalised with certainty (parsing goes on: the
    /// reasons recorded here do not change how the rest is tokenised).
    uncacheable: Option<NoCacheReason>,
    /// First validation failure, reported only if nothing is uncacheable.
    invalid: Option<InvalidQuery>,
}

impl Parser<'_, '_> {
    fn uncache(&mut self, reason: NoCacheReason) {
        self.uncacheable.get_or_insert(reason);
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    /// Skips the whitespace allowed between tokens: spaces. Other ASCII whitespace is skipped
    /// too but makes the criteria uncacheable (whether Zoho skips it is unknown).
    fn spaces(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b' ' => {}
                b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c' => {
                    self.uncache(NoCacheReason::CriteriaUnusualWhitespace)
                }
                _ => return,
            }
            self.pos += 1;
        }
    }

    /// Members joined by `and`/`or` up to the end of input (`closed == false`) or up to the
    /// `)` that closes the enclosing group (left unconsumed). One member is returned as itself.
    /// `None` when a problem was recorded.
    fn sequence(&mut self, closed: bool) -> Result<Option<Node>, Reject> {
        let mut members: Vec<Node> = Vec::new();
        let mut join: Option<Join> = None;
        let mut usable = true;
        loop {
            self.spaces();
            if self.peek() != Some(b'(') {
                return Err(syntax("expected '('"));
            }
            match self.member()? {
                Some(m) => members.push(m),
                None => usable = false,
            }
            self.spaces();
            match self.peek() {
                None if !closed => break,
                Some(b')') if closed => break,
                None | Some(b')') => return Err(syntax("unbalanced parentheses")),
                Some(_) => {
                    let word = self.word();
                    let this = if word.eq_ignore_ascii_case("and") {
                        Join::And
                    } else if word.eq_ignore_ascii_case("or") {
                        Join::Or
                    } else {
                        return Err(syntax("expected 'and' or 'or' between criteria"));
                    };
                    if word != this.as_str() {
                        self.uncache(NoCacheReason::CriteriaOperatorCase);
                    }
                    match join {
                        Some(j) if j != this => {
                            // `(A)and(B)or(C)`: Zoho's precedence is undocumented.
                            self.uncache(NoCacheReason::CriteriaMixedOperators)
                        }
                        Some(_) => {}
                        None => join = Some(this),
                    }
                }
            }
        }
        if !usable {
            return Ok(None);
        }
        Ok(match join {
            None => members.pop(),
            Some(j) => Some(Node::Group(j, members)),
        })
    }

    /// The ASCII letters at `pos`.
    fn word(&mut self) -> &str {
        let start = self.pos;
        while let Some(b'a'..=b'z' | b'A'..=b'Z') = self.peek() {
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }

    /// A parenthesised group or criterion at `pos` (which is `(`).
    fn member(&mut self) -> Result<Option<Node>, Reject> {
        self.depth += 1;
        if self.depth > self.limits.max_depth {
            return Err(Reject::Uncacheable(NoCacheReason::CriteriaTooComplex));
        }
        self.pos += 1;
        let body = self.pos;
        self.spaces();
        let node = if self.peek() == Some(b'(') {
            let node = self.sequence(true)?;
            self.pos += 1; // the `)` that `sequence` stopped at
            node
        } else {
            // Whitespace after `(` belongs to the field (and makes it unusual).
            self.pos = body;
            self.criterion()?
        };
        self.depth -= 1;
        Ok(node)
    }

    /// `field:operator:value)` at `pos`; consumes the closing `)`.
    fn criterion(&mut self) -> Result<Option<Node>, Reject> {
        let start = self.pos;
        let mut colons = [0usize; 2];
        let mut seen = 0;
        let mut escapes = false;
        loop {
            match self.peek() {
                None => return Err(syntax("unbalanced parentheses")),
                Some(b')') => break,
                // Zoho requires `(` in a value to be escaped; how it reads a raw one is unknown,
                // and the rest of the input cannot be tokenised with certainty.
                Some(b'(') => {
                    return Err(Reject::Uncacheable(
                        NoCacheReason::CriteriaUnescapedParenthesis,
                    ));
                }
                Some(b'\\') => match self.src.get(self.pos + 1) {
                    Some(b'(' | b')' | b',') => {
                        escapes = true;
                        self.pos += 2;
                    }
                    // Only `\(`, `\)` and `\,` are documented; `\\` or `\:` might be read
                    // either way, which changes where the criterion ends.
                    _ => return Err(Reject::Uncacheable(NoCacheReason::CriteriaUnknownEscape)),
                },
                Some(b':') => {
                    if seen < 2 {
                        colons[seen] = self.pos;
                        seen += 1;
                    }
                    self.pos += 1;
                }
                Some(_) => self.pos += 1,
            }
        }
        let end = self.pos;
        self.pos += 1; // `)`
        self.criteria += 1;
        if seen < 2 {
            return Err(syntax("a criterion is (field:operator:value)"));
        }
        let field = &self.text[start..colons[0]];
        let op_text = &self.text[colons[0] + 1..colons[1]];
        let raw_value = &self.text[colons[1] + 1..end];
        if field.is_empty() {
            return Err(syntax("empty field name"));
        }
        if op_text.is_empty() {
            return Err(syntax("empty operator"));
        }
        let mut usable = true;
        if !field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'$'))
        {
            // Field API names are `[A-Za-z0-9_]`; whether Zoho trims or rejects others is unknown.
            self.uncache(NoCacheReason::CriteriaUnusualField);
            usable = false;
        }
        let op = match Operator::ALL.iter().find(|o| o.as_str() == op_text) {
            Some(&op) => op,
            None => {
                self.uncache(
                    if Operator::ALL
                        .iter()
                        .any(|o| o.as_str().eq_ignore_ascii_case(op_text))
                    {
                        NoCacheReason::CriteriaOperatorCase
                    } else {
                        NoCacheReason::CriteriaUnknownOperator
                    },
                );
                return Ok(None);
            }
        };
        let mut values = split_values(raw_value, escapes);
        match op.arity() {
            Arity::One if values.len() != 1 => {
                self.uncache(NoCacheReason::CriteriaUnescapedComma);
                usable = false;
            }
            Arity::Pair if values.len() != 2 => {
                self.uncache(NoCacheReason::CriteriaValueCount);
                usable = false;
            }
            Arity::Set => {
                if op == Operator::In
                    && values.len() > self.limits.max_in_values
                    && self.invalid.is_none()
                {
                    self.invalid = Some(InvalidQuery::new(
                        "criteria",
                        InvalidKind::TooManyValues,
                        format!(
                            "only {} values are allowed in an in criterion",
                            self.limits.max_in_values
                        ),
                    ));
                }
                values.sort_unstable();
            }
            Arity::One | Arity::Pair => {}
        }
        if !usable {
            return Ok(None);
        }
        Ok(Some(Node::Criterion(Criterion {
            field: field.into(),
            op,
            values: values.into_boxed_slice(),
        })))
    }
}

/// Splits a raw value on unescaped commas and unescapes `\(`, `\)`, `\,` (the only escapes the
/// tokeniser lets through).
fn split_values(raw: &str, escapes: bool) -> Vec<Box<str>> {
    if !escapes {
        return raw.split(',').map(Box::from).collect();
    }
    let mut values = Vec::new();
    let mut cur = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    cur.push(next);
                }
            }
            ',' => values.push(std::mem::take(&mut cur).into_boxed_str()),
            c => cur.push(c),
        }
    }
    values.push(cur.into_boxed_str());
    values
}
