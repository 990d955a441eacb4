//! Searches: validated here against the domain's rules, fanned out by the aggregator
//! that owns the query's cache bucket, marked down by the caller's wallet.

use super::views::personalize;
use super::{Runtime, SearchResponse};
use crate::actors::bucket;
use crate::actors::search::{InvalidateSku, Search};
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

    async fn search(
        &self,
        query: SearchQuery,
        account: Option<AccountId>,
    ) -> Result<SearchResponse, Error> {
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
        let (result, wallet) = tokio::join!(aggregator.ask(Search { query }), wallet);
        let wallet = wallet?;
        let result = result?.map_err(|e| Error::Unavailable {
            what: e.to_string(),
        })?;
        let usable = wallet.unwrap_or(Money::zero(self.inner.config.accounts.currency));
        Ok(SearchResponse {
            offers: result
                .offers
                .iter()
                .map(|o| personalize(o, usable))
                .collect(),
            sellers: result.sellers.to_vec(),
            cached: result.cached,
            wallet_available: wallet,
        })
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
