//! The bed's test PKI, made at run time with `rcgen` (once per test process): a CA and a leaf
//! certificate for `localhost` and `127.0.0.1` signed by it, and the TLS configurations built
//! on them (the servers' rustls configuration, the front's upstream client, the SDK's HTTPS
//! client trusting that CA only, kinesis-mock's certificate file).

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::BedError;

/// The ALPN protocols the bed's TLS servers offer, in order of preference (as AWS does).
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A CA and a server certificate for `localhost` / `127.0.0.1` signed by it, made at run time.
pub(crate) struct TestPki {
    /// The CA certificate, PEM: the one trust anchor of the bed's TLS clients.
    pub(crate) ca_pem: String,
    /// The server certificate, PEM.
    pub(crate) leaf_pem: String,
    /// The server's private key, PKCS#8 PEM.
    pub(crate) leaf_key_pem: String,
    leaf_der: CertificateDer<'static>,
    leaf_key_der: Vec<u8>,
    ca_der: CertificateDer<'static>,
}

impl TestPki {
    /// The PKI of this test process, made on first use.
    pub(crate) fn shared() -> Result<Arc<TestPki>, BedError> {
        static PKI: OnceLock<Result<Arc<TestPki>, String>> = OnceLock::new();
        PKI.get_or_init(|| Self::generate().map(Arc::new))
            .clone()
            .map_err(|message| BedError::Backend {
                backend: "tls",
                message,
            })
    }

    fn generate() -> Result<Self, String> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let fail = |what: &str, e: rcgen::Error| format!("could not make the test {what}: {e}");

        let ca_key = KeyPair::generate().map_err(|e| fail("CA key", e))?;
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| fail("CA certificate", e))?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "kinesis-integration test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params
            .self_signed(&ca_key)
            .map_err(|e| fail("CA certificate", e))?;
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf_key = KeyPair::generate().map_err(|e| fail("server key", e))?;
        let mut leaf_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .map_err(|e| fail("server certificate", e))?;
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf_params.use_authority_key_identifier_extension = true;
        leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = leaf_params
            .signed_by(&leaf_key, &issuer)
            .map_err(|e| fail("server certificate", e))?;

        Ok(Self {
            ca_pem: ca.pem(),
            leaf_pem: leaf.pem(),
            leaf_key_pem: leaf_key.serialize_pem(),
            leaf_der: leaf.der().clone(),
            leaf_key_der: leaf_key.serialize_der(),
            ca_der: ca.der().clone(),
        })
    }

    /// kinesis-mock's certificate file (its Node build reads `KINESIS_MOCK_CERT_PATH`, a JSON
    /// object `{"server": {"cert": PEM, "key": PEM}}`).
    pub(crate) fn kinesis_mock_cert_json(&self) -> String {
        format!(
            "{{\"server\":{{\"cert\":{},\"key\":{}}}}}\n",
            json_string(&self.leaf_pem),
            json_string(&self.leaf_key_pem)
        )
    }

    /// A rustls server configuration presenting the leaf and offering [`ALPN`].
    pub(super) fn server_config(&self) -> Result<rustls::ServerConfig, String> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key_der.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .and_then(|builder| {
                builder
                    .with_no_client_auth()
                    .with_single_cert(vec![self.leaf_der.clone()], key)
            })
            .map_err(|e| format!("could not configure the TLS server: {e}"))?;
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// A rustls client configuration trusting the CA only (for the front's upstream side).
    pub(super) fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca_der.clone())
            .map_err(|e| format!("could not trust the test CA: {e}"))?;
        Ok(
            rustls::ClientConfig::builder_with_provider(crypto_provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("could not configure the TLS client: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// The SDK's own HTTPS client (rustls on aws-lc, ALPN `h2` and `http/1.1`) trusting this
    /// CA and nothing else.
    pub(crate) fn https_client(&self) -> Result<SharedHttpClient, BedError> {
        let context = TlsContext::builder()
            .with_trust_store(TrustStore::empty().with_pem_certificate(self.ca_pem.as_bytes()))
            .build()
            .map_err(|e| BedError::Backend {
                backend: "tls",
                message: format!("could not configure the SDK's TLS client: {e}"),
            })?;
        Ok(aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(context)
            .build_https())
    }
}

fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kinesis_mock_certificate_file_is_json_with_both_pems() {
        let pki = TestPki::generate().unwrap();
        let json = pki.kinesis_mock_cert_json();
        assert!(json.starts_with("{\"server\":{\"cert\":\"-----BEGIN CERTIFICATE-----\\n"));
        assert!(json.contains("\"key\":\"-----BEGIN PRIVATE KEY-----\\n"));
        assert!(!json.trim_end().contains('\n'));
    }

    #[test]
    fn json_strings_escape_what_json_needs() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
    }
}
