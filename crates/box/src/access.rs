//! One access check: the rules a token-protected request meets once its route is known, made for
//! every request and again before each line of a counters stream, and the request's log line.
use crate::app::App;
use crate::snapshot::Snapshot;
use boxapi_core::auth::{Remembered, Scopes, TokenError};
use boxapi_core::control::{Mode, Sections};
use boxapi_core::cors::Origin;
use boxapi_core::fair::Terminal;
use std::time::Instant;

/// Why access is denied; `Display` is the problem's `detail`.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    #[error("no bearer token: send \"Authorization: Bearer <access token>\"")]
    MissingToken,
    #[error(transparent)]
    InvalidToken(#[from] TokenError),
    #[error("the token does not grant the \"{}\" scope this endpoint needs", .0.name())]
    InsufficientScope(Scope),
    #[error("{0}")]
    OriginNotAllowed(&'static str),
    #[error("the operator has suspended this API for now; retry after {0} s")]
    Suspended(u64),
    #[error(
        "the box's clock is not set yet (no NTP answer); tokens cannot be checked, retry shortly"
    )]
    ClockUnsynchronized,
}

/// The detail of a refused `Origin` (not a registered, non-revoked tool's).
pub const ORIGIN_REFUSED: &str = "this Origin is not the origin of an allowed measurement tool";

/// The scope a token-protected route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Access,
    Counters,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Access => "access",
            Scope::Counters => "counters",
        }
    }

    fn bits(self) -> Scopes {
        match self {
            Scope::Access => Scopes::ACCESS,
            Scope::Counters => Scopes::COUNTERS,
        }
    }
}

/// What a request is given: rights in effect are the token's scopes ∩ the tool's registration
/// (the verifier's) ∩ the subscriber's choices (withheld sections are `null`, not refused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Index of the tool in the registry of the snapshot that checked it.
    pub tool: usize,
    pub scopes: Scopes,
    /// The card sections the subscriber withholds from this tool now.
    pub withheld: Sections,
}

/// One request as the rules and the log see it: who asks, from which page, since when, and (once
/// its token is verified, whatever a later rule says) for which tool.
#[derive(Clone, Copy)]
pub struct Context {
    /// Who the request counts against (rate limit, one stream each).
    pub terminal: Terminal,
    /// The page's `Origin`, judged against the registry of the snapshot in force.
    pub origin: Origin,
    /// The verified token's tool, in that snapshot's registry.
    pub tool: Option<usize>,
    pub started: Instant,
}

/// Suspension: the first rule of every route once the request itself is acceptable.
pub fn suspension(app: &App) -> Result<(), Denied> {
    match app.control.mode() {
        Mode::Suspended { retry_after } => Err(Denied::Suspended(retry_after)),
        // The operator's fleet restriction answers as `ctl suspend` does (issue 23).
        _ => app
            .fleet
            .suspended()
            .map_or(Ok(()), |r| Err(Denied::Suspended(r))),
    }
}

impl Context {
    pub fn new(terminal: Terminal, origin: Origin) -> Self {
        Context {
            terminal,
            origin,
            tool: None,
            started: Instant::now(),
        }
    }

    /// The rules of a token-protected route, in the contract's order: suspension (503), clock set
    /// (503), a bearer token (401) that verifies (401; `memo` remembers the last one, so the same
    /// bytes again cost a comparison and the tool's revocation and window), the page's origin
    /// belongs to the token's tool (403), the route's scope (403). A refused `Origin` never gets
    /// this far on a new request; on a stream's line it is judged here, after the token, so that
    /// a revoked tool's stream ends as revoked.
    pub fn check(
        &mut self,
        app: &App,
        snap: &Snapshot,
        token: Result<&[u8], Denied>,
        scope: Scope,
        memo: &mut Remembered,
    ) -> Result<Grant, Denied> {
        suspension(app)?;
        let now = boxapi_core::time::unix_now();
        if boxapi_core::time::clock_is_unset(now) {
            return Err(Denied::ClockUnsynchronized);
        }
        let token = token?;
        let revoked = |id: &str| app.control.is_revoked(id);
        let registry = &snap.trust.registry;
        let verified = snap
            .trust
            .verifier
            .verify_remembered(token, now, registry, &revoked, memo)?;
        self.tool = Some(verified.tool);
        match self.origin {
            Origin::Allowed { tool } if tool != verified.tool => {
                return Err(Denied::OriginNotAllowed(
                    "this page's origin belongs to another tool than the token",
                ))
            }
            Origin::Refused => return Err(Denied::OriginNotAllowed(ORIGIN_REFUSED)),
            _ => {}
        }
        if !verified.scopes.contains(scope.bits()) {
            return Err(Denied::InsufficientScope(scope));
        }
        let withheld = registry
            .get(verified.tool)
            .map(|t| app.control.withheld_for(&t.id))
            .unwrap_or_default();
        Ok(Grant {
            tool: verified.tool,
            scopes: verified.scopes,
            withheld,
        })
    }

    /// The request's one access-log line (contract §8), and, for a success of a verified tool,
    /// its activity (the subscriber's "who read my data").
    pub fn log(&self, app: &App, snap: &Snapshot, method: &str, path: &str, status: u16) {
        let tool = self
            .tool
            .and_then(|i| snap.trust.registry.get(i))
            .map(|t| t.id.as_str());
        if let Some(id) = tool.filter(|_| (200..300).contains(&status)) {
            app.activity
                .record(id, boxapi_core::time::unix_now() as i64);
        }
        let elapsed = self.started.elapsed().as_micros() as u64;
        boxapi_core::log::access(tool, method, path, status, elapsed);
    }
}
