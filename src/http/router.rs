//! The route table: each path is one actix `Resource` holding the handlers of its methods,
//! so a request with another method on a known path is answered 405 with `Allow` (a
//! problem), while a path that names nothing falls through to the 404 default service.
//!
//! Areas add routes to a [`Router`]; [`Router::table`] lists what was added, so tests can
//! hold the route table against the OpenAPI document without scraping source.

use actix_web::http::Method;
use actix_web::{web, Route};

use super::problem::Problem;

/// One path and the routes of its methods.
struct Endpoint {
    path: &'static str,
    routes: Vec<(Method, Route)>,
}

/// Routes gathered by path, in the order first added.
#[derive(Default)]
pub(crate) struct Router {
    endpoints: Vec<Endpoint>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.table()).finish()
    }
}

impl Router {
    /// Routes `method` on `path` to `route` (a `web::to(handler)`: the method guard is
    /// added here, so it cannot disagree with `method`).
    pub(crate) fn add(&mut self, method: Method, path: &'static str, route: Route) -> &mut Self {
        let route = route.method(method.clone());
        match self.endpoints.iter_mut().find(|e| e.path == path) {
            Some(endpoint) => endpoint.routes.push((method, route)),
            None => self.endpoints.push(Endpoint {
                path,
                routes: vec![(method, route)],
            }),
        }
        self
    }

    /// `(method, path pattern)` of every route added.
    pub(crate) fn table(&self) -> Vec<(Method, &'static str)> {
        self.endpoints
            .iter()
            .flat_map(|e| e.routes.iter().map(|(m, _)| (m.clone(), e.path)))
            .collect()
    }

    /// Registers one resource per path, whose default service is the 405 problem.
    pub(crate) fn register(self, cfg: &mut web::ServiceConfig) {
        for endpoint in self.endpoints {
            let allowed: Vec<Method> = endpoint.routes.iter().map(|(m, _)| m.clone()).collect();
            let mut resource = web::resource(endpoint.path);
            for (_, route) in endpoint.routes {
                resource = resource.route(route);
            }
            cfg.service(resource.default_service(web::to(move || {
                let problem = Problem::method_not_allowed(&allowed);
                async move { Err::<actix_web::HttpResponse, _>(problem) }
            })));
        }
    }
}
