//! A collector that keeps nothing: it accepts OTLP/HTTP trace exports
//! (`POST /v1/traces`, protobuf) and answers each with an empty
//! `ExportTraceServiceResponse`, counting requests and bytes. For benchmarks that measure
//! what exporting spans costs wayfare without a real collector taking the CPU they share
//! (`scripts/bench-tracing.sh`); its own cost stays small because it decodes nothing.
//!
//! `GET /stats` answers `{"exports": N, "bytes": B}`.
//!
//! Run with: `cargo run --release --example otlp_sink -- --bind 127.0.0.1:4318`, then
//! point wayfare at it: `WAYFARE__TELEMETRY__OTLP_ENDPOINT=http://127.0.0.1:4318`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};
use clap::Parser;

/// Command line of the sink.
#[derive(Debug, Parser)]
#[command(about = "An OTLP/HTTP trace sink that counts what it receives")]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed at start).
    #[arg(long, default_value = "127.0.0.1:4318")]
    bind: String,
}

#[derive(Debug, Default)]
struct Counts {
    exports: AtomicU64,
    bytes: AtomicU64,
}

async fn traces(counts: web::Data<Arc<Counts>>, body: web::Bytes) -> HttpResponse {
    counts.exports.fetch_add(1, Ordering::Relaxed);
    counts.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    // An empty protobuf message is the default ExportTraceServiceResponse: all accepted.
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .finish()
}

async fn stats(counts: web::Data<Arc<Counts>>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "exports": counts.exports.load(Ordering::Relaxed),
        "bytes": counts.bytes.load(Ordering::Relaxed),
    }))
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let counts = web::Data::new(Arc::new(Counts::default()));
    let listener = std::net::TcpListener::bind(&args.bind)?;
    println!("otlp-sink listening on http://{}", listener.local_addr()?);
    HttpServer::new(move || {
        App::new()
            .app_data(counts.clone())
            // Batches of thousands of spans run to megabytes.
            .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
            .route("/v1/traces", web::post().to(traces))
            .route("/stats", web::get().to(stats))
    })
    .workers(1)
    .listen(listener)?
    .run()
    .await?;
    Ok(())
}
