//! A fake seller server: the wire format of [`wayfare::sellers::wire`] served by actix-web
//! from a [`SimulatedSeller`], so [`wayfare::sellers::http::HttpSeller`] can be run end to
//! end in tests, demos and chaos drills. `examples/fake_seller.rs` is a thin command line around
//! [`serve`]; tests call [`build`] on a `127.0.0.1:0` listener.
//!
//! Latency and faults come from the simulated seller, so a hang there is a request that
//! never gets a reply here, exactly what a stuck real seller looks like to wayfare.

use std::future::Future;
use std::io;
use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpResponse, HttpServer};

use wayfare::sellers::simulated::SimulatedSeller;
use wayfare::sellers::wire::{
    SearchReply, WireBookReply, WireCancelReply, WireError, WireOffer, WireStatusReply,
};
use wayfare::sellers::{
    BookRequest, FlightQuery, HotelQuery, Offer, QueryError, SellerApi, SellerError,
};

/// Largest request body the fake seller accepts (requests are small queries).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Registers the wire-format routes. Expects `web::Data<SimulatedSeller>` in app data.
pub fn routes(cfg: &mut web::ServiceConfig) {
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
    let data = web::Data::new(seller);
    let server = HttpServer::new(move || App::new().app_data(data.clone()).configure(routes))
        .workers(1)
        .disable_signals()
        // Hung requests are the point of a fake seller; do not wait for them on stop.
        .shutdown_timeout(1)
        .listen(listener)?
        .run();
    Ok(server)
}

/// Serves until `shutdown` completes, then stops the server.
pub async fn serve(
    listener: TcpListener,
    seller: SimulatedSeller,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let server = build(listener, seller)?;
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

async fn search_hotels(
    seller: web::Data<SimulatedSeller>,
    query: web::Json<HotelQuery>,
) -> HttpResponse {
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
    seller: web::Data<SimulatedSeller>,
    query: web::Json<FlightQuery>,
) -> HttpResponse {
    let query = query.into_inner();
    if let Err(e) = query.validate() {
        return bad_request(e);
    }
    match seller.search_flights(query).await {
        Ok(offers) => offers_reply(&offers),
        Err(e) => seller_failure(e),
    }
}

async fn book(seller: web::Data<SimulatedSeller>, req: web::Json<BookRequest>) -> HttpResponse {
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

async fn cancel(seller: web::Data<SimulatedSeller>, key: web::Path<String>) -> HttpResponse {
    match seller.cancel(key.into_inner()).await {
        Ok(outcome) => HttpResponse::Ok().json(WireCancelReply::from(&outcome)),
        Err(e) => seller_failure(e),
    }
}

async fn status(seller: web::Data<SimulatedSeller>, key: web::Path<String>) -> HttpResponse {
    match seller.booking_status(key.into_inner()).await {
        Ok(status) => HttpResponse::Ok().json(WireStatusReply::from(status.as_ref())),
        Err(e) => seller_failure(e),
    }
}
