//! The OpenAPI document served at `/v1/openapi.json` against the routes as they are:
//! it parses, it is OpenAPI 3.x, every documented operation is routed, and every route
//! in the server's route table is documented (the document is derived from the handlers'
//! `#[utoipa::path]` attributes through the same router, so this holds by construction;
//! the test keeps it so).

mod common;

use std::collections::BTreeSet;

use common::TestServer;
use serde_json::Value;

/// A syntactically valid id that names nothing.
const PLACEHOLDER_ID: &str = "00000000-0000-4000-8000-000000000000";

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn fetch_document(server: &TestServer) -> Value {
    let res = server
        .http
        .get(server.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(ct.as_deref(), Some("application/json"));
    let text = res.text().await.unwrap();
    serde_json::from_str(&text).expect("the document is JSON")
}

/// `(METHOD, path)` for every operation in the document.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths is an object");
    let mut ops = BTreeSet::new();
    for (path, item) in paths {
        let item = item.as_object().expect("a path item is an object");
        for method in item.keys().filter(|k| METHODS.contains(&k.as_str())) {
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

/// `(METHOD, path)` for every route the server registers, from its own route table.
fn routed() -> BTreeSet<(String, String)> {
    wayfare::http::route_table().into_iter().collect()
}

#[actix_rt::test]
async fn document_is_openapi_3_json() {
    let server = TestServer::start().await;
    let doc = fetch_document(&server).await;
    let version = doc["openapi"].as_str().expect("openapi version string");
    assert!(version.starts_with("3."), "openapi {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    assert!(!documented(&doc).is_empty());

    // Every local `$ref` resolves.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let pointer = r.strip_prefix('#').expect("only local refs");
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
    }

    // Both credentials are described, and every operation says which it takes.
    for scheme in ["apiKey", "operatorToken"] {
        let s = &doc["components"]["securitySchemes"][scheme];
        assert_eq!(s["type"], "http", "{scheme}");
        assert_eq!(s["scheme"], "bearer", "{scheme}");
    }
    for (method, path) in documented(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        assert!(
            op["security"].is_array(),
            "{method} {path} names no security"
        );
        assert!(
            op["operationId"].is_string(),
            "{method} {path} has no operationId"
        );
        // Every error answer is a problem.
        let responses = op["responses"].as_object().unwrap();
        assert!(responses.contains_key("405"), "{method} {path} lacks 405");
        for (status, response) in responses {
            // An unhealthy /health answers with its checks, not a problem.
            if status.starts_with('2') || (path == "/health" && status == "503") {
                continue;
            }
            let r = response["$ref"].as_str().unwrap_or_default();
            let name = r
                .strip_prefix("#/components/responses/")
                .unwrap_or_else(|| {
                    panic!("{method} {path} {status} is not a shared problem response")
                });
            let content = &doc["components"]["responses"][name]["content"];
            assert_eq!(
                content["application/problem+json"]["schema"]["$ref"],
                "#/components/schemas/Problem",
                "{name}"
            );
        }
    }
    // Request bodies are described by the types the handlers parse.
    let create = &doc["paths"]["/v1/accounts"]["post"]["requestBody"];
    assert_eq!(
        create["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/CreateAccount"
    );
    let money = &doc["components"]["schemas"]["Money"]["properties"];
    assert!(money["minor"].is_object() && money["currency"].is_object());

    // The problem schema names the fields every problem carries.
    let problem = &doc["components"]["schemas"]["Problem"]["properties"];
    for field in ["type", "title", "status", "detail", "field"] {
        assert!(problem.get(field).is_some(), "Problem lacks {field}");
    }
    server.stop().await;
}

#[actix_rt::test]
async fn every_documented_operation_is_routed() {
    let server = TestServer::start().await;
    let doc = fetch_document(&server).await;
    for (method, path) in documented(&doc) {
        let url = server.url(&path.replace("{id}", PLACEHOLDER_ID));
        let method_value = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let res = server
            .http
            .request(method_value, &url)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body = res.text().await.unwrap();
        let no_route = status == 404
            && serde_json::from_str::<Value>(&body).is_ok_and(|b| b["detail"] == "no such route");
        assert!(
            !no_route,
            "{method} {path} is documented but not routed: {status} {body}"
        );
        assert_ne!(status, 405, "{method} {path}: {body}");
    }
    server.stop().await;
}

#[actix_rt::test]
async fn every_route_is_documented() {
    let server = TestServer::start().await;
    let doc = fetch_document(&server).await;
    let documented = documented(&doc);
    let routed = routed();
    assert!(
        routed.len() >= 15,
        "the route table has too few routes: {routed:?}"
    );
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from src/http/openapi.json: {undocumented:?}"
    );
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        unrouted.is_empty(),
        "documented operations the router does not route: {unrouted:?}"
    );
    server.stop().await;
}
