//! Who a request is from: HTTP Basic with a configured user's password, or
//! `Authorization: Bearer <token>` with one of a user's `tokens:`.

use axum::http::HeaderMap;
use base64::Engine as _;
use ring::digest::{digest, SHA256};
use switchyard_config::User;

/// Users' credentials, digested once at start (compared in constant time).
pub struct Credentials {
    passwords: Vec<(String, Vec<u8>)>,
    tokens: Vec<(String, Vec<u8>)>,
}

impl Credentials {
    /// The credentials of `users`.
    pub fn new(users: &[User]) -> Self {
        Credentials {
            passwords: users
                .iter()
                .map(|u| (u.name.clone(), sha(&u.password)))
                .collect(),
            tokens: users
                .iter()
                .flat_map(|u| u.tokens.iter().map(|t| (u.name.clone(), sha(t))))
                .collect(),
        }
    }

    /// Whether `password` is `name`'s.
    pub fn password_of(&self, name: &str, password: &str) -> bool {
        let given = sha(password);
        self.passwords
            .iter()
            .any(|(u, d)| u == name && same(d, &given))
    }

    /// The user `token` belongs to.
    pub fn token_of(&self, token: &str) -> Option<String> {
        let given = sha(token);
        self.tokens
            .iter()
            .find(|(_, t)| same(t, &given))
            .map(|(u, _)| u.clone())
    }

    /// The user the `Authorization` header proves, if any.
    pub fn user(&self, headers: &HeaderMap) -> Option<String> {
        let value = headers
            .get(axum::http::header::AUTHORIZATION)?
            .to_str()
            .ok()?;
        let (scheme, rest) = value.split_once(' ')?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            let given = sha(rest);
            // Every token is compared, so the time taken does not tell which matched.
            let mut found = None;
            for (user, token) in &self.tokens {
                if same(token, &given) && found.is_none() {
                    found = Some(user.clone());
                }
            }
            found
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (name, password) = text.split_once(':')?;
            let given = sha(password);
            let stored = self.passwords.iter().find(|(u, _)| u == name);
            // An unknown user is compared against a digest nobody has, taking the same time.
            let nobody = sha("\u{0}unknown user\u{0}");
            let (matches, known) = match stored {
                Some((_, d)) => (same(d, &given), true),
                None => (same(&nobody, &given), false),
            };
            (matches && known).then(|| name.to_string())
        } else {
            None
        }
    }
}

fn sha(text: &str) -> Vec<u8> {
    digest(&SHA256, text.as_bytes()).as_ref().to_vec()
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
