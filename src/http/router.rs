//! The route table: each path is one actix `Resource` holding the handlers of its methods,
//! so a request with another method on a known path is answered 405 with `Allow` (a
//! problem), while a path that names nothing falls through to the 404 default service.
//!
//! Areas add routes to a [`Router`] by the handler's `#[utoipa::path]` description: the
//! method and path are read from it, and its operation goes into the OpenAPI document, so
//! a route cannot be served undocumented or documented at another path. [`Router::table`]
//! lists what was added, for tests.
//!
//! The OpenAPI parts are kept as the functions that build them, not built: every HTTP
//! worker builds its own route table at start, and only a request for the document needs
//! them (building them per worker cost memory at idle).

use actix_web::http::Method;
use actix_web::{web, Route};
use utoipa::__dev::SchemaReferences;
use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;

use super::problem::Problem;

/// Which path of the table a request was routed to: its position in
/// [`Router::paths_in_order`]. Read back from the request's app data after routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RouteIndex(pub(crate) usize);

/// One path and the routes of its methods.
struct Endpoint {
    path: String,
    routes: Vec<(Method, Route, OperationFn)>,
}

/// Builds an operation's OpenAPI description (its `#[utoipa::path]`).
type OperationFn = fn() -> Operation;

/// Adds an operation's schemas (bodies, and what those refer to) by name.
type SchemaFn = fn(&mut Vec<(String, RefOr<Schema>)>);

/// Routes gathered by path, in the order first added.
#[derive(Default)]
pub(crate) struct Router {
    endpoints: Vec<Endpoint>,
    /// What collects the schemas each operation names.
    schemas: Vec<SchemaFn>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.table()).finish()
    }
}

impl Router {
    /// Routes the operation `P` (a handler's `#[utoipa::path]`) to `route` (a
    /// `web::to(handler)`); the method guard and the path come from `P`, and the schemas
    /// its bodies name join the document's components.
    pub(crate) fn add<P: utoipa::Path + SchemaReferences>(&mut self, route: Route) -> &mut Self {
        // `SchemaReferences` is how utoipa's own routers (utoipa-axum, utoipa-actix-web)
        // collect what an operation refers to; without it a `$ref` would dangle.
        self.schemas.push(P::schemas);
        let path = P::path();
        let methods = P::methods();
        // One handler serves one method here; a second would need a second `Route`.
        let [method] = methods.as_slice() else {
            panic!(
                "{path}: a routed operation names exactly one method, not {}",
                methods.len()
            );
        };
        let method = actix_method(method);
        let route = route.method(method.clone());
        let entry = (method, route, P::operation as OperationFn);
        match self.endpoints.iter_mut().find(|e| e.path == path) {
            Some(endpoint) => endpoint.routes.push(entry),
            None => self.endpoints.push(Endpoint {
                path,
                routes: vec![entry],
            }),
        }
        self
    }

    /// `(method, path pattern)` of every route added.
    pub(crate) fn table(&self) -> Vec<(Method, String)> {
        self.endpoints
            .iter()
            .flat_map(|e| e.routes.iter().map(|(m, _, _)| (m.clone(), e.path.clone())))
            .collect()
    }

    /// The OpenAPI paths of every route added.
    pub(crate) fn paths(&self) -> utoipa::openapi::Paths {
        let mut paths = utoipa::openapi::Paths::new();
        for endpoint in &self.endpoints {
            for (method, _, operation) in &endpoint.routes {
                paths.add_path_operation(&endpoint.path, vec![openapi_method(method)], operation());
            }
        }
        paths
    }

    /// The schemas every added operation refers to, each name once.
    pub(crate) fn schemas(&self) -> Vec<(String, RefOr<Schema>)> {
        let mut all = Vec::new();
        for collect in &self.schemas {
            collect(&mut all);
        }
        let mut seen = std::collections::BTreeSet::new();
        all.retain(|(name, _)| seen.insert(name.clone()));
        all
    }

    /// Every path added, in the order of their [`RouteIndex`].
    pub(crate) fn paths_in_order(&self) -> Vec<String> {
        self.endpoints.iter().map(|e| e.path.clone()).collect()
    }

    /// Registers one resource per path, whose default service is the 405 problem. Each
    /// resource carries its [`RouteIndex`], so the middleware finds the request's route
    /// (and its metrics) without matching the path against the table again.
    pub(crate) fn register(self, cfg: &mut web::ServiceConfig) {
        for (index, endpoint) in self.endpoints.into_iter().enumerate() {
            let allowed: Vec<Method> = endpoint.routes.iter().map(|(m, _, _)| m.clone()).collect();
            let mut resource = web::resource(endpoint.path).app_data(RouteIndex(index));
            for (_, route, _) in endpoint.routes {
                resource = resource.route(route);
            }
            cfg.service(resource.default_service(web::to(move || {
                let problem = Problem::method_not_allowed(&allowed);
                async move { Err::<actix_web::HttpResponse, _>(problem) }
            })));
        }
    }
}

fn actix_method(method: &HttpMethod) -> Method {
    match method {
        HttpMethod::Get => Method::GET,
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Delete => Method::DELETE,
        HttpMethod::Options => Method::OPTIONS,
        HttpMethod::Head => Method::HEAD,
        HttpMethod::Patch => Method::PATCH,
        HttpMethod::Trace => Method::TRACE,
    }
}

fn openapi_method(method: &Method) -> HttpMethod {
    match *method {
        Method::POST => HttpMethod::Post,
        Method::PUT => HttpMethod::Put,
        Method::DELETE => HttpMethod::Delete,
        Method::OPTIONS => HttpMethod::Options,
        Method::HEAD => HttpMethod::Head,
        Method::PATCH => HttpMethod::Patch,
        Method::TRACE => HttpMethod::Trace,
        _ => HttpMethod::Get,
    }
}
