//! A reader for the Prometheus text exposition format (the gateway's `/metrics`): samples are
//! parsed into a name, labels and a value, so assertions compare numbers, never substrings
//! (`"} 1"` as a substring also matches 10 to 19).

use std::collections::BTreeMap;
use std::fmt;

/// One sample line: `name{label="value",…} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// Whether every `(label, value)` of `want` is among this sample's labels.
    pub fn has(&self, want: &[(&str, &str)]) -> bool {
        want.iter()
            .all(|(k, v)| self.labels.get(*k).is_some_and(|have| have == v))
    }
}

/// A parsed scrape; `Display` prints the text it was parsed from (for assertion messages).
#[derive(Clone, Debug)]
pub struct Metrics {
    text: String,
    samples: Vec<Sample>,
}

impl Metrics {
    /// Parses `text`; panics on a sample line that is not in the exposition format.
    pub fn parse(text: String) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| parse_line(l).unwrap_or_else(|| panic!("not a sample line: {l:?}")))
            .collect();
        Metrics { text, samples }
    }

    /// The exposition text as scraped.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Every sample of the metric `name` (for a histogram: `name_bucket`, `name_sum`, …).
    pub fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The value of the series `name` whose labels are exactly `labels`; `None` when there is
    /// no such series.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples(name)
            .find(|s| s.labels.len() == labels.len() && s.has(labels))
            .map(|s| s.value)
    }

    /// The sum over every series of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name)
            .filter(|s| s.has(labels))
            .map(|s| s.value)
            .sum()
    }
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `name{l="v",…} value [timestamp]`, label values with `\\`, `\"` and `\n` escapes.
fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start_matches(',');
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = rest.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.insert(key.to_owned(), value);
            rest = &after[end + 1..];
        }
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

#[test]
fn parses_names_labels_escapes_and_values() {
    let m = Metrics::parse(
        "# HELP x y\nplain 3\nrt{route=\"/crm/{version}/a\",q=\"a\\\"b\\\\\"} 12\nh_bucket{le=\"+Inf\"} 1e3\n"
            .to_owned(),
    );
    assert_eq!(m.get("plain", &[]), Some(3.0));
    assert_eq!(
        m.get("rt", &[("route", "/crm/{version}/a"), ("q", "a\"b\\")]),
        Some(12.0)
    );
    assert_eq!(m.get("rt", &[("route", "/crm/{version}/a")]), None, "exact");
    assert_eq!(m.sum("rt", &[("route", "/crm/{version}/a")]), 12.0);
    assert_eq!(m.get("h_bucket", &[("le", "+Inf")]), Some(1000.0));
    assert_eq!(
        m.get("rt", &[("route", "/crm/{version}/a"), ("q", "a")]),
        None
    );
}
