//! Searches: validated here against the domain's rules, fanned out by the aggregator
//! that owns the query's cache bucket, marked down by the caller's wallet.

use actix_web::web::Bytes;

use super::{search_json, Runtime, SearchResponse};
use crate::actors::bucket;
use crate::actors::search::{InvalidateSku, Search, SearchResult};
use crate::domain::account::AccountId;
use crate::domain::money::Money;
use crate::domain::search::{cache_key, check_search};
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
    ) -> Result<(SearchResult, Option<Money>), Error> {
        check_search(&query, chrono::Utc::now().date_naive())?;
        let key = cache_key(&query);
        let aggregator = &self.inner.aggregators[bucket(&key, self.inner.aggregators.len())];
        // The wallet lookup runs alongside the fan-out, not before it.
        let wallet = async {
            match account {
                Some(id) => self.account(id).await.map(|a| Some(a.wallet.available)),
                None => Ok(None),
            }
        };
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
        Ok((result, wallet))
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
