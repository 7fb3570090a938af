//! SCRAM-SHA-256 against the configured users.

use std::collections::HashMap;

use async_trait::async_trait;
use pgwire::api::auth::sasl::scram::gen_salted_password;
use pgwire::api::auth::{AuthSource, LoginInfo, Password};
use pgwire::error::{PgWireError, PgWireResult};
use ring::rand::{SecureRandom, SystemRandom};
use switchyard_config::User;

/// PBKDF2 iterations, as PostgreSQL's default `scram_iterations`.
pub const SCRAM_ITERATIONS: usize = 4096;

/// Salted SCRAM secrets of every user, derived once at start.
pub struct Users {
    secrets: HashMap<String, (Vec<u8>, Vec<u8>)>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users")
            .field("names", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Users {
    /// Derives a secret per user, each with its own random salt.
    pub fn new(users: &[User]) -> Self {
        let rng = SystemRandom::new();
        let secrets = users
            .iter()
            .map(|u| {
                let salt = random_bytes(&rng, 16);
                let salted = gen_salted_password(&u.password, &salt, SCRAM_ITERATIONS);
                (u.name.clone(), (salt, salted))
            })
            .collect();
        Users { secrets, rng }
    }

    /// Whether `name` is a configured user.
    pub fn contains(&self, name: &str) -> bool {
        self.secrets.contains_key(name)
    }
}

fn random_bytes(rng: &SystemRandom, n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    rng.fill(&mut bytes).expect("system randomness");
    bytes
}

#[async_trait]
impl AuthSource for Users {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().ok_or(PgWireError::UserNameRequired)?;
        match self.secrets.get(user) {
            Some((salt, salted)) => Ok(Password::new(Some(salt.clone()), salted.clone())),
            // An unknown user runs the same exchange against a secret nobody knows, so the
            // answer (28P01) does not reveal which user names exist.
            None => Ok(Password::new(
                Some(random_bytes(&self.rng, 16)),
                random_bytes(&self.rng, 32),
            )),
        }
    }
}
