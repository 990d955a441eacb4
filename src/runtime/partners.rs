//! The outside world as configured: seller implementations from `[[sellers]]` (plus the
//! embedder's own), the card gateway from `[payments]`, and the fault-injecting wrappers
//! `[faults]` puts around them and the store.

use std::sync::Arc;
use std::time::Duration;

use super::CustomSeller;
use crate::config::{Config, FaultsConfig, PaymentsKind, SellerKind};
use crate::error::Error;
use crate::faults::FaultCounters;
use crate::payments::faulty::FaultyGateway;
use crate::payments::http::HttpGateway;
use crate::payments::simulated::SimulatedGateway;
use crate::payments::PaymentGateway;
use crate::sellers::faulty::{FaultySeller, SellerFaultRates};
use crate::sellers::http::HttpSeller;
use crate::sellers::simulated::SimulatedSeller;
use crate::sellers::SellerApi;
use crate::store::{FaultyStore, Store};

/// Every seller as code: config entries first, then the embedder's own.
pub(super) fn seller_apis(
    config: &Config,
    faults: &Arc<FaultCounters>,
    custom: Vec<CustomSeller>,
) -> Result<Vec<CustomSeller>, Error> {
    let mut parts = Vec::new();
    for entry in &config.sellers {
        let api: Arc<dyn SellerApi> = match entry.kind {
            SellerKind::Simulated => {
                let mut c = entry.simulated.clone();
                c.name = entry.name.clone();
                let seller = SimulatedSeller::new(c).map_err(|e| {
                    Error::Config(format!(
                        "sellers.{}.simulated.{}: {}",
                        entry.name, e.key, e.problem
                    ))
                })?;
                with_seller_faults(Arc::new(seller), config, faults)
            }
            SellerKind::Http => {
                let mut c = entry.http.clone();
                c.name = entry.name.clone();
                Arc::new(HttpSeller::new(c).map_err(|e| {
                    Error::Config(format!(
                        "sellers.{}.http.{}: {}",
                        entry.name, e.key, e.problem
                    ))
                })?)
            }
        };
        parts.push(CustomSeller {
            api,
            verticals: entry.verticals.clone(),
            adapter: entry.adapter.clone(),
        });
    }
    // Sellers given in code are the test doubles of embedders and drills: they get the
    // seller faults too (HTTP sellers do not; their fake server has its own knobs).
    parts.extend(custom.into_iter().map(|mut part| {
        part.api = with_seller_faults(part.api, config, faults);
        part
    }));
    Ok(parts)
}

/// The gateway `[payments]` names.
pub(super) fn configured_gateway(config: &Config) -> Result<Arc<dyn PaymentGateway>, Error> {
    Ok(match config.payments.kind {
        PaymentsKind::Simulated => {
            Arc::new(SimulatedGateway::new(config.payments.simulated.clone()))
        }
        PaymentsKind::Http => Arc::new(
            HttpGateway::new(config.payments.http.clone())
                .map_err(|e| Error::Config(format!("payments.http.{}: {}", e.key, e.problem)))?,
        ),
    })
}

/// The store, wrapped in a [`FaultyStore`] when `[faults]` asks for store faults.
pub(super) fn with_store_faults(
    store: Arc<dyn Store>,
    faults: &FaultsConfig,
    counters: &Arc<FaultCounters>,
) -> Arc<dyn Store> {
    if !faults.enabled
        || (faults.store_write_failure_rate == 0.0 && faults.store_write_delay_ms == 0)
    {
        return store;
    }
    Arc::new(FaultyStore::new(
        store,
        faults.store_write_failure_rate,
        Duration::from_millis(faults.store_write_delay_ms),
        counters.clone(),
    ))
}

/// A seller, wrapped in a [`FaultySeller`] when `[faults]` asks for seller faults.
fn with_seller_faults(
    seller: Arc<dyn SellerApi>,
    config: &Config,
    counters: &Arc<FaultCounters>,
) -> Arc<dyn SellerApi> {
    let rates = SellerFaultRates {
        failure_rate: config.faults.seller_failure_rate,
        hang_rate: config.faults.seller_hang_rate,
        garbage_rate: config.faults.seller_garbage_rate,
    };
    if !config.faults.enabled || !rates.any() {
        return seller;
    }
    Arc::new(FaultySeller::new(
        seller,
        rates,
        config.accounts.currency,
        counters.clone(),
    ))
}

/// The gateway, wrapped in a [`FaultyGateway`] when `[faults]` asks for payment faults.
pub(super) fn with_payment_faults(
    gateway: Arc<dyn PaymentGateway>,
    faults: &FaultsConfig,
    counters: &Arc<FaultCounters>,
) -> Arc<dyn PaymentGateway> {
    if !faults.enabled || (faults.payment_failure_rate == 0.0 && faults.payment_hang_rate == 0.0) {
        return gateway;
    }
    Arc::new(FaultyGateway::new(
        gateway,
        faults.payment_failure_rate,
        faults.payment_hang_rate,
        counters.clone(),
    ))
}
