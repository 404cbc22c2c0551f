//! Errors of the shared store. Every variant means "the check could not be made": the token
//! endpoint must then fail closed (503 + Retry-After), never issue an unchecked token.
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis did not answer in time (slow, frozen, or the network drops packets).
    #[error("the shared store did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// No connection (refused, reset, DNS, TLS handshake...). The connection manager keeps
    /// reconnecting in the background; the next calls succeed once Redis is back.
    #[error("the shared store is unreachable: {0}")]
    Unavailable(String),
    /// Redis refused our credentials (AUTH / ACL user) or the ACL user lacks a permission.
    /// Not transient from our side: an operator must fix the configuration or the ACL.
    #[error("the shared store refused our credentials or permissions: {0}")]
    Auth(String),
    /// The settings cannot work (bad URL, TLS without a usable root, ...).
    #[error("invalid shared-store settings: {0}")]
    Config(String),
    /// The in-memory store reached its bound: refusing is safer than forgetting a used `jti`.
    #[error("the in-memory store is full ({0} entries)")]
    Full(usize),
    /// Redis answered something we did not expect (a key of the wrong type, a script error...).
    #[error("the shared store answered unexpectedly: {0}")]
    Protocol(String),
    /// The revocation list has not been refreshed for too long: a revocation made on another
    /// replica might be missed, so callers must not trust it.
    #[error("the revocation list is stale (last refreshed {} ms ago)", .0.as_millis())]
    Stale(Duration),
}

impl StoreError {
    /// A short, stable label for metrics (`store_errors_total{kind=...}`) and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Timeout(_) => "timeout",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Auth(_) => "auth",
            StoreError::Config(_) => "config",
            StoreError::Full(_) => "full",
            StoreError::Protocol(_) => "protocol",
            StoreError::Stale(_) => "stale",
        }
    }

    /// The `Retry-After` (seconds) to send with the 503 this error turns into: reconnection
    /// normally takes well under a second, so clients are asked to come back soon; a full
    /// replay cache drains as assertions expire (at most 5 minutes, usually much sooner).
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            StoreError::Timeout(_) | StoreError::Unavailable(_) | StoreError::Stale(_) => 2,
            StoreError::Full(_) => 30,
            StoreError::Auth(_) | StoreError::Config(_) | StoreError::Protocol(_) => 60,
        }
    }
}

impl From<boxapi_core::grants::GrantError> for StoreError {
    fn from(e: boxapi_core::grants::GrantError) -> Self {
        match e {
            boxapi_core::grants::GrantError::Full(n) => StoreError::Full(n),
        }
    }
}

impl StoreError {
    /// Classifies a Redis error. `timeout` is the bound the client was given: its timeouts are
    /// the same event as ours and get the same kind (docs/authorization.md's metrics).
    pub fn from_redis(e: redis::RedisError, timeout: Duration) -> Self {
        use redis::ErrorKind;
        // The code, when Redis sent one (WRONGPASS, NOPERM, WRONGTYPE...), is the most useful part.
        let code = e.code().map(str::to_owned);
        match e.kind() {
            ErrorKind::AuthenticationFailed => StoreError::Auth(e.to_string()),
            _ if matches!(code.as_deref(), Some("WRONGPASS" | "NOPERM" | "NOAUTH")) => {
                StoreError::Auth(e.to_string())
            }
            ErrorKind::InvalidClientConfig => StoreError::Config(e.to_string()),
            _ if e.is_timeout() => StoreError::Timeout(timeout),
            ErrorKind::Io => StoreError::Unavailable(e.to_string()),
            _ if e.is_connection_dropped() || e.is_connection_refusal() => {
                StoreError::Unavailable(e.to_string())
            }
            ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
            | ErrorKind::Server(redis::ServerErrorKind::MasterDown)
            | ErrorKind::Server(redis::ServerErrorKind::TryAgain)
            | ErrorKind::Server(redis::ServerErrorKind::ReadOnly) => {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Protocol(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_timeout_is_a_timeout_not_unavailable() {
        let bound = Duration::from_millis(500);
        let timed_out = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(StoreError::from_redis(timed_out, bound).kind(), "timeout");
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(StoreError::from_redis(refused, bound).kind(), "unavailable");
    }
}
