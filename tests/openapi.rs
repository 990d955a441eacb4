//! The OpenAPI document served at `/v1/openapi.json` against the routes as they are:
//! it parses, it is OpenAPI 3.x, every documented operation is routed, and every route
//! in the server's route table is documented (the document is derived from the handlers'
//! `#[utoipa::path]` attributes through the same router, so this holds by construction;
//! the test keeps it so); it is OpenAPI 3.1 as far as its structure shows; and every
//! success reply of the real server fits the schema the document declares for it.

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
        "routes missing from /v1/openapi.json: {undocumented:?}"
    );
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        unrouted.is_empty(),
        "documented operations the router does not route: {unrouted:?}"
    );
    server.stop().await;
}

// --- The document against real replies ------------------------------------------------

/// A validator for the JSON Schema subset utoipa emits for OpenAPI 3.1: `type` (a name or
/// a list, so `["string", "null"]` is nullable), `properties`, `required`,
/// `additionalProperties`, `propertyNames`, `items`, `enum`, `const`, `minimum`/`maximum`,
/// `minLength`/`maxLength`, `$ref` (local), `oneOf`/`anyOf`/`allOf`, and the formats
/// `uuid`, `date`, `date-time`, `int32`, `int64`. A keyword outside that set is an error
/// (never silently ignored), and so is an object member that no schema declares: a reply
/// must not carry fields the document does not describe (as if `unevaluatedProperties:
/// false` held everywhere; a bare `type: object` is open).
mod schema {
    use std::collections::BTreeSet;

    use serde_json::Value;

    /// Keywords that only annotate.
    const ANNOTATIONS: &[&str] = &[
        "description",
        "title",
        "example",
        "examples",
        "default",
        "deprecated",
        "readOnly",
        "writeOnly",
        "discriminator",
        "contentMediaType",
    ];
    /// Keywords this validator checks.
    pub const CHECKED: &[&str] = &[
        "$ref",
        "type",
        "properties",
        "required",
        "additionalProperties",
        "propertyNames",
        "items",
        "enum",
        "const",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "format",
        "oneOf",
        "anyOf",
        "allOf",
    ];
    /// JSON Schema type names.
    pub const TYPES: &[&str] = &[
        "null", "boolean", "object", "array", "number", "integer", "string",
    ];

    /// JSON Schema keywords the document may use that replies are not checked against
    /// (they constrain request bodies only; a reply schema naming one fails validation).
    const REQUEST_ONLY: &[&str] = &["pattern"];

    /// Whether `keyword` may appear in a schema this validator is given.
    pub fn known(keyword: &str) -> bool {
        ANNOTATIONS.contains(&keyword) || CHECKED.contains(&keyword)
    }

    /// Whether `keyword` is one of JSON Schema 2020-12 that the document may use.
    pub fn in_dialect(keyword: &str) -> bool {
        known(keyword) || REQUEST_ONLY.contains(&keyword)
    }

    /// The object members a schema accounts for: `None` for all of them.
    type Seen = Option<BTreeSet<String>>;

    fn union(a: Seen, b: Seen) -> Seen {
        match (a, b) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                Some(a)
            }
            _ => None,
        }
    }

    /// Validates JSON values against schemas of one OpenAPI document.
    pub struct Validator<'d> {
        pub doc: &'d Value,
    }

    impl Validator<'_> {
        /// Every way `value` (at JSON pointer `at`) fails `schema`.
        pub fn errors(&self, schema: &Value, value: &Value) -> Vec<String> {
            let mut errors = Vec::new();
            self.check(schema, value, "", &mut errors);
            errors
        }

        /// `schema` applies to `value`, and no member of `value` is left undeclared.
        fn check(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
            let seen = self.eval(schema, value, at, errors);
            if let (Value::Object(members), Some(seen)) = (value, seen) {
                for name in members.keys().filter(|k| !seen.contains(*k)) {
                    errors.push(format!("{at}/{name}: member not declared by the schema"));
                }
            }
        }

        fn resolve(&self, reference: &str) -> Option<&Value> {
            reference
                .strip_prefix('#')
                .and_then(|pointer| self.doc.pointer(pointer))
        }

        fn eval(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) -> Seen {
            let schema = match schema {
                Value::Bool(true) => return None,
                Value::Bool(false) => {
                    errors.push(format!("{at}: no value is allowed here"));
                    return None;
                }
                Value::Object(schema) => schema,
                other => {
                    errors.push(format!("{at}: schema is not an object: {other}"));
                    return None;
                }
            };
            for keyword in schema.keys().filter(|k| !known(k)) {
                errors.push(format!("{at}: unsupported schema keyword {keyword:?}"));
            }
            let has = |k: &str| schema.contains_key(k);
            let mut seen: Seen = if has("properties") || has("additionalProperties") {
                match schema.get("additionalProperties") {
                    None | Some(Value::Bool(false)) => Some(
                        schema
                            .get("properties")
                            .and_then(Value::as_object)
                            .map(|p| p.keys().cloned().collect())
                            .unwrap_or_default(),
                    ),
                    Some(_) => None,
                }
            } else if has("$ref") || has("oneOf") || has("anyOf") || has("allOf") {
                Some(BTreeSet::new())
            } else {
                None
            };

            if let Some(reference) = schema.get("$ref") {
                match reference.as_str().and_then(|r| self.resolve(r)) {
                    Some(target) => seen = union(seen, self.eval(target, value, at, errors)),
                    None => errors.push(format!("{at}: unresolved $ref {reference}")),
                }
            }
            if let Some(types) = schema.get("type") {
                let names: Vec<&str> = match types {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                    _ => Vec::new(),
                };
                if !names.iter().any(|t| is_type(value, t)) {
                    errors.push(format!("{at}: {value} is not of type {types}"));
                    return seen;
                }
            }
            if let Some(options) = schema.get("enum").and_then(Value::as_array) {
                if !options.contains(value) {
                    errors.push(format!("{at}: {value} is not one of {options:?}"));
                }
            }
            if let Some(c) = schema.get("const") {
                if c != value {
                    errors.push(format!("{at}: {value} is not {c}"));
                }
            }
            if let Some(n) = value.as_f64() {
                if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                    if n < min {
                        errors.push(format!("{at}: {value} is below {min}"));
                    }
                }
                if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                    if n > max {
                        errors.push(format!("{at}: {value} is above {max}"));
                    }
                }
            }
            if let Some(s) = value.as_str() {
                let len = s.chars().count() as u64;
                if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
                    if len < min {
                        errors.push(format!("{at}: {value} is shorter than {min}"));
                    }
                }
                if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
                    if len > max {
                        errors.push(format!("{at}: {value} is longer than {max}"));
                    }
                }
            }
            if let Some(format) = schema.get("format").and_then(Value::as_str) {
                if !fits_format(value, format) {
                    errors.push(format!("{at}: {value} is not of format {format}"));
                }
            }
            if let Value::Object(members) = value {
                let properties = schema.get("properties").and_then(Value::as_object);
                for (name, sub) in properties.into_iter().flatten() {
                    if let Some(member) = members.get(name) {
                        self.check(sub, member, &format!("{at}/{name}"), errors);
                    }
                }
                for name in schema
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    if !members.contains_key(name) {
                        errors.push(format!("{at}: required member {name:?} is missing"));
                    }
                }
                if let Some(extra) = schema.get("additionalProperties") {
                    if !extra.is_boolean() {
                        for (name, member) in members {
                            if !properties.is_some_and(|p| p.contains_key(name)) {
                                self.check(extra, member, &format!("{at}/{name}"), errors);
                            }
                        }
                    }
                }
                if let Some(names) = schema.get("propertyNames") {
                    for name in members.keys() {
                        let key = Value::String(name.clone());
                        self.check(names, &key, &format!("{at}/{name} (name)"), errors);
                    }
                }
            }
            if let (Value::Array(items), Some(item)) = (value, schema.get("items")) {
                for (i, v) in items.iter().enumerate() {
                    self.check(item, v, &format!("{at}/{i}"), errors);
                }
            }
            if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
                for sub in all {
                    seen = union(seen, self.eval(sub, value, at, errors));
                }
            }
            for (keyword, exactly_one) in [("oneOf", true), ("anyOf", false)] {
                let Some(branches) = schema.get(keyword).and_then(Value::as_array) else {
                    continue;
                };
                let mut passed = Vec::new();
                let mut failures = Vec::new();
                for sub in branches {
                    let mut e = Vec::new();
                    let s = self.eval(sub, value, at, &mut e);
                    if e.is_empty() {
                        passed.push(s);
                    } else {
                        failures.push(e.join("; "));
                    }
                }
                let ok = if exactly_one {
                    passed.len() == 1
                } else {
                    !passed.is_empty()
                };
                if !ok {
                    errors.push(format!(
                        "{at}: {} of the {keyword} branches match {value} (failures: {failures:?})",
                        passed.len()
                    ));
                }
                for s in passed {
                    seen = union(seen, s);
                }
            }
            seen
        }
    }

    fn is_type(value: &Value, name: &str) -> bool {
        match name {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "object" => value.is_object(),
            "array" => value.is_array(),
            "number" => value.is_number(),
            "integer" => {
                value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            "string" => value.is_string(),
            _ => false,
        }
    }

    fn fits_format(value: &Value, format: &str) -> bool {
        match (format, value) {
            ("uuid", Value::String(s)) => uuid::Uuid::try_parse(s).is_ok(),
            ("date", Value::String(s)) => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
            ("date-time", Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
            ("int32", Value::Number(_)) => value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
            ("int64", Value::Number(_)) => value.is_i64() || value.is_u64(),
            // Other formats annotate; a format on a value of another type does not apply.
            _ => true,
        }
    }
}

/// Every schema in the document (components, parameters, bodies, headers), with where it is.
fn schemas_in(doc: &Value) -> Vec<(String, Value)> {
    fn walk(at: String, schema: &Value, out: &mut Vec<(String, Value)>) {
        out.push((at.clone(), schema.clone()));
        let Some(obj) = schema.as_object() else {
            return;
        };
        for (name, sub) in obj
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            walk(format!("{at}/properties/{name}"), sub, out);
        }
        for keyword in ["items", "additionalProperties", "propertyNames"] {
            if let Some(sub) = obj.get(keyword).filter(|s| s.is_object()) {
                walk(format!("{at}/{keyword}"), sub, out);
            }
        }
        for keyword in ["oneOf", "anyOf", "allOf"] {
            for (i, sub) in obj
                .get(keyword)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                walk(format!("{at}/{keyword}/{i}"), sub, out);
            }
        }
    }
    let mut out = Vec::new();
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        walk(format!("#/components/schemas/{name}"), schema, &mut out);
    }
    fn content(at: &str, holder: &Value, out: &mut Vec<(String, Value)>) {
        for (media, c) in holder["content"].as_object().into_iter().flatten() {
            if let Some(schema) = c.get("schema") {
                walk(format!("{at} {media}"), schema, out);
            }
        }
        for (name, h) in holder["headers"].as_object().into_iter().flatten() {
            if let Some(schema) = h.get("schema") {
                walk(format!("{at} header {name}"), schema, out);
            }
        }
    }
    for (name, response) in doc["components"]["responses"]
        .as_object()
        .into_iter()
        .flatten()
    {
        content(
            &format!("#/components/responses/{name}"),
            response,
            &mut out,
        );
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let at = format!("{method} {path}");
            for p in op["parameters"].as_array().into_iter().flatten() {
                walk(
                    format!("{at} parameter {}", p["name"]),
                    &p["schema"],
                    &mut out,
                );
            }
            content(&format!("{at} request"), &op["requestBody"], &mut out);
            for (status, r) in op["responses"].as_object().into_iter().flatten() {
                content(&format!("{at} {status}"), r, &mut out);
            }
        }
    }
    out
}

/// The document follows OpenAPI 3.1 as far as its structure shows: the version, the
/// required members, path templates and their parameters, unique operation ids, declared
/// tags and security schemes, responses with descriptions, and schemas in the JSON Schema
/// 2020-12 dialect of 3.1 (type lists, not the 3.0 `nullable`; local refs that resolve).
#[actix_rt::test]
async fn document_is_structurally_openapi_3_1() {
    let server = TestServer::start().await;
    let doc = fetch_document(&server).await;
    server.stop().await;
    assert_eq!(doc["openapi"], "3.1.0");
    for key in doc.as_object().unwrap().keys() {
        assert!(
            [
                "openapi",
                "info",
                "jsonSchemaDialect",
                "servers",
                "paths",
                "webhooks",
                "components",
                "security",
                "tags",
                "externalDocs"
            ]
            .contains(&key.as_str())
                || key.starts_with("x-"),
            "unknown top-level member {key}"
        );
    }
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let tags: BTreeSet<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    for name in doc["components"]["schemas"].as_object().unwrap().keys() {
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c)),
            "component name {name:?}"
        );
    }
    let mut operation_ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        assert!(path.starts_with('/'), "path {path}");
        let templated: BTreeSet<&str> = path
            .split('{')
            .skip(1)
            .map(|s| s.split('}').next().unwrap())
            .collect();
        for (method, op) in item.as_object().unwrap() {
            assert!(
                METHODS.contains(&method.as_str()),
                "{path}: member {method}"
            );
            let at = format!("{method} {path}");
            let id = op["operationId"].as_str().unwrap();
            assert!(
                operation_ids.insert(id.to_owned()),
                "{at}: operationId {id} twice"
            );
            for tag in op["tags"].as_array().into_iter().flatten() {
                assert!(tags.contains(tag.as_str().unwrap()), "{at}: tag {tag}");
            }
            for requirement in op["security"].as_array().unwrap() {
                for name in requirement.as_object().unwrap().keys() {
                    assert!(schemes.contains_key(name), "{at}: security {name}");
                }
            }
            let mut params = BTreeSet::new();
            let mut path_params = BTreeSet::new();
            for p in op["parameters"].as_array().into_iter().flatten() {
                let (name, place) = (p["name"].as_str().unwrap(), p["in"].as_str().unwrap());
                assert!(
                    ["query", "header", "path", "cookie"].contains(&place),
                    "{at}: {name} in {place}"
                );
                assert!(params.insert((name, place)), "{at}: parameter {name} twice");
                assert!(p["schema"].is_object(), "{at}: {name} has no schema");
                if place == "path" {
                    assert_eq!(p["required"], true, "{at}: path parameter {name}");
                    path_params.insert(name);
                }
            }
            assert_eq!(path_params, templated, "{at}: path parameters");
            if let Some(body) = op.get("requestBody") {
                assert!(body["content"].is_object(), "{at}: request body content");
            }
            let responses = op["responses"].as_object().unwrap();
            assert!(!responses.is_empty(), "{at}: no responses");
            for (status, r) in responses {
                assert!(
                    status.len() == 3 && status.chars().all(|c| c.is_ascii_digit()),
                    "{at}: status {status}"
                );
                let r = match r["$ref"].as_str() {
                    Some(reference) => doc.pointer(&reference[1..]).unwrap(),
                    None => r,
                };
                assert!(r["description"].is_string(), "{at} {status}: description");
            }
        }
    }
    for (at, schema) in schemas_in(&doc) {
        let obj = schema
            .as_object()
            .unwrap_or_else(|| panic!("{at}: {schema}"));
        for keyword in obj.keys() {
            assert!(
                schema::in_dialect(keyword) && keyword != "nullable",
                "{at}: keyword {keyword:?} is not JSON Schema 2020-12 as this test knows it"
            );
        }
        let types: Vec<&Value> = match &obj.get("type") {
            Some(Value::Array(ts)) => ts.iter().collect(),
            Some(t) => vec![t],
            None => Vec::new(),
        };
        for t in types {
            assert!(
                t.as_str().is_some_and(|t| schema::TYPES.contains(&t)),
                "{at}: type {t}"
            );
        }
        if let Some(reference) = obj.get("$ref") {
            let reference = reference.as_str().unwrap();
            assert!(
                reference.starts_with("#/components/schemas/")
                    && doc.pointer(&reference[1..]).is_some(),
                "{at}: $ref {reference}"
            );
        }
        if let Some(required) = obj.get("required") {
            let properties = obj["properties"].as_object().unwrap();
            for name in required.as_array().unwrap() {
                assert!(
                    properties.contains_key(name.as_str().unwrap()),
                    "{at}: required {name} is not a property"
                );
            }
        }
    }
}

/// Sends requests and checks each 2xx JSON reply against the schema the document declares
/// for its operation and status; remembers which documented replies it saw.
struct Conformance<'a> {
    server: &'a TestServer,
    validator: schema::Validator<'a>,
    seen: BTreeSet<(String, String, String)>,
}

impl Conformance<'_> {
    /// Sends `req` (for the operation `METHOD path-template`), expects `status`, validates
    /// the reply against the document and returns it.
    async fn call(&mut self, operation: &str, req: reqwest::RequestBuilder, status: u16) -> Value {
        let (method, path) = operation.split_once(' ').unwrap();
        let res = req.send().await.unwrap();
        let got = res.status().as_u16();
        let content_type = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = res.text().await.unwrap();
        assert_eq!(got, status, "{operation}: {text}");
        let doc = self.validator.doc;
        let op = &doc["paths"][path][method.to_lowercase()];
        assert!(op.is_object(), "{operation} is not documented");
        let mut response = &op["responses"][status.to_string()];
        if let Some(reference) = response["$ref"].as_str() {
            response = doc.pointer(&reference[1..]).unwrap();
        }
        assert!(
            response.is_object(),
            "{operation} answered {status}, which is not documented"
        );
        let media = content_type.split(';').next().unwrap().trim();
        let schema = &response["content"][media]["schema"];
        assert!(
            schema.is_object(),
            "{operation} {status}: Content-Type {content_type:?} is not documented"
        );
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{operation} {status}: not JSON ({e}): {text}"));
        let errors = self.validator.errors(schema, &body);
        assert!(
            errors.is_empty(),
            "{operation} {status}: the reply does not fit its documented schema:\n  {}\nreply: {body:#}",
            errors.join("\n  ")
        );
        self.seen
            .insert((method.to_owned(), path.to_owned(), status.to_string()));
        body
    }

    /// `GET /v1/bookings/{id}` (validated) until `done` holds for the booking.
    async fn booking_until(
        &mut self,
        http: &reqwest::Client,
        id: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let url = self.server.url(&format!("/v1/bookings/{id}"));
        let mut last = Value::Null;
        let found = common::poll_until(std::time::Duration::from_secs(20), async || {
            last = self
                .call("GET /v1/bookings/{id}", http.get(&url), 200)
                .await;
            done(&last).then(|| last.clone())
        })
        .await;
        found.unwrap_or_else(|| panic!("booking {id} did not become {what}: {last:#}"))
    }
}

/// Every documented 2xx `application/json` reply: `(method, path, status)`.
fn documented_json_replies(doc: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, r) in op["responses"].as_object().unwrap() {
                if status.starts_with('2') && r["content"]["application/json"].is_object() {
                    out.insert((method.to_uppercase(), path.clone(), status.clone()));
                }
            }
        }
    }
    out
}

/// One real request per route and documented success status, each reply validated
/// against the schema the document declares for it: the document describes what the
/// server sends, field by field.
#[actix_rt::test]
async fn every_success_reply_fits_its_documented_schema() {
    use std::sync::atomic::Ordering;

    use chrono::{Days, Utc};
    use serde_json::json;
    use wayfare::actors::seller::AdapterConfig;
    use wayfare::config::{SellerEntry, SellerKind};
    use wayfare::sellers::simulated::SimulatedSellerConfig;
    use wayfare::sellers::Vertical;

    let (fixed, knobs) = common::fake::FixedSeller::new("test", 20_000);
    let server = TestServer::start_custom(
        |c| {
            c.bookings.step_timeout_ms = 500;
            c.bookings.saga.backoff_base_ms = 1;
            c.bookings.saga.backoff_max_ms = 5;
            // A simulated seller with the whole catalog and no faults, so searches find
            // hotels and flights (round trips) to validate.
            c.sellers = vec![SellerEntry {
                name: "alpha".into(),
                kind: SellerKind::Simulated,
                verticals: vec![Vertical::Hotel, Vertical::Flight],
                simulated: SimulatedSellerConfig {
                    seed: 1,
                    latency_ms: (0, 2),
                    coverage: 1.0,
                    error_rate: 0.0,
                    hang_rate: 0.0,
                    reject_rate: 0.0,
                    lost_reply_rate: 0.0,
                    ..SimulatedSellerConfig::default()
                },
                http: Default::default(),
                adapter: AdapterConfig::default(),
            }];
        },
        vec![fixed.into_custom(AdapterConfig::default())],
    )
    .await;
    let doc = fetch_document(&server).await;
    let mut c = Conformance {
        server: &server,
        validator: schema::Validator { doc: &doc },
        seen: BTreeSet::new(),
    };
    let s = &server;
    let op = s.http.clone();

    c.call(
        "GET /v1/openapi.json",
        s.anonymous.get(s.url("/v1/openapi.json")),
        200,
    )
    .await;

    // Accounts and wallets.
    let created = c
        .call(
            "POST /v1/accounts",
            s.anonymous.post(s.url("/v1/accounts")).json(&json!({
                "name": "Ann",
                "email": "ann@example.com",
            })),
            201,
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let ann = common::client_with(created["api_key"].as_str().unwrap());
    let account = s.url(&format!("/v1/accounts/{id}"));
    c.call("GET /v1/accounts/{id}", ann.get(&account), 200)
        .await;
    let rekeyed = c
        .call(
            "POST /v1/accounts/{id}/api-key",
            ann.post(s.url(&format!("/v1/accounts/{id}/api-key"))),
            201,
        )
        .await;
    let ann = common::client_with(rekeyed["api_key"].as_str().unwrap());
    let credits = s.url(&format!("/v1/accounts/{id}/wallet/credits"));
    let credit = || {
        op.post(&credits)
            .header("Idempotency-Key", "credit-1")
            .json(&json!({"amount": {"minor": 5_000, "currency": "EUR"}}))
    };
    c.call("POST /v1/accounts/{id}/wallet/credits", credit(), 201)
        .await;
    c.call("POST /v1/accounts/{id}/wallet/credits", credit(), 200)
        .await;
    let ledger = s.url(&format!("/v1/accounts/{id}/wallet/ledger"));
    c.call("GET /v1/accounts/{id}/wallet/ledger", ann.get(&ledger), 200)
        .await;

    // Searches, personalized by the wallet.
    let day = |n| {
        Utc::now()
            .date_naive()
            .checked_add_days(Days::new(n))
            .unwrap()
    };
    let (start, end) = (day(30), day(32));
    let hotels = c
        .call(
            "GET /v1/search/hotels",
            ann.get(s.url(&format!(
                "/v1/search/hotels?city=Lisbon&check_in={start}&check_out={end}&account_id={id}"
            ))),
            200,
        )
        .await;
    assert!(
        !hotels["offers"].as_array().unwrap().is_empty(),
        "{hotels:#}"
    );
    let flights = c
        .call(
            "GET /v1/search/flights",
            s.anonymous.get(s.url(&format!(
                "/v1/search/flights?from=LIS&to=CDG&date={start}&return_date={end}"
            ))),
            200,
        )
        .await;
    assert!(
        !flights["offers"].as_array().unwrap().is_empty(),
        "{flights:#}"
    );

    // A booking, partly paid with points: made, replayed, read, listed, cancelled.
    let order = |key: &str, card: &str| {
        ann.post(s.url("/v1/bookings"))
            .header("Idempotency-Key", key)
            .json(&json!({
                "account_id": id,
                "seller": "test",
                "sku": "hotel:test:h1:double",
                "start": start.to_string(),
                "end": end.to_string(),
                "offer_price": {"currency": "EUR", "minor": 20_000},
                "wallet_points": {"currency": "EUR", "minor": 1_000},
                "card_token": card,
            }))
    };
    let booked = c
        .call("POST /v1/bookings", order("book-1", "tok_approve"), 202)
        .await;
    c.call("POST /v1/bookings", order("book-1", "tok_approve"), 200)
        .await;
    let booking = booked["id"].as_str().unwrap().to_owned();
    c.booking_until(&ann, &booking, "confirmed", |b| b["state"] == "confirmed")
        .await;
    c.call(
        "GET /v1/accounts/{id}/bookings",
        ann.get(s.url(&format!("/v1/accounts/{id}/bookings?limit=1"))),
        200,
    )
    .await;
    c.call(
        "POST /v1/bookings/{id}/cancel",
        ann.post(s.url(&format!("/v1/bookings/{booking}/cancel"))),
        202,
    )
    .await;
    c.booking_until(&ann, &booking, "cancelled", |b| {
        b["state"] == "cancelled" && b["cancellation"]["state"] == "cancelled"
    })
    .await;
    // The ledger now holds a credit, a hold, a capture and the points given back.
    let entries = c
        .call("GET /v1/accounts/{id}/wallet/ledger", ann.get(&ledger), 200)
        .await;
    assert!(
        entries["entries"].as_array().unwrap().len() >= 3,
        "{entries:#}"
    );

    // A parked saga (capture fails for good, and so does undoing the reservation), for
    // the operator's views and the retry route.
    knobs.cancel_failing.store(true, Ordering::SeqCst);
    let parked = c
        .call(
            "POST /v1/bookings",
            order("book-2", "tok_fail_capture"),
            202,
        )
        .await;
    let parked = parked["id"].as_str().unwrap().to_owned();
    c.booking_until(&ann, &parked, "needs_attention", |b| {
        b["state"] == "needs_attention"
    })
    .await;
    // The operator sees its partner calls (a customer reads `null`, checked above).
    let seen = c
        .booking_until(&op, &parked, "listed with its partner calls", |b| {
            b["partner_calls"]["calls"]
                .as_array()
                .is_some_and(|calls| calls.iter().any(|c| c["outcome"] == "failed"))
        })
        .await;
    let calls = seen["partner_calls"]["calls"].as_array().unwrap();
    assert!(
        calls
            .iter()
            .any(|c| c["operation"] == "capture" && c["outcome"] == "failed"),
        "{seen:#}"
    );
    let health = c.call("GET /health", op.get(s.url("/health")), 200).await;
    assert_eq!(health["sagas"]["needs_attention"], 1, "{health:#}");
    c.call("GET /health", s.anonymous.get(s.url("/health")), 200)
        .await;
    c.call(
        "GET /v1/system/supervisors",
        op.get(s.url("/v1/system/supervisors")),
        200,
    )
    .await;
    c.call(
        "GET /v1/system/cluster",
        op.get(s.url("/v1/system/cluster")),
        200,
    )
    .await;
    c.call(
        "GET /v1/system/events",
        op.get(s.url("/v1/system/events")),
        200,
    )
    .await;
    knobs.cancel_failing.store(false, Ordering::SeqCst);
    c.call(
        "POST /v1/admin/sagas/{id}/retry",
        op.post(s.url(&format!("/v1/admin/sagas/{parked}/retry"))),
        202,
    )
    .await;

    let missing: Vec<_> = documented_json_replies(&doc)
        .difference(&c.seen)
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "documented JSON replies this test did not check: {missing:?}"
    );
    server.stop().await;
}

/// The validator behind the test above refuses what does not fit: a missing required
/// member, a wrong type, a value outside an enum, an undeclared member, a bad format, a
/// null where none is allowed; and accepts the real reply it was given.
#[actix_rt::test]
async fn the_reply_validator_catches_mismatches() {
    let server = TestServer::start().await;
    let doc = fetch_document(&server).await;
    let created: Value = server
        .anonymous
        .post(server.url("/v1/accounts"))
        .json(&serde_json::json!({"name": "Bo", "email": "bo@example.com"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    server.stop().await;
    let v = schema::Validator { doc: &doc };
    let with_key = serde_json::json!({"$ref": "#/components/schemas/WithKey"});
    let account = serde_json::json!({"$ref": "#/components/schemas/Account"});
    assert_eq!(v.errors(&with_key, &created), Vec::<String>::new());

    let broken = |change: &dyn Fn(&mut Value)| {
        let mut value = created.clone();
        change(&mut value);
        value
    };
    let cases: Vec<(&str, &Value, Value)> = vec![
        (
            "missing api_key",
            &with_key,
            broken(&|v| {
                v.as_object_mut().unwrap().remove("api_key");
            }),
        ),
        (
            "missing wallet",
            &with_key,
            broken(&|v| {
                v.as_object_mut().unwrap().remove("wallet");
            }),
        ),
        ("id a number", &with_key, broken(&|v| v["id"] = 7.into())),
        (
            "id not a uuid",
            &with_key,
            broken(&|v| v["id"] = "seven".into()),
        ),
        (
            "created_at not a date-time",
            &with_key,
            broken(&|v| v["created_at"] = "yesterday".into()),
        ),
        (
            "minor a string",
            &with_key,
            broken(&|v| v["wallet"]["balance"]["minor"] = "0".into()),
        ),
        ("name null", &with_key, broken(&|v| v["name"] = Value::Null)),
        (
            "undeclared member",
            &with_key,
            broken(&|v| v["extra"] = true.into()),
        ),
        (
            "undeclared nested member",
            &with_key,
            broken(&|v| v["wallet"]["extra"] = 1.into()),
        ),
        // The plain account does not declare the key.
        ("api_key on Account", &account, created.clone()),
    ];
    for (what, schema, value) in cases {
        assert!(!v.errors(schema, &value).is_empty(), "{what} was accepted");
    }

    let state = serde_json::json!({"$ref": "#/components/schemas/SagaState"});
    assert!(v.errors(&state, &"confirmed".into()).is_empty());
    assert!(!v.errors(&state, &"Confirmed".into()).is_empty());
    let entry = serde_json::json!({"$ref": "#/components/schemas/HistoryEntry"});
    let line = serde_json::json!({
        "at": "2026-01-01T00:00:00Z", "state": "pending", "step": null, "note": "n"
    });
    assert!(v.errors(&entry, &line).is_empty());
    let mut bad = line.clone();
    bad["step"] = "teleport".into();
    assert!(!v.errors(&entry, &bad).is_empty(), "unknown step accepted");
    // A member serialized as null when empty is always there: leaving it out is a mismatch.
    let mut bad = line.clone();
    bad.as_object_mut().unwrap().remove("step");
    assert!(!v.errors(&entry, &bad).is_empty(), "missing step accepted");
}
