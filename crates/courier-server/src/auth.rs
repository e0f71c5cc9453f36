//! JWT verification with the algorithm pinned, claims, and channel authorization.

use std::time::{SystemTime, UNIX_EPOCH};

use courier_core::{ChannelName, ChannelPattern, ErrorCode};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::AuthConfig;

/// The role a token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A person: reads `global`, `user.{sub}` and granted channels.
    #[default]
    User,
    /// A backend service: publishes and reads anywhere.
    Service,
    /// An operator: reads and publishes anywhere, like a service, and may use the admin API
    /// and console (`/admin`).
    Admin,
}

impl Role {
    /// Every role, in the order `token --role` lists them.
    pub const ALL: [Role; 3] = [Role::User, Role::Service, Role::Admin];

    /// The role as tokens spell it (`user`, `service`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Service => "service",
            Role::Admin => "admin",
        }
    }

    /// Services and admins read and publish on any channel.
    pub fn is_privileged(self) -> bool {
        matches!(self, Role::Service | Role::Admin)
    }
}

/// The claims Courier reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: the user or service id.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Issued at, Unix seconds.
    #[serde(default)]
    pub iat: u64,
    /// `user` (default), `service` or `admin`.
    #[serde(default)]
    pub role: Role,
    /// Patterns granted for reading.
    #[serde(default)]
    pub channels: Vec<ChannelPattern>,
    /// Patterns granted for publishing (users only; services and admins publish anywhere).
    #[serde(default)]
    pub publish: Vec<ChannelPattern>,
    /// Rate-limit tier: one of the server's `rate_limits.tiers` (by default `standard`,
    /// `premium`, `service`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Not before, Unix seconds: the token is refused until then (minus the leeway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer, checked when the server sets `auth.issuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience, checked when the server sets `auth.audience`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

impl Claims {
    /// The rate-limit tier: the claim, else `service` for services, else `standard`.
    pub fn tier(&self) -> &str {
        match (&self.tier, self.role) {
            (Some(t), _) => t,
            (None, Role::Service | Role::Admin) => "service",
            (None, Role::User) => "standard",
        }
    }

    /// Whether this token may read `channel`.
    pub fn can_read(&self, channel: &ChannelName) -> bool {
        self.role.is_privileged()
            || channel.as_str() == "global"
            || channel.user_id() == Some(self.sub.as_str())
            || self.channels.iter().any(|p| p.matches(channel))
    }

    /// Whether this token may publish to `channel`.
    pub fn can_publish(&self, channel: &ChannelName) -> bool {
        self.role.is_privileged() || self.publish.iter().any(|p| p.matches(channel))
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    /// `UNAUTHORIZED` or `TOKEN_EXPIRED`.
    pub code: ErrorCode,
    /// What was wrong (never the token itself).
    pub message: String,
}

impl AuthError {
    fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::Unauthorized,
            message: message.into(),
        }
    }
}

/// Verifies tokens; one key per accepted algorithm, chosen by the header's `alg` and never
/// by anything else, so a token cannot pick how it is checked.
pub struct Verifier {
    hs256: Option<DecodingKey>,
    rs256: Option<DecodingKey>,
    leeway: u64,
    issuer: Option<String>,
    audience: Vec<String>,
    /// The tiers a token may name; `None` accepts any (rate limits off).
    tiers: Option<Vec<String>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("hs256", &self.hs256.is_some())
            .field("rs256", &self.rs256.is_some())
            .finish()
    }
}

impl Verifier {
    /// Builds the verifier; fails if RS256 is listed with an unreadable key. `tiers` lists the
    /// rate-limit tiers a token may name (`None`: any).
    pub fn new(config: &AuthConfig, tiers: Option<Vec<String>>) -> Result<Self, String> {
        let wants = |alg: &str| {
            config
                .algorithms
                .iter()
                .any(|a| a.eq_ignore_ascii_case(alg))
        };
        for alg in &config.algorithms {
            if !alg.eq_ignore_ascii_case("HS256") && !alg.eq_ignore_ascii_case("RS256") {
                return Err(format!(
                    "unsupported JWT algorithm `{alg}`: use HS256 and/or RS256"
                ));
            }
        }
        let hs256 = (wants("HS256") && !config.jwt_secret.is_empty())
            .then(|| DecodingKey::from_secret(config.jwt_secret.as_bytes()));
        let rs256 = match (&config.rsa_public_key_pem, wants("RS256")) {
            (Some(pem), true) => Some(
                DecodingKey::from_rsa_pem(pem.as_bytes())
                    .map_err(|e| format!("invalid RSA public key: {e}"))?,
            ),
            _ => None,
        };
        if hs256.is_none() && rs256.is_none() {
            return Err(
                "no JWT algorithm is usable: set auth.jwt_secret or an RSA public key".into(),
            );
        }
        Ok(Self {
            hs256,
            rs256,
            leeway: config.leeway_secs,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            tiers,
        })
    }

    /// Verifies `token` and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            AuthError::unauthorized("token is malformed or uses an unsupported algorithm")
        })?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::RS256 => self.rs256.as_ref(),
            _ => None,
        }
        .ok_or_else(|| {
            AuthError::unauthorized(format!("algorithm {:?} is not accepted", header.alg))
        })?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        if self.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audience);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError {
                code: ErrorCode::TokenExpired,
                message: "token has expired".into(),
            },
            jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                AuthError::unauthorized("token signature is invalid")
            }
            jsonwebtoken::errors::ErrorKind::ImmatureSignature => AuthError::unauthorized(
                "token is not valid yet (`nbf` is in the future): check the issuer's clock or auth.leeway_secs",
            ),
            jsonwebtoken::errors::ErrorKind::InvalidIssuer => AuthError::unauthorized(format!(
                "token `iss` is not the configured issuer `{}`",
                self.issuer.as_deref().unwrap_or_default()
            )),
            jsonwebtoken::errors::ErrorKind::InvalidAudience => AuthError::unauthorized(format!(
                "token `aud` names none of the configured audiences ({})",
                self.audience.join(", ")
            )),
            jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(c) => {
                AuthError::unauthorized(format!("token has no `{c}` claim, which this server requires"))
            }
            _ => AuthError::unauthorized(format!("token is invalid: {e}")),
        })?;
        if data.claims.sub.is_empty() {
            return Err(AuthError::unauthorized("token has an empty `sub`"));
        }
        if let (Some(tier), Some(known)) = (&data.claims.tier, &self.tiers) {
            if !known.iter().any(|k| k == tier) {
                return Err(AuthError::unauthorized(format!(
                    "token `tier` `{tier}` is not one of the server's tiers ({}): an unknown tier would get no limits of its own",
                    known.join(", ")
                )));
            }
        }
        Ok(data.claims)
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs an HS256 token (for `courier-server token`, tests and the demo).
pub fn sign_hs256(secret: &str, claims: &Claims) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}

/// Claims for `sub` valid for `ttl_secs`.
pub fn claims_for(sub: &str, role: Role, channels: Vec<ChannelPattern>, ttl_secs: u64) -> Claims {
    let now = unix_now();
    Claims {
        sub: sub.to_owned(),
        exp: now + ttl_secs,
        iat: now,
        role,
        channels,
        publish: Vec::new(),
        tier: None,
        nbf: None,
        iss: None,
        aud: None,
    }
}
