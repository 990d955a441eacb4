//! Searches: validated here against the domain's rules, fanned out by the aggregator
//! that owns the query's cache bucket, marked down by the caller's wallet.
//!
//! A fresh cached result is read from that aggregator's cache view on the calling thread,
//! with no message to the aggregator; a miss (or an entry past its expiry) asks the
//! aggregator, which alone fans out, coalesces identical searches and fills the cache.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use actix_web::web::Bytes;

use super::{search_json, Runtime, SearchResponse};
use crate::actors::bucket;
use crate::actors::search::{InvalidateSku, Search, SearchResult};
use crate::domain::account::AccountId;
use crate::domain::money::Money;
use crate::domain::search::{cache_key, check_search};
use crate::domain::search_cache::Cached;
use crate::error::Error;
use crate::sellers::{FlightQuery, HotelQuery, SearchQuery};

impl Runtime {
    /// Hotel offers for a stay, merged over every hotel seller, marked down by the
    /// account's wallet when `account` is given (unknown account: `NotFound`).
    pub async fn search_hotels(
        &self,
        query: HotelQuery,
        account: Option<AccountId>,
    ) -> Result<SearchResponse, Error> {
        self.search(SearchQuery::Hotel(query), account).await
    }

    /// Flight offers (a round trip when `return_date` is set), like [`search_hotels`](Self::search_hotels).
    pub async fn search_flights(
        &self,
        query: FlightQuery,
        account: Option<AccountId>,
    ) -> Result<SearchResponse, Error> {
        self.search(SearchQuery::Flight(query), account).await
    }

    /// The reply of [`search_hotels`](Self::search_hotels) as the JSON the HTTP API sends
    /// (the same bytes `serde_json` makes of it, and a newline), written from pieces
    /// rendered once per cached result rather than serialized offer by offer.
    pub async fn search_hotels_json(
        &self,
        query: HotelQuery,
        account: Option<AccountId>,
    ) -> Result<Bytes, Error> {
        let (result, wallet) = self
            .search_result(SearchQuery::Hotel(query), account)
            .await?;
        Ok(search_json::body(&result, wallet, self.zero()))
    }

    /// The reply of [`search_flights`](Self::search_flights) as JSON, like
    /// [`search_hotels_json`](Self::search_hotels_json).
    pub async fn search_flights_json(
        &self,
        query: FlightQuery,
        account: Option<AccountId>,
    ) -> Result<Bytes, Error> {
        let (result, wallet) = self
            .search_result(SearchQuery::Flight(query), account)
            .await?;
        Ok(search_json::body(&result, wallet, self.zero()))
    }

    async fn search(
        &self,
        query: SearchQuery,
        account: Option<AccountId>,
    ) -> Result<SearchResponse, Error> {
        let (result, wallet) = self.search_result(query, account).await?;
        Ok(search_json::typed(&result, wallet, self.zero()))
    }

    fn zero(&self) -> Money {
        Money::zero(self.inner.config.accounts.currency)
    }

    /// The merged result (cached or fanned out) and the wallet's usable amount when an
    /// account is named.
    async fn search_result(
        &self,
        query: SearchQuery,
        account: Option<AccountId>,
    ) -> Result<(Found, Option<Money>), Error> {
        check_search(&query, chrono::Utc::now().date_naive())?;
        let key = cache_key(&query);
        let index = bucket(&key, self.inner.aggregators.len());
        // The wallet lookup runs alongside the fan-out, not before it.
        let wallet = async {
            match account {
                Some(id) => self.account(id).await.map(|a| Some(a.wallet.available)),
                None => Ok(None),
            }
        };
        if let Some(hit) = self.inner.search_views[index].get(&key, Instant::now()) {
            // Counted here: the aggregator never hears of this search.
            self.inner
                .search_stats
                .cache_hits
                .fetch_add(1, Ordering::Relaxed);
            return Ok((Found::Viewed(hit), wallet.await?));
        }
        let aggregator = &self.inner.aggregators[index];
        let (result, wallet) = tokio::join!(
            aggregator.ask(Search {
                query,
                key,
                origin: crate::telemetry::Origin::current(),
            }),
            wallet
        );
        let wallet = wallet?;
        let result = result?.map_err(|e| Error::Unavailable {
            what: e.to_string(),
        })?;
        Ok((Found::Asked(result), wallet))
    }

    /// Results the aggregators' caches hold now (expired ones until they are purged), as
    /// their views show them.
    pub fn search_cached_results(&self) -> usize {
        self.inner.search_views.iter().map(|v| v.len()).sum()
    }

    /// Drops cached search results that hold `sku` (a booking of it changes availability
    /// and price). Returns how many were dropped.
    pub async fn invalidate_sku(&self, sku: &str) -> Result<usize, Error> {
        let mut dropped = 0;
        for aggregator in &self.inner.aggregators {
            dropped += aggregator
                .ask(InvalidateSku {
                    sku: sku.to_owned(),
                })
                .await?;
        }
        Ok(dropped)
    }
}

/// A merged result: shared straight from a cache view, or the aggregator's reply.
enum Found {
    Viewed(Arc<Cached<SearchResult>>),
    Asked(SearchResult),
}

impl std::ops::Deref for Found {
    type Target = SearchResult;

    fn deref(&self) -> &SearchResult {
        match self {
            Found::Viewed(hit) => hit.value(),
            Found::Asked(result) => result,
        }
    }
}
