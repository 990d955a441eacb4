//! The bare twins wayfare's hot paths are measured against, in one actix-web
//! server with no actors, no supervision, no metrics, no request ids, no operator:
//!
//! - `GET /v1/accounts/{id}`, the baseline for the account-read target (docs/architecture.md),
//!   in one of two shapes (`--account-reads`):
//!   - `one` (the default, the *minimum-work twin*): the least an authorized read must do.
//!     At start-up the twin copies every account of the wayfare data dir, with its key
//!     digest stored inside it, into a sled tree of its own (`twin-one-read/` in the data
//!     dir); each request then reads that one record, computes SHA-256 of the bearer key,
//!     compares it with the stored digest and answers the JSON (`AccountRecord::view()`).
//!   - `two`: reads wayfare's own trees as they are, the key's digest (`api_keys`) and then
//!     the account (`accounts`), both keyed by the 16 id bytes. Kept because it is what a
//!     bare server over wayfare's store layout must do, and earlier figures in
//!     BENCHMARKS.md were measured against it.
//!
//!   Either way a missing or malformed credential is a 401 and another key a 403. Needs
//!   `--data-dir`: a copy of a wayfare data dir (sled allows one process per directory).
//! - `GET /v1/search/hotels`, the twin of a cached hotel search: same query parameters
//!   (`city` or `hotel`, `check_in`, `check_out`; `account_id` is refused with 400, since
//!   the twin is anonymous like the searches it is compared with), parsed and normalized
//!   with wayfare's own `HotelQuery::parse` and `cache_key`, then answered from an in-memory
//!   map filled at start-up. Each request serializes the typed answer, as wayfare does.
//!   `GET /v1/search/hotels/prebuilt` answers the stored bytes instead (no serialization:
//!   the floor of "JSON from a map").
//!
//! How the search bodies stay byte-comparable: with `--search-from URL --search-queries FILE`
//! the twin asks the running wayfare at URL each query of FILE (one query string a line,
//! e.g. `city=Lisbon&check_in=2027-03-10&check_out=2027-03-12`) until wayfare answers it
//! from its cache (`"cached":true`), keeps those exact bytes, decodes them into local types
//! that mirror wayfare's `SearchResponse`, and refuses to start unless re-serializing them
//! gives the same bytes. Both routes therefore send exactly what wayfare sends for that
//! cached search (the `elapsed_ms` of each seller is the fan-out's, frozen in the cache).
//!
//! Run with: cargo run --release --example baseline_server -- --bind 127.0.0.1:8081 --data-dir ./data-copy [--account-reads two]
//!      or: cargo run --release --example baseline_server -- --search-from http://127.0.0.1:8080 --search-queries queries.txt

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::{bail, Context as _};
use clap::Parser;
use serde::{Deserialize, Serialize};
use wayfare::domain::access::KeyDigest;
use wayfare::domain::account::AccountRecord;
use wayfare::domain::search::cache_key;
use wayfare::sellers::{HotelQuery, OfferDetails, SearchQuery};
use wayfare::store::{decode_record, SledStore, Store, Tree};
use wayfare::Money;

#[derive(Parser, Debug)]
#[command(about = "Bare actix-web twins of wayfare's account read and cached hotel search")]
struct Args {
    /// Listen address; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8081")]
    bind: String,
    /// A sled data dir written by wayfare (a copy, while wayfare runs on the original);
    /// without it `GET /v1/accounts/{id}` is not served.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A running wayfare to take the cached hotel search answers from (with --search-queries).
    #[arg(long, requires = "search_queries")]
    search_from: Option<String>,
    /// File of hotel search query strings, one a line, to fetch from --search-from.
    #[arg(long, requires = "search_from")]
    search_queries: Option<PathBuf>,
    /// How an account read works: `one` record holding the account and its key digest
    /// (the minimum-work twin), or `two` reads of wayfare's own trees.
    #[arg(long, value_enum, default_value_t = AccountReads::One)]
    account_reads: AccountReads,
    /// HTTP worker threads; 0 = one per core (wayfare's default too).
    #[arg(long, default_value_t = 0)]
    workers: usize,
}

/// Which shape of account read the twin serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AccountReads {
    /// One record: the account with its key digest inside.
    One,
    /// Two reads of wayfare's trees: the key digest, then the account.
    Two,
}

/// The record of the one-read twin: an account and its key digest, read together.
type TwinAccount = (AccountRecord, Option<KeyDigest>);

/// The bearer key's digest, or the 401 to send.
fn presented_digest(req: &HttpRequest) -> Result<KeyDigest, HttpResponse> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|key| KeyDigest::of(key.trim()))
        .ok_or_else(|| {
            HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
                .body("send Authorization: Bearer <API key>")
        })
}

/// The minimum-work read: one sled record, one SHA-256, one comparison, the JSON.
async fn get_account_one_read(
    req: HttpRequest,
    tree: web::Data<sled::Tree>,
    id: web::Path<String>,
) -> HttpResponse {
    let Ok(id) = uuid::Uuid::parse_str(&id) else {
        return HttpResponse::BadRequest().body("bad account id");
    };
    let presented = match presented_digest(&req) {
        Ok(digest) => digest,
        Err(refusal) => return refusal,
    };
    match tree.get(id.as_bytes()) {
        Ok(Some(bytes)) => match wayfare::store::codec::decode::<TwinAccount>(&bytes) {
            Ok((record, Some(key))) if key.matches(&presented) => {
                HttpResponse::Ok().json(record.view())
            }
            Ok(_) => HttpResponse::Forbidden().body("this API key may not read it"),
            Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
        },
        Ok(None) => HttpResponse::NotFound().body("no such account"),
        Err(e) => HttpResponse::ServiceUnavailable().body(e.to_string()),
    }
}

/// Copies every account of wayfare's store, with its key digest, into the one-read tree.
fn build_one_read_tree(store: &SledStore, dir: &std::path::Path) -> anyhow::Result<sled::Tree> {
    let path = dir.join("twin-one-read");
    let _ = std::fs::remove_dir_all(&path);
    let db = sled::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let tree = db.open_tree("accounts")?;
    let mut after: Option<Vec<u8>> = None;
    let mut copied = 0usize;
    loop {
        let page = store.scan(Tree::Accounts, b"", after.as_deref(), 1000)?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (key, bytes) in &page {
            let record = decode_record::<AccountRecord>(Tree::Accounts, key, bytes)?;
            let digest = match store.get(Tree::ApiKeys, key)? {
                Some(d) => Some(decode_record::<KeyDigest>(Tree::ApiKeys, key, &d)?),
                None => None,
            };
            tree.insert(key.as_slice(), wayfare::store::codec::encode(&(record, digest)))?;
            copied += 1;
        }
    }
    db.flush()?;
    println!("baseline copied {copied} accounts into {} (one read each)", path.display());
    Ok(tree)
}

/// Two reads of wayfare's own trees: the key's digest, then the account.
async fn get_account_two_reads(
    req: HttpRequest,
    store: web::Data<Arc<SledStore>>,
    id: web::Path<String>,
) -> HttpResponse {
    let Ok(id) = uuid::Uuid::parse_str(&id) else {
        return HttpResponse::BadRequest().body("bad account id");
    };
    let key = id.as_bytes();
    let presented = match presented_digest(&req) {
        Ok(digest) => digest,
        Err(refusal) => return refusal,
    };
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

/// Query parameters of wayfare's hotel search route (`src/http/search.rs`), without
/// `account_id`: the twin answers anonymous searches only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HotelParams {
    city: Option<String>,
    hotel: Option<String>,
    check_in: String,
    check_out: String,
}

/// Wayfare's normalized key of a hotel search (`domain::search::cache_key`), or why the
/// query is refused.
fn hotel_key(p: &HotelParams) -> Result<String, String> {
    let place = match (&p.city, &p.hotel) {
        (Some(city), None) => city,
        (None, Some(hotel)) => hotel,
        _ => return Err("city: give exactly one of city or hotel".into()),
    };
    let q = HotelQuery::parse(place, &p.check_in, &p.check_out)
        .map_err(|e| format!("{}: {}", e.field, e.problem))?;
    Ok(cache_key(&SearchQuery::Hotel(q)))
}

/// Mirrors wayfare's `SearchResponse` field for field (same order, same serde shapes), so
/// a body decoded into it serializes back to the same bytes (checked at start-up).
#[derive(Debug, Serialize, Deserialize)]
struct TwinSearchResponse {
    offers: Vec<TwinOffer>,
    sellers: Vec<TwinSeller>,
    cached: bool,
    wallet_available: Option<Money>,
}

/// Wayfare's `OfferView`.
#[derive(Debug, Serialize, Deserialize)]
struct TwinOffer {
    seller: String,
    sku: String,
    title: String,
    price: Money,
    markdown: Money,
    price_to_pay: Money,
    details: OfferDetails,
}

/// Wayfare's `SellerOutcome` (the status enum kept as its snake_case text).
#[derive(Debug, Serialize, Deserialize)]
struct TwinSeller {
    seller: String,
    status: String,
    offers: usize,
    elapsed_ms: u64,
    stale_age_ms: Option<u64>,
}

/// One cached search: the typed answer (serialized per request) and wayfare's exact bytes.
#[derive(Debug)]
struct CachedSearch {
    typed: TwinSearchResponse,
    bytes: Bytes,
}

type SearchMap = HashMap<String, CachedSearch>;

/// Looks the query up; `Err` is the response to send instead (boxed: a refusal is the
/// rare path).
fn lookup(
    map: &SearchMap,
    params: Result<web::Query<HotelParams>, actix_web::Error>,
) -> Result<&CachedSearch, Box<HttpResponse>> {
    let params = params.map_err(|e| Box::new(HttpResponse::BadRequest().body(e.to_string())))?;
    let key = hotel_key(&params).map_err(|e| Box::new(HttpResponse::BadRequest().body(e)))?;
    map.get(&key).ok_or_else(|| {
        Box::new(
            HttpResponse::NotFound()
                .body(format!("{key} is not among the searches loaded at start")),
        )
    })
}

/// Serializes the stored answer, as wayfare serializes each reply (`json_line`: the JSON
/// and a newline).
async fn search_hotels(
    map: web::Data<SearchMap>,
    params: Result<web::Query<HotelParams>, actix_web::Error>,
) -> HttpResponse {
    match lookup(&map, params) {
        Ok(hit) => match serde_json::to_vec(&hit.typed) {
            Ok(mut body) => {
                body.push(b'\n');
                HttpResponse::Ok()
                    .insert_header((header::CONTENT_TYPE, "application/json"))
                    .body(body)
            }
            Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
        },
        Err(refusal) => *refusal,
    }
}

/// Answers wayfare's stored bytes as they are.
async fn search_hotels_prebuilt(
    map: web::Data<SearchMap>,
    params: Result<web::Query<HotelParams>, actix_web::Error>,
) -> HttpResponse {
    match lookup(&map, params) {
        Ok(hit) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .body(hit.bytes.clone()),
        Err(refusal) => *refusal,
    }
}

/// Fetches each query from wayfare until it answers from its cache, and keeps the bytes.
async fn load_searches(base: &str, queries: &[String]) -> anyhow::Result<SearchMap> {
    let client = reqwest::Client::new();
    let base = base.trim_end_matches('/');
    let mut map = SearchMap::new();
    for query in queries {
        let params: HotelParams = serde_urlencoded::from_str(query)
            .with_context(|| format!("query {query:?} is not a hotel search"))?;
        let key = hotel_key(&params).map_err(|e| anyhow::anyhow!("query {query:?}: {e}"))?;
        let url = format!("{base}/v1/search/hotels?{query}");
        let mut tries = 0;
        let (bytes, typed) = loop {
            tries += 1;
            let res = client
                .get(&url)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            if !res.status().is_success() {
                bail!("GET {url} answered {}", res.status());
            }
            let bytes = res.bytes().await?;
            let typed: TwinSearchResponse = serde_json::from_slice(&bytes)
                .with_context(|| format!("GET {url}: not a search response"))?;
            if typed.cached {
                break (bytes, typed);
            }
            if tries >= 50 {
                bail!("GET {url}: still not answered from wayfare's cache after {tries} tries");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut again = serde_json::to_vec(&typed)?;
        again.push(b'\n');
        if again != bytes {
            bail!(
                "GET {url}: the twin's types do not reproduce wayfare's body byte for byte \
                 ({} bytes from wayfare, {} re-serialized); update TwinSearchResponse",
                bytes.len(),
                again.len()
            );
        }
        map.insert(key, CachedSearch { typed, bytes });
    }
    Ok(map)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let store = match &args.data_dir {
        Some(dir) => {
            Some(Arc::new(SledStore::open(dir).with_context(|| {
                format!("cannot open store in {}", dir.display())
            })?))
        }
        None => None,
    };
    let queries: Vec<String> = match &args.search_queries {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect(),
        None => Vec::new(),
    };
    if store.is_none() && queries.is_empty() {
        bail!("nothing to serve: give --data-dir, or --search-from with --search-queries");
    }
    let workers = match args.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let one_read = match (&store, &args.data_dir, args.account_reads) {
        (Some(store), Some(dir), AccountReads::One) => Some(build_one_read_tree(store, dir)?),
        _ => None,
    };
    let listener =
        TcpListener::bind(&args.bind).with_context(|| format!("cannot listen on {}", args.bind))?;
    actix_rt::System::new().block_on(async move {
        let searches = match &args.search_from {
            Some(base) => load_searches(base, &queries).await?,
            None => SearchMap::new(),
        };
        if !searches.is_empty() {
            let sizes: Vec<usize> = searches.values().map(|c| c.bytes.len()).collect();
            println!(
                "baseline loaded {} hotel searches from {} ({}..{} bytes each)",
                sizes.len(),
                args.search_from.as_deref().unwrap_or_default(),
                sizes.iter().min().unwrap_or(&0),
                sizes.iter().max().unwrap_or(&0)
            );
        }
        println!("baseline listening on http://{}", listener.local_addr()?);
        let store = store.map(web::Data::new);
        let one_read = one_read.map(web::Data::new);
        let searches = web::Data::new(searches);
        HttpServer::new(move || {
            let app = App::new()
                .app_data(searches.clone())
                .route("/v1/search/hotels", web::get().to(search_hotels))
                .route(
                    "/v1/search/hotels/prebuilt",
                    web::get().to(search_hotels_prebuilt),
                );
            match (&one_read, &store) {
                (Some(tree), _) => app
                    .app_data(tree.clone())
                    .route("/v1/accounts/{id}", web::get().to(get_account_one_read)),
                (None, Some(store)) => app
                    .app_data(store.clone())
                    .route("/v1/accounts/{id}", web::get().to(get_account_two_reads)),
                (None, None) => app,
            }
        })
        .workers(workers)
        .listen(listener)?
        .run()
        .await?;
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(())
}
