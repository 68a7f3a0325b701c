//! HTTPS on the push port: `server.tls_cert` and `server.tls_key`, PEM
//! files, served with rustls and read again when they change, so that a
//! renewed certificate (certbot, acme.sh, a secret manager) is taken up
//! without a restart. WeChat calls only ports 80 and 443 and, on 443, needs
//! a certificate it trusts (WeChat's "消息推送" configuration page).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often, at most, the files are checked for a change (on a handshake).
const RECHECK: Duration = Duration::from_secs(2);

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM item of its kind.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key is of a kind rustls cannot sign with, or the TLS settings
    /// could not be built.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The certificate chain and key, reloaded when either file changes, or
/// taken from other files by [`CertificateFiles::replace`] (a configuration
/// reload).
#[derive(Debug)]
pub struct CertificateFiles {
    current: RwLock<Loaded>,
    checked: Mutex<Instant>,
}

#[derive(Debug)]
struct Loaded {
    cert: PathBuf,
    key_file: PathBuf,
    key: Arc<CertifiedKey>,
    modified: (Option<SystemTime>, Option<SystemTime>),
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load(cert: &Path, key: &Path) -> Result<Loaded, TlsError> {
    let file_error = |path: &Path, reason: String| TlsError::File {
        path: path.to_owned(),
        reason,
    };
    let modified = (modified(cert), modified(key));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_error(cert, "no PEM certificate in it".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e.to_string()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&private)?;
    let certified = CertifiedKey::new(chain, signing);
    // A renewal caught between writing the key and the certificate.
    certified.keys_match().map_err(|e| {
        file_error(
            key,
            format!("does not match the certificate in {}: {e}", cert.display()),
        )
    })?;
    Ok(Loaded {
        cert: cert.to_owned(),
        key_file: key.to_owned(),
        key: Arc::new(certified),
        modified,
    })
}

impl CertificateFiles {
    /// Read `cert` (the chain, leaf first) and `key` (PKCS#8, PKCS#1 or SEC1).
    ///
    /// # Errors
    /// [`TlsError`] when either cannot be read or used.
    pub fn open(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(CertificateFiles {
            current: RwLock::new(load(cert, key)?),
            checked: Mutex::new(Instant::now()),
        })
    }

    /// Serve `cert` and `key` from now on (they may be the same files,
    /// read again). A pair that cannot be used leaves the current one in
    /// force.
    ///
    /// # Errors
    /// [`TlsError`] when either cannot be read or used.
    pub fn replace(&self, cert: &Path, key: &Path) -> Result<(), TlsError> {
        let loaded = load(cert, key)?;
        match self.current.write() {
            Ok(mut current) => *current = loaded,
            Err(poisoned) => *poisoned.into_inner() = loaded,
        }
        Ok(())
    }

    /// The rustls settings serving these files over HTTP/1.1.
    ///
    /// # Errors
    /// [`TlsError::Rustls`] when rustls refuses the settings.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Load the files again if they changed since; a pair that cannot be
    /// used (a renewal half written) leaves the current one in force.
    fn refresh(&self) {
        {
            let Ok(mut checked) = self.checked.lock() else {
                return;
            };
            if checked.elapsed() < RECHECK {
                return;
            }
            *checked = Instant::now();
        }
        let Ok((cert, key, was)) = self
            .current
            .read()
            .map(|c| (c.cert.clone(), c.key_file.clone(), c.modified))
        else {
            return;
        };
        if (modified(&cert), modified(&key)) == was {
            return;
        }
        match load(&cert, &key) {
            Ok(loaded) => {
                if let Ok(mut current) = self.current.write() {
                    // A reload may have pointed at other files meanwhile:
                    // those stand.
                    if current.cert == cert && current.key_file == key {
                        *current = loaded;
                        tracing::info!(cert = %cert.display(), "TLS certificate reloaded");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS certificate changed but cannot be used; the previous one stays")
            }
        }
    }
}

impl ResolvesServerCert for CertificateFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.refresh();
        self.current.read().ok().map(|c| c.key.clone())
    }
}
