//! The process's one TLS client configuration: the system's root certificates, read once, and
//! aws-lc-rs. Every client uses it: the AWS calls (`signed_http`) and the data channel's
//! websocket (`channel::transport`). Reading the roots parses the bundle and every file of
//! `SSL_CERT_DIR`, which took 2.7 to 5.4 ms here (README, "The data channel"), and a one-off makes up
//! to four clients.

use std::sync::{Arc, OnceLock};

/// The shared configuration; `None` only if rustls cannot build one at all. A machine without
/// any root certificate still gets one, with no roots: http:// and ws:// endpoints (a local
/// emulator) work, and https:// and wss:// ones fail verification.
pub fn client_config() -> Option<Arc<rustls::ClientConfig>> {
    static CONFIG: OnceLock<Option<Arc<rustls::ClientConfig>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let builder = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .ok()?;
            let config = match hyper_rustls::ConfigBuilderExt::with_native_roots(builder.clone()) {
                Ok(with_roots) => with_roots.with_no_client_auth(),
                Err(error) => {
                    tracing::debug!(%error, "no system root certificates");
                    builder
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                }
            };
            Some(Arc::new(config))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_shares_one_config() {
        let (first, second) = (client_config().unwrap(), client_config().unwrap());
        // A config made anew would be another allocation.
        assert!(Arc::ptr_eq(&first, &second));
    }

    #[test]
    fn the_shared_config_names_no_application_protocol() {
        // The websocket upgrade is HTTP/1.1; a shared "h2" would let a server pick HTTP/2.
        assert!(client_config().unwrap().alpn_protocols.is_empty());
    }
}
