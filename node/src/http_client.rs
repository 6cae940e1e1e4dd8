//! Outbound HTTPS to the Authority and the licensing service: one client per endpoint, with
//! the configured CA, a timeout and a bound on the answer's size. Plain `http://` is accepted
//! only for loopback addresses (the dev node's own embedded services).

use std::time::Duration;

use crate::Error;

pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
pub struct HttpsSource {
    pub url: reqwest::Url,
    pub http: reqwest::Client,
}

impl HttpsSource {
    pub fn new(url: &str, ca_pem: Option<&str>, timeout: Duration) -> Result<HttpsSource, Error> {
        let url = reqwest::Url::parse(url).map_err(|e| Error::Config(format!("{url}: {e}")))?;
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
            return Err(Error::Config(format!(
                "{url}: must be https (plain http only on loopback)"
            )));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| Error::Config(format!("CA for {url}: {e}")))?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| Error::Config(format!("HTTP client for {url}: {e}")))?;
        Ok(HttpsSource { url, http })
    }

    pub async fn get(&self, max_bytes: usize) -> Result<Vec<u8>, String> {
        let response = self
            .http
            .get(self.url.clone())
            .send()
            .await
            .map_err(|e| format!("{}: {e}", self.url))?;
        read_ok(response, max_bytes).await
    }
}

/// The body of a 2xx answer, at most `max_bytes`; anything else is an error message.
pub async fn read_ok(response: reqwest::Response, max_bytes: usize) -> Result<Vec<u8>, String> {
    let status = response.status();
    let url = response.url().clone();
    if !status.is_success() {
        return Err(format!("{url}: HTTP {status}"));
    }
    let mut response = response;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("{url}: {e}"))? {
        if body.len() + chunk.len() > max_bytes {
            return Err(format!("{url}: answer larger than {max_bytes} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
