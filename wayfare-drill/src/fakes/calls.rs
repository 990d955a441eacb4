//! What the fakes received: every call's method, path and W3C `traceparent`, so a test can
//! check that wayfare propagated its trace to each partner call. Kept in memory (a
//! restarted fake starts an empty list), bounded to the last [`MAX_CALLS`], and served in
//! `GET /_fake/ledger` under `calls`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use serde::{Deserialize, Serialize};

/// Calls kept; older ones are forgotten first.
pub const MAX_CALLS: usize = 10_000;

/// One call a fake received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FakeCall {
    /// HTTP method.
    pub method: String,
    /// Path (no query).
    pub path: String,
    /// The `traceparent` header as sent, if any.
    pub traceparent: Option<String>,
}

/// The calls of one fake, shared by its workers.
#[derive(Debug, Clone, Default)]
pub struct CallLog(Arc<Mutex<VecDeque<FakeCall>>>);

impl CallLog {
    /// Every call kept, oldest first.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn record(&self, call: FakeCall) {
        let mut calls = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if calls.len() == MAX_CALLS {
            calls.pop_front();
        }
        calls.push_back(call);
    }
}

/// Middleware (`from_fn`) recording each call but the fake's own `/_fake/*` endpoints,
/// in the app's `web::Data<CallLog>`.
pub async fn log_calls(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if !req.path().starts_with("/_fake/") {
        if let Some(log) = req.app_data::<web::Data<CallLog>>() {
            log.record(FakeCall {
                method: req.method().to_string(),
                path: req.path().to_owned(),
                traceparent: req
                    .headers()
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            });
        }
    }
    next.call(req).await
}
