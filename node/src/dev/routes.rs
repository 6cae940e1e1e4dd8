//! HTTP faces of the dev Authority and licensing service: mounted under `/dev/` on the dev
//! node, or served alone over HTTPS as the test suite's stand-ins ([`StandIn`]).

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Arc;

use actix_web::web::{self, Data, Form};
use actix_web::{App, HttpMessage, HttpRequest, HttpResponse, HttpServer};
use base64::Engine;
use serde_json::json;

use super::{DevAuthority, DevLicensing};
use crate::Error;

#[derive(Clone)]
pub struct DevServices {
    pub authority: Arc<DevAuthority>,
    pub licensing: Arc<DevLicensing>,
    /// A Fulcio-protocol test CA, when keyless signing is exercised.
    pub fulcio: Option<Arc<super::DevFulcio>>,
    /// An RFC 3161 test TSA, when keyless signing is exercised.
    pub tsa: Option<Arc<super::DevTsa>>,
    /// The token endpoint's own URL, which DPoP proofs sent to it must name.
    pub token_url: String,
}

/// Mounts `{prefix}/authority/jwks.json`, `{prefix}/authority/token`,
/// `{prefix}/licensing/introspect`, `{prefix}/fulcio/api/v2/signingCert` and
/// `{prefix}/tsa/api/v1/timestamp` (the last two answer 404 without their stand-in).
pub fn services(prefix: &str, services: DevServices) -> actix_web::Scope {
    // Malformed bodies get the protocols' own error shapes (OAuth 2.0 `invalid_request`, a
    // Fulcio-style `{code, message}`), not the framework's plain text.
    let form_errors = web::FormConfig::default().error_handler(|e, _| {
        actix_web::error::InternalError::from_response(
            e.to_string(),
            HttpResponse::BadRequest()
                .json(json!({"error": "invalid_request", "error_description": e.to_string()})),
        )
        .into()
    });
    let json_errors = web::JsonConfig::default()
        .limit(64 * 1024)
        .error_handler(|e, _| {
            actix_web::error::InternalError::from_response(
                e.to_string(),
                HttpResponse::BadRequest().json(json!({"code": 400, "message": e.to_string()})),
            )
            .into()
        });
    web::scope(prefix)
        .app_data(Data::new(services))
        .app_data(form_errors)
        .app_data(json_errors)
        .route("/authority/jwks.json", web::get().to(jwks))
        .route("/authority/token", web::post().to(token))
        .route("/licensing/introspect", web::post().to(introspect))
        .route("/fulcio/api/v2/signingCert", web::post().to(signing_cert))
        .service(
            web::resource("/tsa/api/v1/timestamp")
                .app_data(web::PayloadConfig::new(MAX_TIMESTAMP_QUERY))
                .route(web::post().to(timestamp)),
        )
}

/// A `TimeStampReq` holds a hash and a nonce: a few hundred bytes.
const MAX_TIMESTAMP_QUERY: usize = 16 * 1024;

async fn timestamp(s: Data<DevServices>, req: HttpRequest, query: web::Bytes) -> HttpResponse {
    let Some(tsa) = &s.tsa else {
        return HttpResponse::NotFound().finish();
    };
    if req.content_type() != "application/timestamp-query" {
        return HttpResponse::UnsupportedMediaType().body("want application/timestamp-query");
    }
    match tsa.respond(&query) {
        Ok(reply) => HttpResponse::Ok()
            .content_type("application/timestamp-reply")
            .body(reply),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

async fn signing_cert(s: Data<DevServices>, body: web::Json<serde_json::Value>) -> HttpResponse {
    let Some(fulcio) = &s.fulcio else {
        return HttpResponse::NotFound().finish();
    };
    match fulcio.signing_cert(&body) {
        Ok(answer) => HttpResponse::Created().json(answer),
        Err((status, message)) => HttpResponse::build(
            actix_web::http::StatusCode::from_u16(status)
                .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
        )
        .json(json!({"code": status, "message": message})),
    }
}

async fn jwks(s: Data<DevServices>) -> HttpResponse {
    HttpResponse::Ok().json(s.authority.jwks())
}

async fn token(
    s: Data<DevServices>,
    req: HttpRequest,
    form: Form<HashMap<String, String>>,
) -> HttpResponse {
    let proof = req.headers().get("dpop").and_then(|v| v.to_str().ok());
    match s
        .authority
        .token(basic_auth(&req), &form, proof, &s.token_url)
    {
        Ok(answer) => HttpResponse::Ok()
            .insert_header(("cache-control", "no-store"))
            .json(answer),
        Err(e) => HttpResponse::build(
            actix_web::http::StatusCode::from_u16(e.status)
                .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
        )
        .json(json!({"error": e.error, "error_description": e.description})),
    }
}

async fn introspect(
    s: Data<DevServices>,
    req: HttpRequest,
    form: Form<HashMap<String, String>>,
) -> HttpResponse {
    if s.licensing.in_outage() {
        return HttpResponse::ServiceUnavailable().finish();
    }
    if !s.licensing.authenticate(basic_auth(&req)) {
        return HttpResponse::Unauthorized()
            .insert_header(("www-authenticate", "Basic realm=\"licensing\""))
            .json(json!({"error": "invalid_client"}));
    }
    let Some(token) = form.get("token") else {
        return HttpResponse::BadRequest().json(json!({"error": "invalid_request"}));
    };
    HttpResponse::Ok().json(s.licensing.introspect(token))
}

fn basic_auth(req: &HttpRequest) -> Option<(String, String)> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// The dev Authority and licensing service as one HTTPS server of their own, on a thread with
/// its own runtime: the stand-in for the real services in multi-process tests.
pub struct StandIn {
    pub url: String,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StandIn {
    /// Serves `make(url)` on `listener`; `make` gets the base URL (token URLs depend on it).
    pub fn start(
        listener: TcpListener,
        tls: rustls::ServerConfig,
        make: impl FnOnce(&str) -> DevServices,
    ) -> Result<StandIn, Error> {
        let addr = listener
            .local_addr()
            .map_err(Error::io("stand-in listener"))?;
        let url = format!("https://{addr}");
        let dev = make(&url);
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let system = actix_web::rt::System::new();
            system.block_on(async move {
                let server = HttpServer::new(move || App::new().service(services("", dev.clone())))
                    .workers(1)
                    .disable_signals()
                    .listen_rustls_0_23(listener, tls);
                match server {
                    Ok(server) => {
                        let server = server.run();
                        let _ = tx.send(Ok(server.handle()));
                        let _ = server.await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        });
        let handle = rx
            .recv()
            .map_err(|_| Error::Config("the stand-in server thread died".into()))?
            .map_err(Error::io("starting the stand-in server"))?;
        Ok(StandIn {
            url,
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        // Stopping needs the server's own runtime: ask it, then wait for the thread.
        let handle = self.handle.clone();
        let _ = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(handle.stop(false));
        })
        .join();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
