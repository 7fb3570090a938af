//! TLS on the front door (rustls), and refusing plaintext clients when TLS is required.

use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::StartupHandler;
use pgwire::api::ClientInfo;
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {path}: {message}")]
    Pem {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the certificate or key.
    #[error("TLS certificate or key rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// An acceptor for the certificate chain and key in PEM files (pgwire).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    // PostgreSQL 17 clients negotiating TLS directly require this ALPN name.
    acceptor_for(cert, key, &[b"postgresql"])
}

/// An acceptor for the certificate chain and key in PEM files, offering `alpn`.
pub fn acceptor_for(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<TlsAcceptor, TlsError> {
    let pem_err = |path: &Path, e: &dyn std::fmt::Display| TlsError::Pem {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_err(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(cert, &e))?;
    if certs.is_empty() {
        return Err(pem_err(cert, &"no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, &e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Wraps a startup handler so that a client that did not negotiate TLS is refused
/// with FATAL 28000 before authentication starts.
pub struct RequireTls<H> {
    inner: H,
    required: bool,
}

impl<H> RequireTls<H> {
    /// Refuses plaintext clients when `required`.
    pub fn new(inner: H, required: bool) -> Self {
        RequireTls { inner, required }
    }
}

#[async_trait]
impl<H: StartupHandler> StartupHandler for RequireTls<H> {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if self.required
            && matches!(message, PgWireFrontendMessage::Startup(_))
            && !client.is_secure()
        {
            tracing::info!(peer = %client.socket_addr(), "refused plaintext client: TLS is required");
            let mut info = ErrorInfo::new(
                "FATAL".into(),
                switchyard_engine::SqlState::INVALID_AUTHORIZATION
                    .code()
                    .into(),
                "this server requires TLS: connect with sslmode=require".into(),
            );
            info.hint = Some("tls.mode is require in the Switchyard config".into());
            return Err(PgWireError::UserError(Box::new(info)));
        }
        self.inner.on_startup(client, message).await
    }
}
