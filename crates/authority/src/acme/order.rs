//! RFC 8555 issuance with instant-acme, the DNS-01 challenge published through RFC 2136; the
//! account, loaded or created once (creation is serialised); ARI (RFC 9773) renewal windows.
use super::dns::{name_in_zone, txt_add, txt_delete, wait_txt_visible, zone_name};
use super::http::BoundedHttp;
use super::x509::{check_chain, check_csr};
use super::{AcmeSettings, DnsSettings, Error, Result};
use boxapi_core::log;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, ExternalAccountKey,
    Identifier, NewAccount, NewOrder, Order, OrderStatus, RetryPolicy,
};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{Mutex, Semaphore, SemaphorePermit};

/// Issuances running at once; more wait (bounded) for a turn.
pub const MAX_CONCURRENT: usize = 4;

/// What one issuance gives back.
#[derive(Debug)]
pub struct Issued {
    /// PEM chain, leaf first, checked against the name and the CSR's key.
    pub chain: String,
    /// Start of the CA's suggested renewal window (ARI), Unix seconds; `None` when the CA has no
    /// ARI or did not answer it.
    pub renew_after: Option<i64>,
}

/// The authority's ACME client state, kept across configuration reloads: the account (created or
/// loaded once, under a lock, so two first enrolments cannot create two accounts) and the bound
/// on concurrent issuance.
pub struct Issuer {
    account: Mutex<Option<(AccountKey, Account)>>,
    slots: Semaphore,
    /// Names with an enrolment under way: one at a time per name, so that one device (buggy, or
    /// hostile with its device key) cannot take every issuance slot or queue requests for them.
    in_flight: std::sync::Mutex<std::collections::HashSet<String>>,
    /// When an account was last registered again because the CA had lost the one held.
    registered_again: std::sync::Mutex<Option<tokio::time::Instant>>,
}

/// A CA that keeps forgetting accounts (broken, or answering `accountDoesNotExist` wrongly) must
/// not have every enrolment create one: CAs limit new accounts per address (Let's Encrypt: 10 per
/// 3 hours), and the operator's enrolments would all fail once it is spent.
pub const REGISTER_AGAIN_PAUSE: Duration = Duration::from_secs(300);

/// `Err(wait)` while a registration made at `last` is more recent than [`REGISTER_AGAIN_PAUSE`].
fn may_register_again(
    last: Option<tokio::time::Instant>,
    now: tokio::time::Instant,
) -> Result<(), Duration> {
    match last {
        Some(at) if now.duration_since(at) < REGISTER_AGAIN_PAUSE => {
            Err(REGISTER_AGAIN_PAUSE - now.duration_since(at))
        }
        _ => Ok(()),
    }
}

/// A name's turn to enrol, from [`Issuer::claim`]; released when dropped.
pub struct NameClaim<'a> {
    issuer: &'a Issuer,
    name: String,
}

impl Drop for NameClaim<'_> {
    fn drop(&mut self) {
        self.issuer
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.name);
    }
}

/// Which configuration an account belongs to: a change of CA or credentials file loads anew.
#[derive(Clone, PartialEq, Eq)]
struct AccountKey {
    directory: String,
    credentials: PathBuf,
}

impl Default for Issuer {
    fn default() -> Self {
        Issuer {
            account: Mutex::new(None),
            slots: Semaphore::new(MAX_CONCURRENT),
            in_flight: std::sync::Mutex::new(std::collections::HashSet::new()),
            registered_again: std::sync::Mutex::new(None),
        }
    }
}

impl Issuer {
    /// For `ctl status`: issuances running now, and the account's state (`"loaded"`, `"loading"`
    /// while it is being loaded or created, `"not loaded"`), without waiting.
    pub fn status(&self) -> (usize, &'static str) {
        let running = MAX_CONCURRENT - self.slots.available_permits();
        let account = match self.account.try_lock() {
            Ok(held) if held.is_some() => "loaded",
            Ok(_) => "not loaded",
            Err(_) => "loading",
        };
        (running, account)
    }

    /// The name's turn to enrol, or `None` when an enrolment for that name is already under way.
    pub fn claim(&self, name: &str) -> Option<NameClaim<'_>> {
        let mut names = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        names.insert(name.to_owned()).then(|| NameClaim {
            issuer: self,
            name: name.to_owned(),
        })
    }

    /// Waits at most `wait` for one of the issuance slots.
    pub async fn slot(&self, wait: Duration) -> Option<SemaphorePermit<'_>> {
        tokio::time::timeout(wait, self.slots.acquire())
            .await
            .ok()?
            .ok()
    }

    /// The account: the one in use, else loaded from its credentials file, else created (with
    /// EAB when configured) and stored there (mode 0600).
    pub async fn account(&self, acme: &AcmeSettings) -> Result<Account> {
        self.held_or_new(acme, None).await
    }

    /// A new account in place of `gone`, which the CA says does not exist: created as at first
    /// start (contact, EAB) and stored over the credentials file. Enrolments that meet the same
    /// gone account together create one account.
    async fn register_again(&self, acme: &AcmeSettings, gone: &Account) -> Result<Account> {
        self.held_or_new(acme, Some(gone)).await
    }

    /// The account held for this CA and credentials file unless it is `gone`; else, under the
    /// lock, loaded from the file or created (created when the file's account is `gone`).
    async fn held_or_new(&self, acme: &AcmeSettings, gone: Option<&Account>) -> Result<Account> {
        let key = AccountKey {
            directory: acme.directory_url.clone(),
            credentials: acme.credentials_path.clone(),
        };
        let mut held = self.account.lock().await;
        if let Some((k, account)) = held.as_ref() {
            // With `gone`, another enrolment may have registered again first.
            if *k == key && gone.is_none_or(|g| g.id() != account.id()) {
                return Ok(account.clone());
            }
        }
        if gone.is_some() {
            let last = *self
                .registered_again
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Err(wait) = may_register_again(last, tokio::time::Instant::now()) {
                return Err(Error::AcmeState {
                    directory: acme.directory_url.clone(),
                    step: "registering a new account",
                    reason: format!(
                        "the CA no longer knows the account registered again less than {} s ago; not registering another for {} s",
                        REGISTER_AGAIN_PAUSE.as_secs(),
                        wait.as_secs()
                    ),
                });
            }
        }
        let make = async {
            match gone {
                Some(gone) => {
                    log::event(
                        "acme_account_gone",
                        &[("account", gone.id()), ("directory", &acme.directory_url)],
                    );
                    create(acme, Box::new(BoundedHttp::new(acme)?)).await
                }
                None => load_or_create(acme).await,
            }
        };
        let account = tokio::time::timeout(acme.total_timeout, make)
            .await
            .map_err(|_| Error::Timeout {
                what: "loading or creating the ACME account",
                after: acme.total_timeout,
            })??;
        if gone.is_some() {
            *self
                .registered_again
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(tokio::time::Instant::now());
        }
        *held = Some((key, account.clone()));
        Ok(account)
    }

    /// Obtains a certificate for exactly `name` (under `dns.zone`) for the box's CSR, proving
    /// control with DNS-01 through RFC 2136. The CSR is checked before any network exchange; the
    /// chain is checked against `name` and the CSR's key before it is returned.
    pub async fn issue(
        &self,
        acme: &AcmeSettings,
        dns: &DnsSettings,
        csr_der: &[u8],
        name: &str,
    ) -> Result<Issued> {
        let zone = zone_name(&dns.zone)?;
        let name = name_in_zone(name, &zone)?.to_string();
        let name = name.trim_end_matches('.');
        let csr_spki = check_csr(csr_der, name)?;
        // One deadline for the whole issuance; the challenge records are withdrawn after it too
        // (`issue_with`), never left behind by a cancelled future.
        let deadline = tokio::time::Instant::now() + acme.total_timeout;
        let timed_out = |_| Error::Timeout {
            what: "issuance",
            after: acme.total_timeout,
        };
        let mut account = tokio::time::timeout_at(deadline, self.account(acme))
            .await
            .map_err(timed_out)??;
        let chain = match issue_with(&account, acme, dns, csr_der, name, deadline).await {
            // The CA no longer knows the account (a CA that lost it, a test CA restarted):
            // register again, once, and issue with the new one.
            Err(e) if e.account_gone() => {
                account = tokio::time::timeout_at(deadline, self.register_again(acme, &account))
                    .await
                    .map_err(timed_out)??;
                issue_with(&account, acme, dns, csr_der, name, deadline).await?
            }
            other => other?,
        };
        let leaf = check_chain(&chain, name, &csr_spki)?;
        // ARI is advice: a CA that fails to answer it does not fail the enrolment.
        let renew_after = match tokio::time::timeout(
            acme.request_timeout,
            renewal_window(&account, &acme.directory_url, &leaf),
        )
        .await
        {
            Ok(Ok(w)) => w,
            Ok(Err(e)) => {
                log::event("acme_renewal_info_failed", &[("error", &e.to_string())]);
                None
            }
            Err(_) => None,
        };
        Ok(Issued { chain, renew_after })
    }
}

async fn issue_with(
    account: &Account,
    acme: &AcmeSettings,
    dns: &DnsSettings,
    csr_der: &[u8],
    name: &str,
    deadline: tokio::time::Instant,
) -> Result<String> {
    let timed_out = |_| Error::Timeout {
        what: "issuance",
        after: acme.total_timeout,
    };
    let ids = [Identifier::Dns(name.to_owned())];
    let mut order = tokio::time::timeout_at(deadline, account.new_order(&NewOrder::new(&ids)))
        .await
        .map_err(timed_out)?
        .map_err(|source| Error::Acme {
            directory: acme.directory_url.clone(),
            step: "new order",
            source,
        })?;
    let mut published = Vec::new();
    let res = tokio::time::timeout_at(
        deadline,
        authorize_and_finalize(acme, dns, &mut order, csr_der, name, &mut published),
    )
    .await
    .map_err(timed_out)
    .and_then(|r| r);
    // Always withdraw the challenge records (each bounded by the DNS request timeout).
    for (fqdn, value) in published {
        if let Err(e) = txt_delete(dns, &fqdn, &value).await {
            log::event(
                "acme_challenge_cleanup_failed",
                &[("record", &fqdn), ("error", &e.to_string())],
            );
        }
    }
    res
}

async fn authorize_and_finalize(
    acme: &AcmeSettings,
    dns: &DnsSettings,
    order: &mut Order,
    csr_der: &[u8],
    name: &str,
    published: &mut Vec<(String, String)>,
) -> Result<String> {
    let dir = || acme.directory_url.clone();
    let err = |step: &'static str| {
        move |source| Error::Acme {
            directory: dir(),
            step,
            source,
        }
    };
    let state = |step: &'static str, reason: String| Error::AcmeState {
        directory: dir(),
        step,
        reason,
    };
    let retry = RetryPolicy::new().timeout(acme.order_timeout);

    let mut authzs = order.authorizations();
    while let Some(authz) = authzs.next().await {
        let mut authz = authz.map_err(err("fetch authorization"))?;
        match authz.status {
            AuthorizationStatus::Valid => continue, // an authorization the CA reuses
            AuthorizationStatus::Pending => {}
            other => {
                return Err(state(
                    "authorization",
                    format!("authorization is {other:?}"),
                ))
            }
        }
        let mut challenge = authz
            .challenge(ChallengeType::Dns01)
            .ok_or_else(|| state("authorization", "the CA offers no dns-01 challenge".into()))?;
        let ident = challenge.identifier().to_string();
        if !ident.eq_ignore_ascii_case(name) {
            return Err(state(
                "authorization",
                format!("authorization for {ident}, expected {name}"),
            ));
        }
        let fqdn = format!("_acme-challenge.{name}");
        let value = challenge.key_authorization().dns_value();
        // Listed before it is added: a deadline that cancels the addition half-way still
        // withdraws it.
        published.push((fqdn.clone(), value.clone()));
        txt_add(dns, &fqdn, &value).await?;
        wait_txt_visible(dns, &fqdn, &value).await?;
        challenge
            .set_ready()
            .await
            .map_err(err("set challenge ready"))?;
    }

    let status = order
        .poll_ready(&retry)
        .await
        .map_err(err("wait for the order to be ready"))?;
    if status != OrderStatus::Ready {
        return Err(state("validation", invalid_reason(order).await));
    }
    order.finalize_csr(csr_der).await.map_err(err("finalize"))?;
    order
        .poll_certificate(&retry)
        .await
        .map_err(err("download the certificate"))
}

/// Best effort: the CA's reasons for an invalid order (challenge errors).
async fn invalid_reason(order: &mut Order) -> String {
    let mut reasons = Vec::new();
    if let Some(e) = &order.state().error {
        reasons.push(e.to_string());
    }
    let mut authzs = order.authorizations();
    while let Some(Ok(mut a)) = authzs.next().await {
        if let Ok(state) = a.refresh().await {
            reasons.extend(
                state
                    .challenges
                    .iter()
                    .filter_map(|c| c.error.as_ref())
                    .map(|p| p.to_string()),
            );
        }
    }
    if reasons.is_empty() {
        "the order became invalid".into()
    } else {
        format!("the order is invalid: {}", reasons.join("; "))
    }
}

async fn load_or_create(acme: &AcmeSettings) -> Result<Account> {
    let path = &acme.credentials_path;
    let cred_err = |reason: String| Error::Credentials {
        path: path.clone(),
        reason,
    };
    let acme_err = |step: &'static str| {
        move |source| Error::Acme {
            directory: acme.directory_url.clone(),
            step,
            source,
        }
    };
    let http = Box::new(BoundedHttp::new(acme)?);
    // A small local file: read directly (a regular file within its limit only).
    match boxapi_core::files::read_limited(path, boxapi_core::files::limit::SECRET) {
        Ok(bytes) => {
            // serde_json's messages name the position, never the content.
            let creds = parse_credentials(&bytes, &acme.directory_url).map_err(cred_err)?;
            Account::builder_with_http(http)
                .from_credentials(creds)
                .await
                .map_err(acme_err("load the account (directory)"))
        }
        Err(e) if e.is_not_found() => create(acme, http).await,
        Err(e) => Err(cred_err(e.to_string())),
    }
}

/// A new account at the CA (contact, terms agreed, EAB when configured), its credentials stored
/// in the credentials file (mode 0600, atomically, over any previous one).
async fn create(acme: &AcmeSettings, http: Box<BoundedHttp>) -> Result<Account> {
    let path = &acme.credentials_path;
    let cred_err = |reason: String| Error::Credentials {
        path: path.clone(),
        reason,
    };
    let contact: Vec<&str> = acme.contact.iter().map(String::as_str).collect();
    let eab = acme
        .eab
        .as_ref()
        .map(|e| ExternalAccountKey::new(e.key_id.clone(), &e.hmac_key));
    let (account, creds) = Account::builder_with_http(http)
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            acme.directory_url.clone(),
            eab.as_ref(),
        )
        .await
        .map_err(|source| Error::Acme {
            directory: acme.directory_url.clone(),
            step: "create the account",
            source,
        })?;
    let json = serde_json::to_vec_pretty(&creds).map_err(|e| cred_err(e.to_string()))?;
    // Never half a file, never readable by others.
    boxapi_core::files::write_atomic(path, &json, 0o600).map_err(|e| cred_err(e.to_string()))?;
    log::event(
        "acme_account_created",
        &[
            ("account", account.id()),
            ("directory", &acme.directory_url),
        ],
    );
    Ok(account)
}

/// The stored credentials, refused when they belong to another CA than the configured one.
pub(crate) fn parse_credentials(
    bytes: &[u8],
    directory: &str,
) -> Result<AccountCredentials, String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if let Some(d) = value.get("directory").and_then(|d| d.as_str()) {
        if d != directory {
            return Err(format!("the account belongs to {d}, not {directory}"));
        }
    }
    serde_json::from_value(value).map_err(|e| format!("not ACME account credentials: {e}"))
}

/// ACME ARI (RFC 9773): the start of the CA's suggested renewal window for `leaf_der`, Unix
/// seconds; `Ok(None)` when the CA has no ARI (Pebble 2.4 has none).
async fn renewal_window(
    account: &Account,
    directory: &str,
    leaf_der: &[u8],
) -> Result<Option<i64>> {
    let cert = rustls::pki_types::CertificateDer::from(leaf_der.to_vec());
    let id = instant_acme::CertificateIdentifier::try_from(&cert)
        .map_err(|e| Error::Chain(format!("certificate identifier: {e}")))?;
    match account.renewal_info(&id).await {
        Ok((info, _retry_after)) => Ok(Some(info.suggested_window.start.unix_timestamp())),
        Err(instant_acme::Error::Unsupported(_)) => Ok(None),
        Err(source) => Err(Error::Acme {
            directory: directory.to_owned(),
            step: "renewal information",
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_registered_again_at_most_every_five_minutes() {
        let now = tokio::time::Instant::now();
        assert!(may_register_again(None, now).is_ok());
        let wait = may_register_again(Some(now), now + Duration::from_secs(60)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(240));
        assert!(may_register_again(Some(now), now + REGISTER_AGAIN_PAUSE).is_ok());
    }

    #[test]
    fn one_enrolment_per_name_at_a_time() {
        let issuer = Issuer::default();
        let a = issuer.claim("a.box.test").expect("first claim");
        assert!(
            issuer.claim("a.box.test").is_none(),
            "second claim while held"
        );
        let b = issuer.claim("b.box.test");
        assert!(b.is_some(), "other names are independent");
        drop(a);
        assert!(issuer.claim("a.box.test").is_some(), "released on drop");
    }
}
