//! A bounded HTTPS client for instant-acme (`Account::builder_with_http`):
//! own root store (or the platform verifier), a connect timeout, one deadline
//! covering request, headers and body, and a body size limit. instant-acme's
//! own default client has no timeout at all.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};

use super::{AcmeSettings, Error, Result};

const MAX_BODY: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[error("no complete HTTP answer within {0:?}")]
struct HttpTimeout(Duration);

pub(crate) struct BoundedHttp {
    client: HyperClient<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    timeout: Duration,
}

impl BoundedHttp {
    pub(crate) fn new(acme: &AcmeSettings) -> Result<Self> {
        let builder = match &acme.https_roots {
            Some(certs) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in certs {
                    roots
                        .add(cert.clone())
                        .map_err(|e| Error::HttpSetup(format!("acme.ca: {e}")))?;
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| Error::HttpSetup(e.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                HttpsConnectorBuilder::new().with_tls_config(config)
            }
            None => HttpsConnectorBuilder::new()
                .try_with_platform_verifier()
                .map_err(|e| Error::HttpSetup(e.to_string()))?,
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(acme.request_timeout));
        let connector = builder
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        Ok(Self {
            client: HyperClient::builder(TokioExecutor::new()).build(connector),
            timeout: acme.request_timeout,
        })
    }
}

impl HttpClient for BoundedHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = self.client.request(req);
        let limit = self.timeout;
        Box::pin(async move {
            let whole = async move {
                let rsp = fut
                    .await
                    .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
                let (parts, body) = rsp.into_parts();
                let body = Limited::new(body, MAX_BODY)
                    .collect()
                    .await
                    .map_err(instant_acme::Error::Other)?
                    .to_bytes();
                Ok(BytesResponse {
                    parts,
                    body: Box::new(body),
                })
            };
            tokio::time::timeout(limit, whole)
                .await
                .map_err(|_| instant_acme::Error::Other(Box::new(HttpTimeout(limit))))?
        })
    }
}
