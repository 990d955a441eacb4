//! Saga counts kept by the writers of saga records, so health, metrics and the console
//! read them in O(1) instead of scanning every record per request.
//!
//! The tally is built once from the store when the coordinator first starts (before any
//! saga actor runs), then every write of a saga record reports the state it replaced and
//! the record it wrote ([`SagaTally::replace`]). Writers report only writes the store took;
//! a store that fails a write stops taking writes at all (fail-stop), so a step retried
//! after a failed write cannot be counted twice.

use std::collections::BTreeMap;

use super::record::{SagaRecord, SagaState};

/// Counts of saga records by state, and the parked ones with their reasons.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SagaTally {
    by_state: BTreeMap<&'static str, u64>,
    /// Parked sagas: id and reason, in id order.
    parked: BTreeMap<String, String>,
    /// Times a saga became parked (a watcher notices new ones by it).
    parks: u64,
}

impl SagaTally {
    /// The tally of `records` (the store's saga tree at start-up).
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a SagaRecord>) -> Self {
        let mut tally = SagaTally::default();
        for r in records {
            tally.replace(None, r);
        }
        tally
    }

    /// A record was written: `before` is the state of the record it replaced (`None` for a
    /// new record).
    pub fn replace(&mut self, before: Option<SagaState>, after: &SagaRecord) {
        if let Some(before) = before {
            if let Some(n) = self.by_state.get_mut(before.as_str()) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.by_state.remove(before.as_str());
                }
            }
        }
        *self.by_state.entry(after.state.as_str()).or_default() += 1;
        let id = after.saga_id.to_string();
        match &after.needs_attention {
            Some(reason) => {
                if self.parked.insert(id, reason.clone()).is_none() {
                    self.parks += 1;
                }
            }
            None => {
                self.parked.remove(&id);
            }
        }
    }

    /// Records per state, by state name.
    pub fn by_state(&self) -> &BTreeMap<&'static str, u64> {
        &self.by_state
    }

    /// How many sagas are parked.
    pub fn parked_count(&self) -> usize {
        self.parked.len()
    }

    /// Times a saga became parked, counting the ones parked at start-up.
    pub fn parks(&self) -> u64 {
        self.parks
    }

    /// The first `limit` parked sagas (id order): id and reason.
    pub fn parked(&self, limit: usize) -> impl Iterator<Item = (&str, &str)> {
        self.parked
            .iter()
            .take(limit)
            .map(|(id, reason)| (id.as_str(), reason.as_str()))
    }
}

/// A saga parked as `needs_attention`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ParkedSaga {
    /// Saga id.
    pub id: String,
    /// Why it is parked.
    pub reason: String,
}

/// Saga figures for health and metrics.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct SagaCounts {
    /// Sagas per customer-visible state.
    pub by_state: std::collections::BTreeMap<String, u64>,
    /// Parked sagas: id and reason (health lists the first 20).
    pub parked: Vec<ParkedSaga>,
    /// How many sagas are parked.
    pub needs_attention: usize,
    /// Times a saga became parked since start (parked at start-up included).
    pub parks: u64,
    /// Saga actors running now.
    pub running: usize,
    /// Saga actor crashes since start.
    pub crashes: u64,
}

impl SagaTally {
    /// Counts by state, with the first `parked_listed` parked sagas; `running` and
    /// `crashes` are left for the saga supervisor to fill in.
    pub fn counts(&self, parked_listed: usize) -> SagaCounts {
        SagaCounts {
            by_state: self
                .by_state()
                .iter()
                .map(|(state, n)| ((*state).to_owned(), *n))
                .collect(),
            parked: self
                .parked(parked_listed)
                .map(|(id, reason)| ParkedSaga {
                    id: id.to_owned(),
                    reason: reason.to_owned(),
                })
                .collect(),
            needs_attention: self.parked_count(),
            parks: self.parks(),
            running: 0,
            crashes: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::domain::saga::fixtures::booking;
    use crate::domain::saga::park_crashed;

    #[test]
    fn counts_follow_writes_and_parked_sagas_come_and_go() {
        let a = booking();
        let mut b = booking();
        let mut tally = SagaTally::from_records([&a, &b]);
        assert_eq!(tally.by_state().get("pending"), Some(&2));

        park_crashed(&mut b, "panicked: boom", Utc::now()).unwrap();
        tally.replace(Some(SagaState::Pending), &b);
        assert_eq!(tally.by_state().get("pending"), Some(&1));
        assert_eq!(tally.by_state().get("needs_attention"), Some(&1));
        assert_eq!(tally.parked_count(), 1);
        assert_eq!(tally.parks(), 1);
        let parked: Vec<_> = tally.parked(10).collect();
        assert_eq!(parked[0].0, b.saga_id.to_string());
        assert!(parked[0].1.contains("boom"), "{parked:?}");

        let mut resumed = b.clone();
        resumed.needs_attention = None;
        resumed.state = SagaState::Pending;
        tally.replace(Some(SagaState::NeedsAttention), &resumed);
        assert_eq!(tally.by_state().get("pending"), Some(&2));
        assert_eq!(tally.by_state().get("needs_attention"), None);
        assert_eq!(tally.parked_count(), 0);
        assert_eq!(tally.parks(), 1, "a park stays counted");
    }

    #[test]
    fn the_tally_of_a_store_equals_the_tally_of_its_writes() {
        let records: Vec<SagaRecord> = (0..5).map(|_| booking()).collect();
        let mut by_writes = SagaTally::default();
        for r in &records {
            by_writes.replace(None, r);
        }
        assert_eq!(by_writes, SagaTally::from_records(&records));
        assert_eq!(by_writes.parked(2).count(), 0);
    }
}
