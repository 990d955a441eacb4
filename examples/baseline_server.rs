//! The baseline for the account-read target (docs/architecture.md): a bare actix-web server whose
//! `GET /v1/accounts/{id}` reads the same sled tree wayfare writes (`accounts`, keyed by
//! the 16 id bytes), decodes the record with wayfare's codec and answers the same JSON
//! (`AccountRecord::view()`). Like wayfare it first checks the caller: the bearer key's
//! SHA-256 digest must equal the account's (`api_keys` tree), else 401 (no or malformed
//! credential) or 403. No actors, no supervision, no metrics, no request ids, no operator.
//!
//! Point it at a copy of a wayfare data dir: sled allows one process per directory.
//!
//! Run with: cargo run --release --example baseline_server -- --bind 127.0.0.1:8081 --data-dir ./data-copy

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::Context as _;
use clap::Parser;
use wayfare::domain::access::KeyDigest;
use wayfare::domain::account::AccountRecord;
use wayfare::store::{decode_record, SledStore, Store, Tree};

#[derive(Parser, Debug)]
#[command(about = "Bare actix-web + sled account reader, the baseline wayfare is measured against")]
struct Args {
    /// Listen address; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8081")]
    bind: String,
    /// A sled data dir written by wayfare (a copy, while wayfare runs on the original).
    #[arg(long)]
    data_dir: PathBuf,
    /// HTTP worker threads; 0 = one per core (wayfare's default too).
    #[arg(long, default_value_t = 0)]
    workers: usize,
}

async fn get_account(
    req: HttpRequest,
    store: web::Data<Arc<SledStore>>,
    id: web::Path<String>,
) -> HttpResponse {
    let Ok(id) = uuid::Uuid::parse_str(&id) else {
        return HttpResponse::BadRequest().body("bad account id");
    };
    let key = id.as_bytes();
    let Some(presented) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
            .body("send Authorization: Bearer <API key>");
    };
    let presented = KeyDigest::of(presented.trim());
    match store.get(Tree::ApiKeys, key) {
        Ok(Some(bytes)) => match decode_record::<KeyDigest>(Tree::ApiKeys, key, &bytes) {
            Ok(owner) if owner.matches(&presented) => {}
            Ok(_) => return HttpResponse::Forbidden().body("this API key may not read it"),
            Err(e) => return HttpResponse::InternalServerError().body(e.to_string()),
        },
        Ok(None) => return HttpResponse::Forbidden().body("this account has no API key"),
        Err(e) => return HttpResponse::ServiceUnavailable().body(e.to_string()),
    }
    match store.get(Tree::Accounts, key) {
        Ok(Some(bytes)) => match decode_record::<AccountRecord>(Tree::Accounts, key, &bytes) {
            Ok(record) => HttpResponse::Ok().json(record.view()),
            Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
        },
        Ok(None) => HttpResponse::NotFound().body("no such account"),
        Err(e) => HttpResponse::ServiceUnavailable().body(e.to_string()),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let store = Arc::new(
        SledStore::open(&args.data_dir)
            .with_context(|| format!("cannot open store in {}", args.data_dir.display()))?,
    );
    let workers = match args.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let listener =
        TcpListener::bind(&args.bind).with_context(|| format!("cannot listen on {}", args.bind))?;
    println!("baseline listening on http://{}", listener.local_addr()?);
    actix_rt::System::new().block_on(async move {
        let data = web::Data::new(store);
        HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/v1/accounts/{id}", web::get().to(get_account))
        })
        .workers(workers)
        .listen(listener)?
        .run()
        .await
    })?;
    Ok(())
}
