//! JSON replies. Every JSON body this API sends (problems included) ends with a newline,
//! so `curl` output ends cleanly on a terminal and bodies concatenate into JSON lines.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, HttpResponseBuilder, ResponseError};
use serde::Serialize;

use super::problem::Problem;

/// `value` serialized as one line-terminated JSON document.
pub(crate) fn json_line<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    // Most bodies (an account, a booking, a problem) fit: one allocation instead of the
    // half dozen a growing empty Vec makes on the way to a few hundred bytes.
    let mut body = Vec::with_capacity(512);
    serde_json::to_writer(&mut body, value)?;
    body.push(b'\n');
    Ok(body)
}

/// `HttpResponseBuilder::json`, with the trailing newline.
pub(crate) trait JsonReply {
    /// Finishes the response with `value` as an `application/json` body.
    fn json_line<T: Serialize>(&mut self, value: T) -> HttpResponse;
}

impl JsonReply for HttpResponseBuilder {
    fn json_line<T: Serialize>(&mut self, value: T) -> HttpResponse {
        match json_line(&value) {
            Ok(body) => self
                .insert_header((
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ))
                .body(body),
            Err(e) => {
                tracing::error!(error = %e, "Reply did not serialize.");
                Problem::internal().error_response()
            }
        }
    }
}
