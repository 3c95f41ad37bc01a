//! Per-thread sharded recording for the metrics every request touches.
//!
//! A request records its count, its duration, the credits it saved and the cache tally. Kept in
//! one atomic each, those cache lines move between cores on every request when two workers serve
//! at once. Here every sharded value has [`shard_count`] cache-line-padded cells a thread can own,
//! plus one shared cell. A thread takes a free cell on its first record and gives it back when it
//! exits; while it owns it, it is the cell's only writer, so a record is a `Relaxed` load and
//! store into a cache line no other core writes (no lock-prefixed read-modify-write). A thread
//! that finds every cell taken (more live recording threads than cells), or records while its
//! thread-locals are being destroyed, adds into the shared cell with `fetch_add`. Readers sum
//! the cells. A sum read while requests are recorded is a moment's value, like any counter
//! scrape: each cell's part is exact, the parts may be a few records apart in time.
//!
//! The prometheus crate has no sharded metric (its `local` metrics are per-thread buffers that
//! the owning thread must flush, so a scrape would miss what a worker has not flushed yet), and
//! the sharded-counter crates (`contatori`, `fast-telemetry`) have neither histograms nor a
//! [`Collector`]. So the shards are plain atomics here, and the collectors below turn them into
//! the exposition the prometheus `IntCounterVec`/`HistogramVec` gave before (names, help, types,
//! label pairs sorted by name, cumulative buckets, `_sum`, `_count`, only series that occurred).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};

use super::{DURATION_BUCKETS, MethodLabel, STATUS_CLASSES};
use crate::cache::Outcome;

/// Upper bound on [`shard_count`].
const MAX_SHARDS: usize = 64;

/// The number of cells threads can own in every sharded value: twice the available
/// parallelism, rounded up to a power of two, at most 64 (at least 2). The slack over one cell
/// per core keeps every runtime worker on a cell of its own while other threads that record (the
/// blocking pool, a test's own threads) hold some too.
pub fn shard_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (2 * cores).next_power_of_two().clamp(2, MAX_SHARDS)
    })
}

/// Bit `i` set: a live thread owns cell `i`.
static OWNED: AtomicU64 = AtomicU64::new(0);

/// The cell a thread writes: `< shard_count()` owned, `shard_count()` the shared one.
struct Slot(usize);

impl Slot {
    /// The lowest free cell, or the shared one when all are taken. `Acquire`: the new owner
    /// sees every store of the previous one (released in [`Slot::drop`]).
    fn take() -> Slot {
        let n = shard_count();
        let all = u64::MAX >> (64 - n);
        let mut owned = OWNED.load(Ordering::Relaxed);
        loop {
            let free = !owned & all;
            if free == 0 {
                return Slot(n);
            }
            let bit = free.trailing_zeros() as usize;
            match OWNED.compare_exchange_weak(
                owned,
                owned | 1 << bit,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Slot(bit),
                Err(now) => owned = now,
            }
        }
    }
}

impl Drop for Slot {
    /// Gives the cell back when the thread exits (`Release`: after its last store).
    fn drop(&mut self) {
        if self.0 < shard_count() {
            OWNED.fetch_and(!(1 << self.0), Ordering::Release);
        }
    }
}

thread_local! {
    static SLOT: Slot = Slot::take();
}

/// The calling thread's cell: taken on its first record, then a thread-local read.
fn slot() -> usize {
    SLOT.try_with(|s| s.0).unwrap_or_else(|_| shard_count())
}

/// The calling thread's cell of `cells` (one per [`slot`] value, the shared one last), and
/// whether the thread owns it.
fn cell<T>(cells: &[CachePadded<T>]) -> (&T, bool) {
    let shared = cells.len() - 1;
    match slot() {
        i if i < shared => (&cells[i], true),
        _ => (&cells[shared], false),
    }
}

/// Adds `n` (wrapping) into `c`, a cell's counter: a plain load and store when the thread
/// `owns` the cell (its only writer, see [`Slot`]), a `fetch_add` into the shared cell.
fn add(c: &AtomicU64, n: u64, owns: bool) {
    if owns {
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    } else {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// One padded `T` per [`slot`] value: `shard_count()` owned cells and the shared one.
fn shards<T: Default>() -> Box<[CachePadded<T>]> {
    (0..=shard_count())
        .map(|_| CachePadded::default())
        .collect()
}

/// A counter sharded per thread: [`ShardedCounter::inc`] adds to the calling thread's cell,
/// [`ShardedCounter::get`] sums the cells. Memory: one cache line pair (128 bytes on x86-64)
/// per cell, `shard_count() + 1` cells.
pub struct ShardedCounter {
    shards: Box<[CachePadded<AtomicU64>]>,
}

impl ShardedCounter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n` (wrapping at `u64::MAX`).
    pub fn add(&self, n: u64) {
        let (c, owns) = cell(&self.shards);
        add(c, n, owns);
    }

    /// The total over all threads.
    pub fn get(&self) -> u64 {
        self.shards
            .iter()
            .fold(0, |sum, s| sum.wrapping_add(s.load(Ordering::Relaxed)))
    }
}

impl Default for ShardedCounter {
    fn default() -> Self {
        ShardedCounter { shards: shards() }
    }
}

impl std::fmt::Debug for ShardedCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ShardedCounter").field(&self.get()).finish()
    }
}

/// [`DURATION_BUCKETS`] in nanoseconds (`ns as f64 / 1e9` is exactly the bound in seconds:
/// division rounds correctly, as parsing the decimal does).
const DURATION_BUCKETS_NS: [u64; DURATION_BUCKETS.len()] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
];

const METHODS: usize = MethodLabel::ALL.len();
const CLASSES: usize = STATUS_CLASSES.len();

/// One thread's records of one `(route, outcome)`: the duration histogram and the request
/// counts by `(method, status class)`. 55 × 8 = 440 bytes, 512 padded.
struct RequestCell {
    /// Durations per bucket, not cumulative; the last one is above every bound (`+Inf`).
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    /// Sum of the durations, nanoseconds (wraps after 584 years of summed request time).
    sum_ns: AtomicU64,
    /// Requests by `method * CLASSES + status class`.
    requests: [AtomicU64; METHODS * CLASSES],
}

impl Default for RequestCell {
    fn default() -> Self {
        RequestCell {
            buckets: [const { AtomicU64::new(0) }; DURATION_BUCKETS.len() + 1],
            sum_ns: AtomicU64::new(0),
            requests: [const { AtomicU64::new(0) }; METHODS * CLASSES],
        }
    }
}

/// `zoho_gateway_requests_total` and `zoho_gateway_request_duration_seconds`, sharded per
/// thread. A `(route, outcome)`'s cells are allocated on its first request (series that never
/// occur cost one empty `OnceLock` each): `512 × (shard_count() + 1)` bytes per
/// `(route, outcome)` seen, so at most `routes × 8 outcomes × 512 × (shard_count() + 1)`
/// (19 routes on 2 cores: 380 KiB; 64 + 1 cells, on 32 cores or more: 4.8 MiB). A request
/// counter series is exported
/// once its count is non-zero, a histogram once its `(route, outcome)` has a request: what the
/// `IntCounterVec` and `HistogramVec` resolved on first use exported before.
#[derive(Clone)]
pub(super) struct RequestMetrics(Arc<RequestTable>);

/// A `(route, outcome)`'s cells, one per [`slot`] value.
type RequestRow = Box<[CachePadded<RequestCell>]>;

struct RequestTable {
    requests_desc: Desc,
    durations_desc: Desc,
    route_labels: Vec<String>,
    /// By `route * Outcome::ALL.len() + outcome`.
    rows: Box<[OnceLock<RequestRow>]>,
}

impl RequestMetrics {
    /// The two metrics over these `route` label values (in [`crate::route::RouteKind::index`]
    /// order), to be registered as one collector.
    pub(super) fn new(route_labels: Vec<String>) -> Result<Self, prometheus::Error> {
        let desc = |name: &str, help: &str, labels: &[&str]| {
            Desc::new(
                name.to_owned(),
                help.to_owned(),
                labels.iter().map(|&l| l.to_owned()).collect(),
                HashMap::new(),
            )
        };
        let requests_desc = desc(
            "zoho_gateway_requests_total",
            "Client requests by method, route template, cache outcome and status class.",
            &["method", "route", "outcome", "status_class"],
        )?;
        let durations_desc = desc(
            "zoho_gateway_request_duration_seconds",
            "Client request duration, from headers read to response ready, by route and outcome.",
            &["route", "outcome"],
        )?;
        let rows = (0..route_labels.len() * Outcome::ALL.len())
            .map(|_| OnceLock::new())
            .collect();
        Ok(RequestMetrics(Arc::new(RequestTable {
            requests_desc,
            durations_desc,
            route_labels,
            rows,
        })))
    }

    /// Records one request of route index `route` (`< route_labels.len()`): three adds into
    /// the calling thread's cell.
    pub(super) fn record(
        &self,
        method: MethodLabel,
        route: usize,
        outcome: Outcome,
        class: usize,
        took: Duration,
    ) {
        let row = self.0.rows[route * Outcome::ALL.len() + outcome.index()].get_or_init(shards);
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        // Prometheus' rule: the first bucket whose upper bound is >= the value.
        let bucket = DURATION_BUCKETS_NS.partition_point(|&bound| bound < ns);
        let counts = method as usize * CLASSES + class;
        let (c, owns) = cell(row);
        add(&c.buckets[bucket], 1, owns);
        add(&c.sum_ns, ns, owns);
        add(&c.requests[counts], 1, owns);
    }
}

impl Collector for RequestMetrics {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0.requests_desc, &self.0.durations_desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let t = &*self.0;
        let (mut requests, mut durations) = (Vec::new(), Vec::new());
        for (i, row) in t.rows.iter().enumerate() {
            let Some(row) = row.get() else { continue };
            let route = t.route_labels[i / Outcome::ALL.len()].as_str();
            let outcome = Outcome::ALL[i % Outcome::ALL.len()].as_str();
            let mut buckets = [0u64; DURATION_BUCKETS.len() + 1];
            let mut sum_ns = 0u64;
            let mut counts = [0u64; METHODS * CLASSES];
            for cell in row.iter() {
                let add = |acc: &mut [u64], from: &[AtomicU64]| {
                    for (a, f) in acc.iter_mut().zip(from) {
                        *a = a.wrapping_add(f.load(Ordering::Relaxed));
                    }
                };
                add(&mut buckets, &cell.buckets);
                add(&mut counts, &cell.requests);
                sum_ns = sum_ns.wrapping_add(cell.sum_ns.load(Ordering::Relaxed));
            }
            for (j, &n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
                let method = MethodLabel::ALL[j / CLASSES].as_str();
                let mut c = proto::Counter::default();
                c.set_value(n as f64);
                let mut m = metric(&[
                    ("method", method),
                    ("outcome", outcome),
                    ("route", route),
                    ("status_class", STATUS_CLASSES[j % CLASSES]),
                ]);
                m.set_counter(c);
                requests.push(m);
            }
            let mut h = proto::Histogram::default();
            let mut cumulative = 0u64;
            let mut bounds = Vec::with_capacity(DURATION_BUCKETS.len());
            for (&n, &ns) in buckets.iter().zip(&DURATION_BUCKETS_NS) {
                cumulative = cumulative.wrapping_add(n);
                let mut b = proto::Bucket::default();
                b.set_cumulative_count(cumulative);
                b.set_upper_bound(ns as f64 / 1e9);
                bounds.push(b);
            }
            h.set_bucket(bounds);
            h.set_sample_count(cumulative.wrapping_add(buckets[DURATION_BUCKETS.len()]));
            h.set_sample_sum(sum_ns as f64 / 1e9);
            let mut m = metric(&[("outcome", outcome), ("route", route)]);
            m.set_histogram(h);
            durations.push(m);
        }
        vec![
            family(&t.requests_desc, MetricType::COUNTER, requests),
            family(&t.durations_desc, MetricType::HISTOGRAM, durations),
        ]
    }
}

/// The reasons of `zoho_gateway_credits_saved_total`, in cell order.
const SAVED_REASONS: [Outcome; 5] = [
    Outcome::Hit,
    Outcome::Collapsed,
    Outcome::Stale,
    Outcome::Held,
    Outcome::Rejected,
];

/// One tenant's `zoho_gateway_credits_saved_total`, sharded per thread (the `reason`s of
/// [`SAVED_REASONS`]; 40 bytes, 128 padded, per cell).
pub(super) struct SavedCredits {
    shards: Box<[CachePadded<[AtomicU64; SAVED_REASONS.len()]>]>,
}

impl SavedCredits {
    /// Adds `credits` saved by a request with this `outcome`; outcomes that spent credits
    /// (miss, bypass, error) add nothing.
    pub(super) fn add(&self, outcome: Outcome, credits: u64) {
        if let Some(i) = SAVED_REASONS.iter().position(|&o| o == outcome) {
            let (c, owns) = cell(&self.shards);
            add(&c[i], credits, owns);
        }
    }

    fn get(&self, reason: usize) -> u64 {
        self.shards.iter().fold(0, |sum, s| {
            sum.wrapping_add(s[reason].load(Ordering::Relaxed))
        })
    }
}

impl std::fmt::Debug for SavedCredits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for (i, o) in SAVED_REASONS.iter().enumerate() {
            m.entry(&o.as_str(), &self.get(i));
        }
        m.finish()
    }
}

/// `zoho_gateway_credits_saved_total`: per tenant name, the cells handed out by
/// [`CreditsSaved::tenant`]. Every reason of every tenant that was ever resolved is exported
/// (from 0), and a tenant's counters outlive its removal from the configuration, as the
/// `IntCounterVec` did. Memory: `128 × (shard_count() + 1)` bytes per tenant name.
#[derive(Clone)]
pub(super) struct CreditsSaved(Arc<CreditsTable>);

struct CreditsTable {
    desc: Desc,
    /// In order of first resolution (the registry sorts the exposition).
    tenants: Mutex<Vec<(String, Arc<SavedCredits>)>>,
}

impl CreditsSaved {
    pub(super) fn new() -> Result<Self, prometheus::Error> {
        let desc = Desc::new(
            "zoho_gateway_credits_saved_total".to_owned(),
            "Zoho API credits saved: requests answered without an upstream call, by tenant and reason."
                .to_owned(),
            vec!["tenant".to_owned(), "reason".to_owned()],
            HashMap::new(),
        )?;
        Ok(CreditsSaved(Arc::new(CreditsTable {
            desc,
            tenants: Mutex::new(Vec::new()),
        })))
    }

    /// The tenant's counters: the same ones for the same name (a reloaded tenant keeps
    /// counting where it was).
    pub(super) fn tenant(&self, tenant: &str) -> Arc<SavedCredits> {
        let mut tenants = self
            .0
            .tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, saved)) = tenants.iter().find(|(name, _)| name == tenant) {
            return saved.clone();
        }
        let saved = Arc::new(SavedCredits { shards: shards() });
        tenants.push((tenant.to_owned(), saved.clone()));
        saved
    }
}

impl Collector for CreditsSaved {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let tenants = self
            .0
            .tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut metrics = Vec::with_capacity(tenants.len() * SAVED_REASONS.len());
        for (tenant, saved) in tenants.iter() {
            for (i, reason) in SAVED_REASONS.iter().enumerate() {
                let mut c = proto::Counter::default();
                c.set_value(saved.get(i) as f64);
                let mut m = metric(&[("reason", reason.as_str()), ("tenant", tenant)]);
                m.set_counter(c);
                metrics.push(m);
            }
        }
        vec![family(&self.0.desc, MetricType::COUNTER, metrics)]
    }
}

/// A metric with these label pairs (given sorted by name, as prometheus sorts them).
fn metric(labels: &[(&str, &str)]) -> proto::Metric {
    debug_assert!(labels.is_sorted_by_key(|(name, _)| *name));
    proto::Metric::from_label(
        labels
            .iter()
            .map(|&(name, value)| {
                let mut pair = LabelPair::default();
                pair.set_name(name.to_owned());
                pair.set_value(value.to_owned());
                pair
            })
            .collect(),
    )
}

/// A family of `desc` (the registry drops it when `metrics` is empty).
fn family(desc: &Desc, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut mf = MetricFamily::default();
    mf.set_name(desc.fq_name.clone());
    mf.set_help(desc.help.clone());
    mf.set_field_type(kind);
    mf.set_metric(metrics);
    mf
}

#[cfg(test)]
mod tests {
    use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

    use super::*;
    use crate::metrics::{Metrics, status_class};
    use crate::route::{RouteId, RouteKind};

    fn labels() -> Vec<String> {
        ["/a", "/b", "passthrough", "unmatched"]
            .map(str::to_owned)
            .to_vec()
    }

    /// The exposition lines of the families named `names`.
    fn lines_of(text: &[u8], names: &[&str]) -> Vec<String> {
        std::str::from_utf8(text)
            .unwrap()
            .lines()
            .filter(|l| {
                let l = l
                    .strip_prefix("# HELP ")
                    .or_else(|| l.strip_prefix("# TYPE "))
                    .unwrap_or(l);
                names.iter().any(|n| l.starts_with(n))
            })
            .map(str::to_owned)
            .collect()
    }

    /// The metrics as the prometheus `IntCounterVec`/`HistogramVec` recorded them before the
    /// shards: the reference exposition.
    struct Reference {
        registry: Registry,
        requests: IntCounterVec,
        durations: HistogramVec,
        saved: IntCounterVec,
    }

    impl Reference {
        fn new() -> Self {
            let requests = IntCounterVec::new(
                Opts::new(
                    "zoho_gateway_requests_total",
                    "Client requests by method, route template, cache outcome and status class.",
                ),
                &["method", "route", "outcome", "status_class"],
            )
            .unwrap();
            let durations = HistogramVec::new(
                HistogramOpts::new(
                    "zoho_gateway_request_duration_seconds",
                    "Client request duration, from headers read to response ready, by route and outcome.",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                &["route", "outcome"],
            )
            .unwrap();
            let saved = IntCounterVec::new(
                Opts::new(
                    "zoho_gateway_credits_saved_total",
                    "Zoho API credits saved: requests answered without an upstream call, by tenant and reason.",
                ),
                &["tenant", "reason"],
            )
            .unwrap();
            let registry = Registry::new();
            registry.register(Box::new(requests.clone())).unwrap();
            registry.register(Box::new(durations.clone())).unwrap();
            registry.register(Box::new(saved.clone())).unwrap();
            Reference {
                registry,
                requests,
                durations,
                saved,
            }
        }

        fn tenant(&self, tenant: &str) {
            for o in SAVED_REASONS {
                self.saved.with_label_values(&[tenant, o.as_str()]);
            }
        }

        fn record(&self, m: &http::Method, route: &str, o: Outcome, status: u16, took: Duration) {
            self.requests
                .with_label_values(&[
                    MethodLabel::of(m).as_str(),
                    route,
                    o.as_str(),
                    status_class(status),
                ])
                .inc();
            self.durations
                .with_label_values(&[route, o.as_str()])
                .observe(took.as_secs_f64());
        }

        fn render(&self) -> Vec<u8> {
            let mut out = Vec::new();
            prometheus::Encoder::encode(&TextEncoder::new(), &self.registry.gather(), &mut out)
                .unwrap();
            out
        }
    }

    const FAMILIES: [&str; 3] = [
        "zoho_gateway_requests_total",
        "zoho_gateway_request_duration_seconds",
        "zoho_gateway_credits_saved_total",
    ];

    #[test]
    fn exposition_equals_the_prometheus_vecs_for_the_same_records() {
        let metrics = Metrics::register(1, labels(), false).unwrap();
        let reference = Reference::new();
        // Nothing recorded, nothing resolved: no family at all.
        assert_eq!(lines_of(&metrics.render(), &FAMILIES), Vec::<String>::new());
        assert_eq!(
            lines_of(&reference.render(), &FAMILIES),
            Vec::<String>::new()
        );

        let (a, b) = (metrics.tenant("acme"), metrics.tenant("beta"));
        reference.tenant("acme");
        reference.tenant("beta");
        // Durations whose sum is exact both in f64 seconds and in integer nanoseconds (k/512 s,
        // and bucket bounds that are binary fractions), so the `_sum` lines match to the digit;
        // the bounds themselves land in their own bucket (`le` is inclusive).
        let ms = |k: u64| Duration::from_nanos(k * 1_953_125);
        let records = [
            (
                http::Method::GET,
                RouteKind::Cached(RouteId(0)),
                Outcome::Hit,
                200,
                ms(1),
            ),
            (
                http::Method::GET,
                RouteKind::Cached(RouteId(0)),
                Outcome::Hit,
                200,
                ms(3),
            ),
            (
                http::Method::GET,
                RouteKind::Cached(RouteId(0)),
                Outcome::Hit,
                304,
                Duration::ZERO,
            ),
            (
                http::Method::HEAD,
                RouteKind::Cached(RouteId(0)),
                Outcome::Hit,
                200,
                Duration::from_millis(250),
            ),
            (
                http::Method::GET,
                RouteKind::Cached(RouteId(0)),
                Outcome::Miss,
                200,
                Duration::from_millis(500),
            ),
            (
                http::Method::GET,
                RouteKind::Cached(RouteId(1)),
                Outcome::Error,
                503,
                Duration::from_secs(30),
            ),
            (
                http::Method::GET,
                RouteKind::Cached(RouteId(1)),
                Outcome::Error,
                504,
                Duration::from_secs(40),
            ),
            (
                http::Method::POST,
                RouteKind::Passthrough,
                Outcome::Bypass,
                201,
                ms(700),
            ),
            (
                http::Method::OPTIONS,
                RouteKind::Unmatched,
                Outcome::Rejected,
                404,
                Duration::from_millis(2500),
            ),
            (
                http::Method::DELETE,
                RouteKind::Passthrough,
                Outcome::Bypass,
                100,
                ms(2),
            ),
        ];
        for (m, route, o, status, took) in records {
            metrics.record_request(&m, route, o, status, took);
            reference.record(&m, metrics.route_label(route), o, status, took);
        }
        a.record_outcome(Outcome::Hit, 3);
        a.record_outcome(Outcome::Miss, 3);
        a.record_outcome(Outcome::Held, 1);
        b.record_outcome(Outcome::Collapsed, 2);
        reference
            .saved
            .with_label_values(&["acme", "hit"])
            .inc_by(3);
        reference
            .saved
            .with_label_values(&["acme", "held"])
            .inc_by(1);
        reference
            .saved
            .with_label_values(&["beta", "collapsed"])
            .inc_by(2);

        let ours = lines_of(&metrics.render(), &FAMILIES);
        let theirs = lines_of(&reference.render(), &FAMILIES);
        assert!(ours.len() > 60, "{ours:#?}");
        assert_eq!(ours, theirs);
        // The same tenant name resolves to the same counters.
        metrics.tenant("acme").record_outcome(Outcome::Hit, 1);
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(
            text.contains("zoho_gateway_credits_saved_total{reason=\"hit\",tenant=\"acme\"} 4\n"),
            "{text}"
        );
    }

    #[test]
    fn bucket_bounds_in_nanoseconds_are_the_bounds_in_seconds() {
        for (ns, s) in DURATION_BUCKETS_NS.iter().zip(DURATION_BUCKETS) {
            assert_eq!(*ns as f64 / 1e9, *s);
        }
    }

    #[test]
    fn shard_count_is_a_power_of_two_covering_the_cores() {
        let n = shard_count();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!(n.is_power_of_two() && n <= MAX_SHARDS, "{n}");
        assert!(n >= cores.min(MAX_SHARDS), "{n} shards, {cores} cores");
    }

    #[test]
    fn an_exiting_thread_gives_its_cell_to_the_next_with_its_count() {
        let counter = ShardedCounter::default();
        let threads = 8 * shard_count();
        let mut owned = 0;
        for t in 0..threads as u64 {
            let slot = std::thread::scope(|s| {
                s.spawn(|| {
                    counter.add(t);
                    slot()
                })
                .join()
                .unwrap()
            });
            owned += usize::from(slot < shard_count());
        }
        // Without giving cells back, at most `shard_count()` of these threads could own one.
        assert!(owned > shard_count(), "{owned} of {threads}");
        let threads = threads as u64;
        assert_eq!(counter.get(), threads * (threads - 1) / 2);
    }

    #[test]
    fn records_from_many_threads_sum_at_read() {
        // More threads alive at once than cells to own: some add into the shared cell.
        let threads = shard_count() + 4;
        const EACH: u64 = 1000;
        let metrics = Arc::new(Metrics::register(1, labels(), false).unwrap());
        let counter = Arc::new(ShardedCounter::default());
        let saved = metrics.tenant("acme");
        let (start, end) = (
            std::sync::Barrier::new(threads),
            std::sync::Barrier::new(threads),
        );
        let slots: Vec<usize> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads as u64)
                .map(|t| {
                    let (start, end) = (&start, &end);
                    let (metrics, counter, saved) = (&metrics, &counter, &saved);
                    s.spawn(move || {
                        start.wait();
                        for i in 0..EACH {
                            // 1 µs .. 1000 µs: every thread spans several buckets.
                            let took = Duration::from_micros(i + 1);
                            metrics.record_request(
                                &http::Method::GET,
                                RouteKind::Cached(RouteId(1)),
                                Outcome::Hit,
                                200,
                                took,
                            );
                            counter.inc();
                            saved.record_outcome(Outcome::Hit, t + 1);
                        }
                        // No thread exits (and gives its cell back) before all have recorded.
                        end.wait();
                        slot()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        // Live threads own distinct cells; at least 4 of ours found none free.
        let owned: Vec<_> = slots.iter().filter(|&&i| i < shard_count()).collect();
        let distinct: std::collections::BTreeSet<_> = owned.iter().collect();
        assert_eq!(distinct.len(), owned.len(), "{slots:?}");
        assert!(slots.len() - owned.len() >= 4, "{slots:?}");

        let threads = threads as u64;
        let total = threads * EACH;
        assert_eq!(counter.get(), total);
        assert_eq!(format!("{counter:?}"), format!("ShardedCounter({total})"));
        let text = String::from_utf8(metrics.render()).unwrap();
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in {text}"))
                .rsplit_once(' ')
                .unwrap()
                .1
                .to_owned()
        };
        let series = "{method=\"GET\",outcome=\"hit\",route=\"/b\",status_class=\"2xx\"}";
        assert_eq!(
            line(&format!("zoho_gateway_requests_total{series}")),
            total.to_string()
        );
        let hist = "{outcome=\"hit\",route=\"/b\"";
        assert_eq!(
            line(&format!(
                "zoho_gateway_request_duration_seconds_count{hist}}}"
            )),
            total.to_string()
        );
        // 50 of each thread's 1000 durations are <= 50 µs, 100 <= 100 µs, 500 <= 500 µs.
        for (le, n) in [
            ("0.00005", 50),
            ("0.0001", 100),
            ("0.0005", 500),
            ("0.001", 1000),
        ] {
            assert_eq!(
                line(&format!(
                    "zoho_gateway_request_duration_seconds_bucket{hist},le=\"{le}\"}}"
                )),
                (threads * n).to_string(),
                "le={le}"
            );
        }
        // Σ i µs for i in 1..=1000, per thread: exact in nanoseconds.
        let sum_s: f64 = line(&format!(
            "zoho_gateway_request_duration_seconds_sum{hist}}}"
        ))
        .parse()
        .unwrap();
        assert_eq!(sum_s, (threads * EACH * (EACH + 1) / 2 * 1000) as f64 / 1e9);
        // Thread t saved t + 1 credits per hit.
        assert_eq!(
            line("zoho_gateway_credits_saved_total{reason=\"hit\",tenant=\"acme\"}"),
            (EACH * threads * (threads + 1) / 2).to_string()
        );
    }
}
