//! A fake seller server: the wire format of [`wayfare::sellers::wire`] served by actix-web
//! from any [`SellerApi`], so [`wayfare::sellers::http::HttpSeller`] can be run end to end
//! in tests, demos and chaos drills. In-process tests call [`build`] with a
//! [`SimulatedSeller`] on a `127.0.0.1:0` listener; `examples/fake_seller.rs` serves a
//! durable [`JournaledSeller`] with [`serve_journaled`], which adds an optional
//! `Authorization: Bearer` check and `GET /_fake/ledger` (the seller's whole book). Either
//! serves `https://` when given a TLS configuration ([`build_tls`], [`super::tls`]).
//!
//! Latency and faults come from the seller behind, so a hang there is a request that
//! never gets a reply here, exactly what a stuck real seller looks like to wayfare.

use std::future::Future;
use std::io;
use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::http::StatusCode;
use std::sync::Arc;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use rustls::ServerConfig;

use super::calls::{log_calls, CallLog};
use super::journaled::JournaledSeller;
use wayfare::sellers::simulated::SimulatedSeller;
use wayfare::sellers::wire::{
    SearchReply, WireBookReply, WireCancelReply, WireError, WireOffer, WireStatusReply,
};
use wayfare::sellers::{
    BookRequest, FlightQuery, HotelQuery, Offer, QueryError, SellerApi, SellerError,
};

/// Largest request body the fake seller accepts (requests are small queries).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The seller behind the routes, and the key callers must present (none: anyone).
#[derive(Clone)]
struct Backend {
    seller: Arc<dyn SellerApi>,
    api_key: Option<String>,
}

impl Backend {
    /// The seller, or `None` when a key is required and the request does not carry it.
    fn admit(&self, req: &HttpRequest) -> Option<&dyn SellerApi> {
        if let Some(expected) = &self.api_key {
            let given = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if given != Some(expected.as_str()) {
                return None;
            }
        }
        Some(self.seller.as_ref())
    }
}

/// The 401 of a caller without the key.
fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized().json(WireError {
        error: "bad or missing API key".into(),
        field: None,
    })
}

/// Registers the wire-format routes. Expects the backend in app data (see [`build`]).
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(MAX_REQUEST_BYTES)
            .error_handler(|err, _| {
                let body = WireError {
                    error: err.to_string(),
                    field: None,
                };
                actix_web::error::InternalError::from_response(
                    err,
                    HttpResponse::BadRequest().json(body),
                )
                .into()
            }),
    )
    .route("/search/hotels", web::post().to(search_hotels))
    .route("/search/flights", web::post().to(search_flights))
    .route("/bookings", web::post().to(book))
    .route("/bookings/{key}/cancel", web::post().to(cancel))
    .route("/bookings/{key}", web::get().to(status));
}

/// Builds the server on `listener` (one worker, no signal handling: the caller decides when
/// to stop, through the returned server's handle). The server must be awaited or spawned.
pub fn build(listener: TcpListener, seller: SimulatedSeller) -> io::Result<Server> {
    build_backend(
        listener,
        Backend {
            seller: Arc::new(seller),
            api_key: None,
        },
        None,
        None,
    )
}

/// [`build`] serving `https://` with `tls` (see [`super::tls::server_config`]).
pub fn build_tls(
    listener: TcpListener,
    seller: SimulatedSeller,
    tls: ServerConfig,
) -> io::Result<Server> {
    build_backend(
        listener,
        Backend {
            seller: Arc::new(seller),
            api_key: None,
        },
        None,
        Some(tls),
    )
}

/// Builds the server of a durable seller: the wire format, `GET /_fake/ledger`, and, when
/// `api_key` is set, a 401 for every wire-format call without `Authorization: Bearer` it;
/// over `https://` when `tls` is given.
pub fn build_journaled(
    listener: TcpListener,
    seller: JournaledSeller,
    api_key: Option<String>,
    tls: Option<ServerConfig>,
) -> io::Result<Server> {
    build_backend(
        listener,
        Backend {
            seller: Arc::new(seller.clone()),
            api_key,
        },
        Some(seller),
        tls,
    )
}

fn build_backend(
    listener: TcpListener,
    backend: Backend,
    ledger_of: Option<JournaledSeller>,
    tls: Option<ServerConfig>,
) -> io::Result<Server> {
    let data = web::Data::new(backend);
    let calls = web::Data::new(CallLog::default());
    let server = HttpServer::new(move || {
        let app = App::new()
            .app_data(data.clone())
            .app_data(calls.clone())
            .wrap(actix_web::middleware::from_fn(log_calls));
        let app = match &ledger_of {
            Some(seller) => app
                .app_data(web::Data::new(seller.clone()))
                .route("/_fake/ledger", web::get().to(ledger)),
            None => app,
        };
        app.configure(routes)
    })
    .workers(1)
    .disable_signals()
    // Hung requests are the point of a fake seller; do not wait for them on stop.
    .shutdown_timeout(1);
    let server = match tls {
        Some(config) => server.listen_rustls_0_23(listener, config)?,
        None => server.listen(listener)?,
    };
    Ok(server.run())
}

/// Serves a durable seller until `shutdown` completes, then stops the server.
pub async fn serve_journaled(
    listener: TcpListener,
    seller: JournaledSeller,
    api_key: Option<String>,
    tls: Option<ServerConfig>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let server = build_journaled(listener, seller, api_key, tls)?;
    let handle = server.handle();
    let stop = async move {
        shutdown.await;
        handle.stop(false).await;
    };
    let (result, ()) = futures_util::future::join(server, stop).await;
    result
}

fn bad_request(e: QueryError) -> HttpResponse {
    HttpResponse::BadRequest().json(WireError {
        error: e.problem,
        field: Some(e.field.to_string()),
    })
}

fn seller_failure(e: SellerError) -> HttpResponse {
    let status = match e {
        SellerError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    HttpResponse::build(status).json(WireError {
        error: e.to_string(),
        field: None,
    })
}

fn offers_reply(offers: &[Offer]) -> HttpResponse {
    HttpResponse::Ok().json(SearchReply {
        offers: offers.iter().map(WireOffer::from).collect(),
    })
}

/// `GET /_fake/ledger`: every reservation, cancellation and decline, each with its key,
/// and the calls received with their `traceparent`.
async fn ledger(seller: web::Data<JournaledSeller>, calls: web::Data<CallLog>) -> HttpResponse {
    #[derive(serde::Serialize)]
    struct Reply {
        #[serde(flatten)]
        ledger: super::journaled::SellerLedger,
        calls: Vec<super::calls::FakeCall>,
    }
    HttpResponse::Ok().json(Reply {
        ledger: seller.ledger(),
        calls: calls.calls(),
    })
}

/// The seller, or the 401 that refuses the caller.
macro_rules! admitted {
    ($backend:expr, $req:expr) => {
        match $backend.admit(&$req) {
            Some(seller) => seller,
            None => return unauthorized(),
        }
    };
}

async fn search_hotels(
    backend: web::Data<Backend>,
    req: HttpRequest,
    query: web::Json<HotelQuery>,
) -> HttpResponse {
    let seller = admitted!(backend, req);
    let query = query.into_inner();
    if let Err(e) = query.validate() {
        return bad_request(e);
    }
    match seller.search_hotels(query).await {
        Ok(offers) => offers_reply(&offers),
        Err(e) => seller_failure(e),
    }
}

async fn search_flights(
    backend: web::Data<Backend>,
    req: HttpRequest,
    query: web::Json<FlightQuery>,
) -> HttpResponse {
    let seller = admitted!(backend, req);
    let query = query.into_inner();
    if let Err(e) = query.validate() {
        return bad_request(e);
    }
    match seller.search_flights(query).await {
        Ok(offers) => offers_reply(&offers),
        Err(e) => seller_failure(e),
    }
}

async fn book(
    backend: web::Data<Backend>,
    http: HttpRequest,
    req: web::Json<BookRequest>,
) -> HttpResponse {
    let seller = admitted!(backend, http);
    let req = req.into_inner();
    if req.idempotency_key.trim().is_empty() {
        return bad_request(QueryError {
            field: "idempotency_key",
            problem: "must not be empty".into(),
        });
    }
    match seller.book(req).await {
        Ok(outcome) => HttpResponse::Ok().json(WireBookReply::from(&outcome)),
        Err(e) => seller_failure(e),
    }
}

async fn cancel(
    backend: web::Data<Backend>,
    req: HttpRequest,
    key: web::Path<String>,
) -> HttpResponse {
    let seller = admitted!(backend, req);
    match seller.cancel(key.into_inner()).await {
        Ok(outcome) => HttpResponse::Ok().json(WireCancelReply::from(&outcome)),
        Err(e) => seller_failure(e),
    }
}

async fn status(
    backend: web::Data<Backend>,
    req: HttpRequest,
    key: web::Path<String>,
) -> HttpResponse {
    let seller = admitted!(backend, req);
    match seller.booking_status(key.into_inner()).await {
        Ok(status) => HttpResponse::Ok().json(WireStatusReply::from(status.as_ref())),
        Err(e) => seller_failure(e),
    }
}
