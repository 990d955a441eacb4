//! `SearchAggregator`: fans a hotel or flight search out to every seller of the vertical
//! at once, keeps what arrives before the search deadline, merges the offers (one per SKU,
//! cheapest seller wins) and caches the merged, unpersonalized result with a TTL chosen by
//! days until travel. The wallet markdown is applied by the caller after this actor
//! answers, so it is never cached.
//!
//! State owned: the result cache and the table of fan-outs in flight. The cache publishes a
//! read-only view of itself ([`SearchView`]) that `Runtime` reads on the caller's thread:
//! a fresh hit there is answered without a message to this actor; a miss or an expired
//! entry comes here, and only this actor fans out, coalesces and fills the cache. The view
//! is written by the cache alone, in the same call as the cache (see
//! `domain::search_cache`), and a fresh aggregator (after a restart) starts it empty.
//! Identical searches arriving while a fan-out is in flight wait for that fan-out (request
//! coalescing) instead of starting another. The fan-out runs as a future of the actor's context, so
//! the mailbox keeps moving. Sent to by `Runtime::search_*` (routed by a hash of the cache
//! key, so identical searches meet on one aggregator) and by bookings (`InvalidateSku`).
//!
//! Only complete results (every seller answered `ok`) are cached: a result missing a seller
//! that timed out or failed would hide that seller's prices for the whole TTL.
//!
//! Each seller's last good answer to a query is also kept (up to `stale_for`): when the
//! look-to-book meter throttles that seller, its part of the result is that answer,
//! marked stale with its age (`stale_age_ms`), rather than nothing. Such a result is not
//! complete, so it is never cached as fresh.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;
use tokio::sync::oneshot;

use super::seller::{SearchSeller, SellerAdapter, SellerCallError};
use super::PanicFaults;
use crate::domain::money::Currency;
use crate::domain::search::{days_until_travel, merge_offers, ttl_for, TtlRule};
use crate::domain::search_cache::{CacheView, SearchCache};
use crate::sellers::{Offer, SearchQuery, Vertical};
use crate::supervisor::{ActorHandle, AskError};
use crate::telemetry::Origin;

/// How often expired cache entries are purged, so memory follows the TTLs.
const PURGE_EVERY: Duration = Duration::from_secs(30);

/// What became of one seller's part of a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[derive(utoipa::ToSchema)]
pub enum SellerStatus {
    /// Answered in time.
    Ok,
    /// No answer before the search deadline.
    Timeout,
    /// Its circuit breaker is open; not called.
    CircuitOpen,
    /// Past its look-to-book ratio; not called.
    Throttled,
    /// Its bulkhead or mailbox was full; not called.
    Rejected,
    /// It failed or answered something invalid.
    Error,
}

/// One seller's line in a search reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SellerOutcome {
    /// Seller name.
    pub seller: String,
    /// What happened.
    pub status: SellerStatus,
    /// Offers it returned.
    pub offers: usize,
    /// Time until its answer (or until the deadline).
    pub elapsed_ms: u64,
    /// Set when the offers are the seller's last answer to this query, served because the
    /// seller is throttled (look-to-book): how old that answer is.
    #[schema(required = true)]
    pub stale_age_ms: Option<u64>,
}

/// A merged, unpersonalized search result.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    /// One offer per SKU, cheapest first.
    pub offers: Arc<Vec<Offer>>,
    /// One line per seller of the vertical.
    pub sellers: Arc<Vec<SellerOutcome>>,
    /// True when served from the cache.
    pub cached: bool,
    /// The result's JSON pieces, rendered by the first reply that sends it and shared by
    /// every later hit on the same cache entry.
    pub(crate) rendered: crate::runtime::RenderSlot,
}

/// A seller the aggregator fans out to.
#[derive(Debug, Clone)]
pub struct SellerRoute {
    /// Seller name.
    pub name: String,
    /// Verticals it serves.
    pub verticals: Vec<Vertical>,
    /// Its adapter.
    pub handle: ActorHandle<SellerAdapter>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct SearchStats {
    /// Searches answered from the cache.
    pub cache_hits: AtomicU64,
    /// Searches that needed a fan-out.
    pub cache_misses: AtomicU64,
    /// Searches that joined a fan-out already in flight.
    pub coalesced: AtomicU64,
    /// Fan-outs started.
    pub fan_outs: AtomicU64,
    /// Searches the aggregators handled: misses, joins, and hits the view did not answer
    /// (a hit answered by the view never reaches an aggregator).
    pub asked: AtomicU64,
}

/// What an aggregator's cache shows to readers on other threads.
pub type SearchView = CacheView<SearchResult>;

/// Settings of every aggregator.
#[derive(Debug, Clone)]
pub struct AggregatorSettings {
    /// How long a fan-out waits for sellers.
    pub deadline: Duration,
    /// Cache bound (0 disables caching).
    pub cache_capacity: usize,
    /// TTL by days until travel.
    pub ttl_table: Vec<TtlRule>,
    /// How long a seller's last answer is kept for serving stale while it is throttled
    /// (zero: never).
    pub stale_for: Duration,
    /// Marketplace currency; offers in others are dropped by the merge.
    pub currency: Currency,
}

/// The aggregator actor.
pub struct SearchAggregator {
    /// The sellers of each vertical, worked out once: a fan-out clones an `Arc`, not a list.
    hotel_sellers: Arc<[SellerRoute]>,
    flight_sellers: Arc<[SellerRoute]>,
    settings: AggregatorSettings,
    cache: SearchCache<SearchResult>,
    /// Each seller's last good answer per query (`seller`, newline, cache key), with when
    /// it came: served, marked stale, while that seller is throttled.
    last_answers: SearchCache<(Instant, Vec<Offer>)>,
    in_flight: HashMap<String, Vec<oneshot::Sender<SearchResult>>>,
    stats: Arc<SearchStats>,
    panics: PanicFaults,
}

impl std::fmt::Debug for SearchAggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchAggregator")
            .field("cached", &self.cache.len())
            .field("in_flight", &self.in_flight.len())
            .finish()
    }
}

impl SearchAggregator {
    /// A fresh aggregator with an empty cache, publishing into `view` (emptied now).
    pub fn new(
        sellers: Arc<Vec<SellerRoute>>,
        settings: AggregatorSettings,
        stats: Arc<SearchStats>,
        view: Arc<SearchView>,
    ) -> Self {
        let of = |vertical: Vertical| -> Arc<[SellerRoute]> {
            sellers
                .iter()
                .filter(|r| r.verticals.contains(&vertical))
                .cloned()
                .collect()
        };
        SearchAggregator {
            cache: SearchCache::with_view(settings.cache_capacity.max(1), view),
            last_answers: SearchCache::new(settings.cache_capacity),
            hotel_sellers: of(Vertical::Hotel),
            flight_sellers: of(Vertical::Flight),
            settings,
            in_flight: HashMap::new(),
            stats,
            panics: PanicFaults::default(),
        }
    }

    /// Makes handlers panic now and then (`[faults]`), to exercise restarts.
    pub(crate) fn with_panic_faults(mut self, panics: PanicFaults) -> Self {
        self.panics = panics;
        self
    }

    fn fan_out(
        &mut self,
        key: String,
        query: SearchQuery,
        origin: Origin,
        ctx: &mut Context<Self>,
    ) {
        self.stats.fan_outs.fetch_add(1, Ordering::Relaxed);
        let routes = match query.vertical() {
            Vertical::Hotel => self.hotel_sellers.clone(),
            Vertical::Flight => self.flight_sellers.clone(),
        };
        let deadline = self.settings.deadline;
        let asked = query.clone();
        let calls = futures_util::future::join_all((0..routes.len()).map(move |i| {
            let query = asked.clone();
            let origin = origin.clone();
            let routes = routes.clone();
            async move {
                let route = &routes[i];
                let started = Instant::now();
                let msg = SearchSeller {
                    query,
                    budget: deadline,
                    origin,
                };
                let result = route.handle.ask_within(msg, deadline).await;
                (route.name.clone(), result, started.elapsed())
            }
        }));
        ctx.spawn(
            calls
                .into_actor(self)
                .map(move |results, act, _| act.finish(key, &query, results)),
        );
    }

    fn finish(&mut self, key: String, query: &SearchQuery, results: Vec<SellerReply>) {
        let mut all = Vec::new();
        let mut sellers = Vec::with_capacity(results.len());
        let now = Instant::now();
        for (seller, result, elapsed) in results {
            let (status, offers) = match result {
                Ok(Ok(offers)) => (SellerStatus::Ok, offers),
                Ok(Err(e)) => (status_of(&e), Vec::new()),
                Err(AskError::Timeout { .. }) => (SellerStatus::Timeout, Vec::new()),
                Err(AskError::Overloaded { .. }) => (SellerStatus::Rejected, Vec::new()),
                Err(_) => (SellerStatus::Error, Vec::new()),
            };
            let answer_key = format!("{seller}\n{key}");
            let (offers, stale_age_ms) = match status {
                SellerStatus::Ok => {
                    let skus: Vec<String> = offers.iter().map(|o| o.sku.clone()).collect();
                    let stale_for = self.settings.stale_for;
                    let answer = (now, offers.clone());
                    self.last_answers
                        .insert(answer_key, answer, skus, stale_for, now);
                    (offers, None)
                }
                SellerStatus::Throttled => match self.last_answers.get(&answer_key, now) {
                    Some(last) => {
                        let age = now.saturating_duration_since(last.0).as_millis() as u64;
                        (last.1.clone(), Some(age))
                    }
                    None => (offers, None),
                },
                _ => (offers, None),
            };
            sellers.push(SellerOutcome {
                seller,
                status,
                offers: offers.len(),
                elapsed_ms: elapsed.as_millis() as u64,
                stale_age_ms,
            });
            all.extend(offers);
        }
        let complete = sellers.iter().all(|s| s.status == SellerStatus::Ok);
        let offers = merge_offers(all, self.settings.currency);
        let result = SearchResult {
            offers: Arc::new(offers),
            sellers: Arc::new(sellers),
            cached: false,
            rendered: Default::default(),
        };
        if complete && self.settings.cache_capacity > 0 {
            let today = chrono::Utc::now().date_naive();
            let ttl = ttl_for(days_until_travel(query, today), &self.settings.ttl_table);
            let skus: Vec<String> = result.offers.iter().map(|o| o.sku.clone()).collect();
            // Stored as every later reader gets it: a hit.
            let hit = SearchResult {
                cached: true,
                ..result.clone()
            };
            self.cache
                .insert(key.clone(), hit, skus, ttl, Instant::now());
        }
        for waiter in self.in_flight.remove(&key).unwrap_or_default() {
            let _ = waiter.send(result.clone());
        }
    }
}

fn status_of(e: &SellerCallError) -> SellerStatus {
    match e {
        SellerCallError::CircuitOpen => SellerStatus::CircuitOpen,
        SellerCallError::Throttled => SellerStatus::Throttled,
        SellerCallError::BulkheadFull => SellerStatus::Rejected,
        SellerCallError::Failed(crate::sellers::SellerError::Timeout) => SellerStatus::Timeout,
        SellerCallError::Failed(_) => SellerStatus::Error,
    }
}

impl Actor for SearchAggregator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(PURGE_EVERY, |act, _| {
            act.cache.purge_expired(Instant::now());
            act.last_answers.purge_expired(Instant::now());
        });
    }
}

/// One seller's answer to a fan-out: name, reply, time taken.
type SellerReply = (
    String,
    Result<Result<Vec<Offer>, SellerCallError>, AskError>,
    Duration,
);

/// Why a search produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// The aggregator stopped before the fan-out finished.
    #[error("the search was abandoned by its aggregator")]
    Abandoned,
}

/// Searches every seller of the query's vertical (or answers from the cache).
#[derive(Debug, Message)]
#[rtype(result = "Result<SearchResult, SearchError>")]
pub struct Search {
    /// A validated query.
    pub query: SearchQuery,
    /// Its cache key ([`cache_key`](crate::domain::search::cache_key)), worked out once by the sender, which routes the
    /// query to its aggregator by it.
    pub key: String,
    /// The sender's span.
    pub origin: Origin,
}

/// Drops every cached result holding a SKU (after a booking of it).
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct InvalidateSku {
    /// The SKU.
    pub sku: String,
}

/// Cache hit, joins a fan-out in flight, or starts one.
impl Handler<Search> for SearchAggregator {
    type Result = ResponseFuture<Result<SearchResult, SearchError>>;

    fn handle(&mut self, msg: Search, ctx: &mut Context<Self>) -> Self::Result {
        self.panics.maybe_panic(&"search aggregator");
        self.stats.asked.fetch_add(1, Ordering::Relaxed);
        let key = msg.key;
        // Traced, the search is a span with how the cache answered; the fan-out's seller
        // calls are its children.
        let scope = msg.origin.scope(match msg.origin.span() {
            Some(parent) => tracing::info_span!(
                parent: parent,
                "search.aggregate",
                cache = tracing::field::Empty,
                actor.mailbox_wait_us = msg.origin.waited_us(),
            ),
            None => tracing::Span::none(),
        });
        let span = scope.span();
        if let Some(hit) = self.cache.get(&key, Instant::now()) {
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            span.record("cache", "hit");
            let result = hit.clone();
            return Box::pin(async move { Ok(result) });
        }
        let (tx, rx) = oneshot::channel();
        match self.in_flight.entry(key.clone()) {
            Entry::Occupied(mut waiting) => {
                self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
                span.record("cache", "coalesced");
                waiting.get_mut().push(tx);
            }
            Entry::Vacant(slot) => {
                self.stats.cache_misses.fetch_add(1, Ordering::Relaxed);
                span.record("cache", "miss");
                slot.insert(vec![tx]);
                let origin = scope.in_scope(Origin::current);
                self.fan_out(key, msg.query, origin, ctx);
            }
        }
        Box::pin(async move { rx.await.map_err(|_| SearchError::Abandoned) })
    }
}

/// Returns how many cached results were dropped; they are out of the view too by then.
impl Handler<InvalidateSku> for SearchAggregator {
    type Result = usize;

    fn handle(&mut self, msg: InvalidateSku, _: &mut Context<Self>) -> usize {
        self.last_answers.invalidate_sku(&msg.sku);
        self.cache.invalidate_sku(&msg.sku)
    }
}
