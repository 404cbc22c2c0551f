//! Certificates for boxes' own names (contract §10, docs/certificates.md): RFC 2136 updates of the
//! operator's zone (TSIG-signed) and RFC 8555 issuance with the DNS-01 challenge published through
//! those updates, for a CSR made by the box. Authority only: a box binary never links this.
//!
//! * [`dns::update_addresses`] replaces a box name's A and AAAA records in one update;
//! * [`Issuer`] holds the ACME account (created once, serialised) and bounds concurrent issuance;
//!   [`Issuer::issue`] returns the checked PEM chain and the CA's renewal window (ARI) if any;
//! * [`x509::check_csr`] is the admission of a box's CSR, before anything touches the network.
//!
//! Secrets (the account key, the TSIG secret, the EAB MAC key) are held here and never appear in
//! an error, a log line or a `Debug` output.

pub mod dns;
mod http;
mod order;
pub mod x509;

pub(crate) use order::parse_credentials;
pub use order::{Issued, Issuer};

use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong; messages name the step and the peer, never a key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("TSIG key {name:?}: {reason}")]
    Tsig { name: String, reason: String },
    #[error("DNS server {server}: {op}: no answer within {after:?}")]
    DnsTimeout {
        server: SocketAddr,
        op: &'static str,
        after: Duration,
    },
    #[error("DNS server {server}: {op}: {reason}")]
    Dns {
        server: SocketAddr,
        op: &'static str,
        reason: String,
    },
    #[error("DNS server {server}: {op}: refused with {rcode}")]
    DnsRefused {
        server: SocketAddr,
        op: &'static str,
        rcode: String,
    },
    #[error("TXT record {name} not visible on {server} after {after:?}")]
    TxtNotVisible {
        server: SocketAddr,
        name: String,
        after: Duration,
    },
    /// The CSR cannot be used at all (not PKCS#10, bad self-signature, wrong key type).
    #[error("CSR refused: {0}")]
    CsrMalformed(String),
    /// The CSR is well-formed but asks for names other than exactly the box's own.
    #[error("the CSR asks for {asked:?}; this device may only ask for [{allowed:?}]")]
    NameNotAllowed { asked: Vec<String>, allowed: String },
    #[error("ACME CA {directory}: {step}: {source}")]
    Acme {
        directory: String,
        step: &'static str,
        #[source]
        source: instant_acme::Error,
    },
    #[error("ACME CA {directory}: {step}: {reason}")]
    AcmeState {
        directory: String,
        step: &'static str,
        reason: String,
    },
    #[error("ACME account credentials {}: {reason}", path.display())]
    Credentials { path: PathBuf, reason: String },
    #[error("HTTPS client for the ACME CA: {0}")]
    HttpSetup(String),
    #[error("certificate chain from the CA refused: {0}")]
    Chain(String),
    #[error("{what} did not finish within {after:?}")]
    Timeout { what: &'static str, after: Duration },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which party a failure belongs to: what the enrolment endpoint answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The box's request (400 `invalid_request`).
    Request,
    /// The box asked for a name it may not have (403 `name_not_allowed`).
    Name,
    /// The operator's DNS server (502 `dns_update_failed`).
    Dns,
    /// The ACME CA, or the authority's side of talking to it (502 `acme_failed`).
    Acme,
}

/// RFC 8555 §6.7: the request was signed for an account the CA does not know.
const ACCOUNT_DOES_NOT_EXIST: &str = "urn:ietf:params:acme:error:accountDoesNotExist";

impl Error {
    /// Whether the CA answered that the account does not exist (it lost it, or a test CA was
    /// restarted): a new account is the cure.
    pub fn account_gone(&self) -> bool {
        matches!(self, Error::Acme { source: instant_acme::Error::Api(p), .. }
            if p.r#type.as_deref() == Some(ACCOUNT_DOES_NOT_EXIST))
    }

    pub fn blame(&self) -> Blame {
        match self {
            Error::CsrMalformed(_) => Blame::Request,
            Error::NameNotAllowed { .. } | Error::InvalidName { .. } => Blame::Name,
            Error::Tsig { .. }
            | Error::DnsTimeout { .. }
            | Error::Dns { .. }
            | Error::DnsRefused { .. }
            | Error::TxtNotVisible { .. } => Blame::Dns,
            Error::Acme { .. }
            | Error::AcmeState { .. }
            | Error::Credentials { .. }
            | Error::HttpSetup(_)
            | Error::Chain(_)
            | Error::Timeout { .. } => Blame::Acme,
        }
    }
}

/// TSIG key (RFC 8945) for the zone's updates.
#[derive(Clone)]
pub struct Tsig {
    /// Key name as configured on the DNS server, e.g. `boxapi-update`
    pub name: String,
    pub algorithm: TsigAlgorithm,
    /// Raw secret (base64-decoded).
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Tsig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tsig")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Where and how the authority updates the operator's zone.
#[derive(Clone, Debug)]
pub struct DnsSettings {
    /// Primary (authoritative) server accepting RFC 2136 updates (over TCP).
    pub server: SocketAddr,
    /// Zone apex, e.g. `box.isp.example`
    pub zone: String,
    pub tsig: Tsig,
    /// Bound on each DNS exchange (connect, send, answer).
    pub request_timeout: Duration,
    /// Bound on waiting for a challenge TXT record to be visible on `server`.
    pub propagation_timeout: Duration,
    /// TTL of the boxes' A/AAAA records and of the challenge TXT records.
    pub ttl: u32,
}

impl DnsSettings {
    pub fn new(server: SocketAddr, zone: impl Into<String>, tsig: Tsig) -> Self {
        Self {
            server,
            zone: zone.into(),
            tsig,
            request_timeout: Duration::from_secs(5),
            propagation_timeout: Duration::from_secs(30),
            ttl: 60,
        }
    }
}

/// External Account Binding (RFC 8555 §7.3.4), for commercial CAs.
#[derive(Clone)]
pub struct Eab {
    pub key_id: String,
    /// Raw MAC key (CAs hand it out base64url-encoded: decoded).
    pub hmac_key: Vec<u8>,
}

impl std::fmt::Debug for Eab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eab")
            .field("key_id", &self.key_id)
            .field("hmac_key", &"<redacted>")
            .finish()
    }
}

/// The authority's ACME CA and account.
#[derive(Clone, Debug)]
pub struct AcmeSettings {
    /// Directory URL, e.g. `https://acme-v02.api.letsencrypt.org/directory`
    pub directory_url: String,
    /// Account credentials JSON (instant-acme `AccountCredentials`, with the account's private
    /// key); created (mode 0600) on first use, loaded afterwards.
    pub credentials_path: PathBuf,
    /// Contact URIs (`mailto:…`) for a new account.
    pub contact: Vec<String>,
    pub eab: Option<Eab>,
    /// Roots trusted for the CA's HTTPS endpoint (DER). `None`: the platform's verifier (system
    /// roots).
    pub https_roots: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
    /// Bound on each HTTP exchange with the CA (connect, headers and body).
    pub request_timeout: Duration,
    /// Bound on polling the order (ready, then certificate).
    pub order_timeout: Duration,
    /// Bound on the whole issuance, DNS included.
    pub total_timeout: Duration,
}

impl AcmeSettings {
    pub fn new(directory_url: impl Into<String>, credentials_path: impl Into<PathBuf>) -> Self {
        Self {
            directory_url: directory_url.into(),
            credentials_path: credentials_path.into(),
            contact: Vec::new(),
            eab: None,
            https_roots: None,
            request_timeout: Duration::from_secs(10),
            order_timeout: Duration::from_secs(60),
            total_timeout: Duration::from_secs(180),
        }
    }
}
