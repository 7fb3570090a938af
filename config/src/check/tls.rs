//! `tls:`: the listener's certificate and key.

use super::{line, Checker};
use crate::raw::{self, TlsModeName};
use crate::{Result, Tls, TlsMode};

impl Checker<'_> {
    pub(super) fn tls(&self, raw: Option<&raw::RawTls>) -> Result<Tls> {
        let Some(raw) = raw else {
            return Ok(Tls {
                mode: TlsMode::Disable,
                cert: None,
                key: None,
            });
        };
        let mode = match raw.mode.value {
            TlsModeName::Disable => TlsMode::Disable,
            TlsModeName::Allow => TlsMode::Allow,
            TlsModeName::Require => TlsMode::Require,
        };
        if mode == TlsMode::Disable {
            return Ok(Tls {
                mode,
                cert: None,
                key: None,
            });
        }
        let mut files = Vec::new();
        for (field, value) in [("cert", &raw.cert), ("key", &raw.key)] {
            let Some(value) = value else {
                return Err(self.err(
                    line(&raw.mode),
                    format!("tls.{field} is required when tls.mode is not disable"),
                    format!("add tls.{field}: path/to/{field}.pem, or set mode: disable"),
                ));
            };
            let path = self.path(value, &format!("tls.{field}"))?;
            if !path.is_file() {
                return Err(self.err(
                    line(value),
                    format!("TLS {field} file {} does not exist", path.display()),
                    "give the path of a PEM file (relative paths are read from the config file's folder)",
                ));
            }
            files.push(path);
        }
        let key = files.pop();
        let cert = files.pop();
        Ok(Tls { mode, cert, key })
    }
}
