//! A tampering proxy in front of a partner fake: it forwards every request to the fake and,
//! for the requests its rules pick, answers as a malicious partner would: a redirect to
//! another host (its own `/_trap/`, which counts what reaches it and answers an empty
//! success), an amount rewritten in the reply, or the reply swallowed after the fake acted
//! (a 502: the outcome is unknown to the caller). The fake behind keeps the true books.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::Value;

/// What the proxy does to a request its rule picks.
#[derive(Debug, Clone)]
pub enum Act {
    /// Answer `307` to `/_trap/...` without forwarding.
    Redirect,
    /// Forward, then multiply `field.minor` of the JSON reply by `times`.
    Scale {
        /// Top-level field holding a money object (`price`, `amount`).
        field: &'static str,
        /// Factor.
        times: i64,
    },
    /// Forward, then set `field.minor` of the JSON reply to `minor`.
    SetMinor {
        /// Top-level field holding a money object.
        field: &'static str,
        /// The amount to claim.
        minor: i64,
    },
    /// Forward (the fake acts), then answer 502 instead of its reply.
    Swallow,
    /// Answer `status` with `body` (JSON) without forwarding.
    Respond {
        /// HTTP status.
        status: u16,
        /// The reply body.
        body: String,
    },
}

/// A rule: requests with `method` whose path satisfies `path` get `act`.
#[derive(Clone)]
pub struct Rule {
    /// HTTP method, upper case.
    pub method: &'static str,
    /// Path predicate (the path as the fake sees it, from `/`).
    pub path: fn(&str) -> bool,
    /// What to do.
    pub act: Act,
}

#[derive(Default)]
struct Shared {
    upstream: String,
    me: String,
    rules: Mutex<Vec<Rule>>,
    trapped: AtomicU64,
    tampered: AtomicU64,
    client: reqwest::Client,
}

/// A running proxy; it stops with the test's actix system.
pub struct Tamper {
    shared: Arc<Shared>,
}

impl Tamper {
    /// Starts a proxy on `127.0.0.1:0` in front of `upstream` (`http://IP:PORT/`).
    pub fn start(upstream: &str) -> Tamper {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let me = format!("http://{}/", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            upstream: upstream.to_owned(),
            me,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            ..Shared::default()
        });
        let data = web::Data::from(shared.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(1 << 20))
                .default_service(web::to(forward))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .unwrap()
        .run();
        actix_rt::spawn(server);
        Tamper { shared }
    }

    /// `http://IP:PORT/`: the base URL to give wayfare instead of the fake's.
    pub fn url(&self) -> String {
        self.shared.me.clone()
    }

    /// Replaces the rules (empty: a faithful proxy).
    pub fn set(&self, rules: Vec<Rule>) {
        *self.shared.rules.lock().unwrap() = rules;
    }

    /// Requests that reached `/_trap/`: what a client following redirects sent on.
    pub fn trapped(&self) -> u64 {
        self.shared.trapped.load(Ordering::SeqCst)
    }

    /// Replies rewritten, redirected or swallowed so far.
    pub fn tampered(&self) -> u64 {
        self.shared.tampered.load(Ordering::SeqCst)
    }
}

async fn forward(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let path = req.path().to_owned();
    if path.starts_with("/_trap/") {
        shared.trapped.fetch_add(1, Ordering::SeqCst);
        return HttpResponse::Ok().json(serde_json::json!({"offers": []}));
    }
    let rule = shared
        .rules
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.method == req.method().as_str() && (r.path)(&path))
        .cloned();
    if let Some(Rule {
        act: Act::Respond { status, body },
        ..
    }) = &rule
    {
        shared.tampered.fetch_add(1, Ordering::SeqCst);
        let status = actix_web::http::StatusCode::from_u16(*status).unwrap();
        return HttpResponse::build(status)
            .content_type("application/json")
            .body(body.clone());
    }
    if let Some(Rule {
        act: Act::Redirect, ..
    }) = rule
    {
        shared.tampered.fetch_add(1, Ordering::SeqCst);
        let location = format!("{}_trap{path}", shared.me);
        return HttpResponse::TemporaryRedirect()
            .insert_header(("Location", location))
            .finish();
    }
    let mut url = format!("{}{}", shared.upstream, path.trim_start_matches('/'));
    if let Some(q) = req.uri().query() {
        url.push('?');
        url.push_str(q);
    }
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
    let mut out = shared.client.request(method, &url).body(body.to_vec());
    for name in ["authorization", "idempotency-key", "content-type", "accept"] {
        if let Some(v) = req.headers().get(name) {
            out = out.header(name, v.as_bytes());
        }
    }
    let Ok(reply) = out.send().await else {
        return HttpResponse::BadGateway().finish();
    };
    let status = actix_web::http::StatusCode::from_u16(reply.status().as_u16()).unwrap();
    let bytes = reply.bytes().await.unwrap_or_default();
    let rewritten = match rule.map(|r| r.act) {
        Some(Act::Swallow) => {
            shared.tampered.fetch_add(1, Ordering::SeqCst);
            return HttpResponse::BadGateway().finish();
        }
        Some(Act::Scale { field, times }) => rewrite(&bytes, field, |m| m * times),
        Some(Act::SetMinor { field, minor }) => rewrite(&bytes, field, |_| minor),
        _ => None,
    };
    let body = match rewritten {
        Some(changed) => {
            shared.tampered.fetch_add(1, Ordering::SeqCst);
            changed
        }
        None => bytes.to_vec(),
    };
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body)
}

/// The JSON `body` with `field.minor` replaced by `f(minor)`; `None` when it has no such
/// field (the reply passes unchanged).
fn rewrite(body: &[u8], field: &str, f: impl Fn(i64) -> i64) -> Option<Vec<u8>> {
    let mut value: Value = serde_json::from_slice(body).ok()?;
    let minor = value.get_mut(field)?.get_mut("minor")?;
    let changed = f(minor.as_i64()?);
    *minor = Value::from(changed);
    serde_json::to_vec(&value).ok()
}
