//! Per-thread sharded recording for the metrics every request touches.
//!
//! A request records its count, its duration, the credits it saved and the cache tally. Kept in
//! one atomic each, those cache lines move between cores on every request when two workers serve
//! at once. Here each thread picks a shard once (round robin, [`shard_count`] shards) and a record
//! is a `Relaxed` add into its own cache-line-padded shard; readers sum the shards. A sum read
//! while requests are recorded is a moment's value, like any counter scrape: each shard's part is
//! exact, the parts may be a few records apart in time.
//!
//! The prometheus crate has no sharded metric (its `local` metrics are per-thread buffers that
//! the owning thread must flush, so a scrape would miss what a worker has not flushed yet), and
//! the sharded-counter crates (`contatori`, `fast-telemetry`) have neither histograms nor a
//! [`Collector`]. So the shards are plain atomics here, and the collectors below turn them into
//! the exposition the prometheus `IntCounterVec`/`HistogramVec` gave before (names, help, types,
//! label pairs sorted by name, cumulative buckets, `_sum`, `_count`, only series that occurred).

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};

use super::{DURATION_BUCKETS, MethodLabel, STATUS_CLASSES};
use crate::cache::Outcome;

/// Upper bound on [`shard_count`].
const MAX_SHARDS: usize = 64;

/// The number of shards of every sharded metric: twice the available parallelism, rounded up
/// to a power of two, at most 64 (at least 2). The slack over one shard per core keeps the
/// runtime's workers on distinct shards when other threads (the blocking pool, a test's own
/// threads) have taken indices too.
pub fn shard_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (2 * cores).next_power_of_two().clamp(2, MAX_SHARDS)
    })
}

/// The calling thread's shard, `< shard_count()`: assigned round robin on the thread's first
/// record, then a thread-local read.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SHARD.with(|s| {
        let i = s.get();
        if i != usize::MAX {
            return i;
        }
        let i = NEXT.fetch_add(1, Ordering::Relaxed) & (shard_count() - 1);
        s.set(i);
        i
    })
}

/// One padded `T` per shard.
fn shards<T: Default>() -> Box<[CachePadded<T>]> {
    (0..shard_count()).map(|_| CachePadded::default()).collect()
}

/// A counter sharded per thread: [`ShardedCounter::inc`] adds to the calling thread's shard,
/// [`ShardedCounter::get`] sums the shards. Memory: one cache line pair (128 bytes on x86-64)
/// per shard.
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
        self.shards[shard()].fetch_add(n, Ordering::Relaxed);
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
/// thread. A `(route, outcome)`'s shards are allocated on its first request (series that never
/// occur cost one empty `OnceLock` each): `512 × shard_count()` bytes per `(route, outcome)`
/// seen, so at most `routes × 8 outcomes × 512 × shard_count()` (19 routes on 2 cores: 304 KiB;
/// 64 shards, on 32 cores or more: 4.75 MiB). A request counter series is exported
/// once its count is non-zero, a histogram once its `(route, outcome)` has a request: what the
/// `IntCounterVec` and `HistogramVec` resolved on first use exported before.
#[derive(Clone)]
pub(super) struct RequestMetrics(Arc<RequestTable>);

/// A `(route, outcome)`'s cells, one per shard.
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

    /// Records one request of route index `route` (`< route_labels.len()`): three `Relaxed`
    /// adds into the calling thread's shard.
    pub(super) fn record(
        &self,
        method: MethodLabel,
        route: usize,
        outcome: Outcome,
        class: usize,
        took: Duration,
    ) {
        let row = self.0.rows[route * Outcome::ALL.len() + outcome.index()].get_or_init(shards);
        let cell = &row[shard()];
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        // Prometheus' rule: the first bucket whose upper bound is >= the value.
        let bucket = DURATION_BUCKETS_NS.partition_point(|&bound| bound < ns);
        cell.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        cell.sum_ns.fetch_add(ns, Ordering::Relaxed);
        cell.requests[method as usize * CLASSES + class].fetch_add(1, Ordering::Relaxed);
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

/// The reasons of `zoho_gateway_credits_saved_total`, in shard order.
const SAVED_REASONS: [Outcome; 5] = [
    Outcome::Hit,
    Outcome::Collapsed,
    Outcome::Stale,
    Outcome::Held,
    Outcome::Rejected,
];

/// One tenant's `zoho_gateway_credits_saved_total`, sharded per thread (the `reason`s of
/// [`SAVED_REASONS`]; 40 bytes, 128 padded, per shard).
pub(super) struct SavedCredits {
    shards: Box<[CachePadded<[AtomicU64; SAVED_REASONS.len()]>]>,
}

impl SavedCredits {
    /// Adds `credits` saved by a request with this `outcome`; outcomes that spent credits
    /// (miss, bypass, error) add nothing.
    pub(super) fn add(&self, outcome: Outcome, credits: u64) {
        if let Some(i) = SAVED_REASONS.iter().position(|&o| o == outcome) {
            self.shards[shard()][i].fetch_add(credits, Ordering::Relaxed);
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

/// `zoho_gateway_credits_saved_total`: per tenant name, the shards handed out by
/// [`CreditsSaved::tenant`]. Every reason of every tenant that was ever resolved is exported
/// (from 0), and a tenant's counters outlive its removal from the configuration, as the
/// `IntCounterVec` did. Memory: `128 × shard_count()` bytes per tenant name.
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
    fn records_from_many_threads_sum_at_read() {
        const THREADS: u64 = 8;
        const EACH: u64 = 1000;
        let metrics = Arc::new(Metrics::register(1, labels(), false).unwrap());
        let counter = Arc::new(ShardedCounter::default());
        let saved = metrics.tenant("acme");
        let barrier = Arc::new(std::sync::Barrier::new(THREADS as usize));
        let shards: Vec<usize> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (metrics, counter, saved, barrier) = (&metrics, &counter, &saved, &barrier);
                    s.spawn(move || {
                        barrier.wait();
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
                        shard()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        // The threads spread over more than one shard (round robin), so the sums below add
        // shards, not one shared cell.
        let distinct: std::collections::BTreeSet<_> = shards.iter().collect();
        assert!(distinct.len() >= 2, "{shards:?}");

        let total = THREADS * EACH;
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
                (THREADS * n).to_string(),
                "le={le}"
            );
        }
        // Σ i µs for i in 1..=1000, per thread: exact in nanoseconds.
        let sum_s: f64 = line(&format!(
            "zoho_gateway_request_duration_seconds_sum{hist}}}"
        ))
        .parse()
        .unwrap();
        assert_eq!(sum_s, (THREADS * EACH * (EACH + 1) / 2 * 1000) as f64 / 1e9);
        // Thread t saved t + 1 credits per hit.
        assert_eq!(
            line("zoho_gateway_credits_saved_total{reason=\"hit\",tenant=\"acme\"}"),
            (EACH * THREADS * (THREADS + 1) / 2).to_string()
        );
    }
}
