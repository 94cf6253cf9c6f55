//! `tls_server_config` of the web configuration file, turned into a rustls server
//! configuration: the certificate and key, client certificates verified against a CA, the
//! protocol versions, cipher suites and key-exchange groups the file asks for.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::ring;
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    SupportedCipherSuite, SupportedProtocolVersion,
};
use serde::Deserialize;

use super::{mistake, Mistake};

/// `tls_server_config`, as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsIn {
    #[serde(default)]
    cert: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    client_ca: Option<String>,
    #[serde(default)]
    cert_file: Option<PathBuf>,
    #[serde(default)]
    key_file: Option<PathBuf>,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    cipher_suites: Option<Vec<String>>,
    #[serde(default)]
    curve_preferences: Option<Vec<String>>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    max_version: Option<String>,
    #[serde(default)]
    prefer_server_cipher_suites: Option<bool>,
    #[serde(default)]
    client_allowed_sans: Option<Vec<String>>,
}

/// The text of an inline value or of a file (relative to `dir`).
fn pem_text(
    inline: Option<String>,
    file: Option<PathBuf>,
    key: &str,
    dir: &Path,
) -> Result<Option<Vec<u8>>, Mistake> {
    if let Some(file) = file {
        let path = dir.join(&file);
        return crate::files::read_capped(&path, crate::files::MAX_SMALL_FILE)
            .map(Some)
            .map_err(|e| {
                mistake(
                    format!("tls_server_config.{key}_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            });
    }
    Ok(inline.map(String::into_bytes))
}

fn version(name: &str, key: &str) -> Result<u8, Mistake> {
    match name {
        "TLS10" | "TLS11" | "TLS12" => Ok(12),
        "TLS13" => Ok(13),
        other => Err(mistake(
            format!("tls_server_config.{key}"),
            format!("{other:?} is not a TLS version; expected TLS12 or TLS13 (TLS10 and TLS11 are never offered)"),
        )),
    }
}

fn protocol_versions(tls: &TlsIn) -> Result<Vec<&'static SupportedProtocolVersion>, Mistake> {
    let min = tls
        .min_version
        .as_deref()
        .map_or(Ok(12), |v| version(v, "min_version"))?;
    let max = tls
        .max_version
        .as_deref()
        .map_or(Ok(13), |v| version(v, "max_version"))?;
    let versions: Vec<_> = [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(v, _)| (min..=max).contains(v))
        .map(|(_, p)| p)
        .collect();
    if versions.is_empty() {
        return Err(mistake(
            "tls_server_config.min_version",
            "min_version is above max_version",
        ));
    }
    Ok(versions)
}

/// The TLS 1.2 suites the file names (Go's names), with every TLS 1.3 suite: as in Go, the
/// list applies to TLS 1.2 only.
fn cipher_suites(names: &[String]) -> Result<Vec<SupportedCipherSuite>, Mistake> {
    use ring::cipher_suite as cs;
    let known = [
        (
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        (
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        (
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        (
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    ];
    let mut suites: Vec<SupportedCipherSuite> = ring::ALL_CIPHER_SUITES
        .iter()
        .filter(|s| s.version() == &rustls::version::TLS13)
        .copied()
        .collect();
    for (i, name) in names.iter().enumerate() {
        let suite = known.iter().find(|(n, _)| n == name).ok_or_else(|| {
            mistake(
                format!("tls_server_config.cipher_suites[{i}]"),
                format!(
                    "{name:?} is not offered (only ECDHE with AES-GCM or ChaCha20-Poly1305 are)"
                ),
            )
        })?;
        suites.push(suite.1);
    }
    Ok(suites)
}

fn kx_groups(names: &[String]) -> Result<Vec<&'static dyn SupportedKxGroup>, Mistake> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| match name.as_str() {
            "X25519" => Ok(ring::kx_group::X25519),
            "CurveP256" => Ok(ring::kx_group::SECP256R1),
            "CurveP384" => Ok(ring::kx_group::SECP384R1),
            other => Err(mistake(
                format!("tls_server_config.curve_preferences[{i}]"),
                format!("{other:?} is not offered; expected X25519, CurveP256 or CurveP384"),
            )),
        })
        .collect()
}

/// The rustls configuration for `tls` (files relative to `dir`).
pub(super) fn server_config(tls: TlsIn, dir: &Path) -> Result<Arc<ServerConfig>, Mistake> {
    let section = "tls_server_config";
    if tls.cert.is_none() && tls.cert_file.is_none() {
        return Err(mistake(section, "missing one of cert or cert_file"));
    }
    if tls.key.is_none() && tls.key_file.is_none() {
        return Err(mistake(section, "missing one of key or key_file"));
    }
    let mut provider = ring::default_provider();
    if let Some(names) = &tls.cipher_suites {
        provider.cipher_suites = cipher_suites(names)?;
    }
    if let Some(names) = &tls.curve_preferences {
        provider.kx_groups = kx_groups(names)?;
    }
    let provider = Arc::new(provider);
    let versions = protocol_versions(&tls)?;
    let cert_pem =
        pem_text(tls.cert.clone(), tls.cert_file.clone(), "cert", dir)?.unwrap_or_default();
    let key_pem = pem_text(tls.key.clone(), tls.key_file.clone(), "key", dir)?.unwrap_or_default();
    let cert_key = if tls.cert_file.is_some() {
        "tls_server_config.cert_file"
    } else {
        "tls_server_config.cert"
    };
    let key_key = if tls.key_file.is_some() {
        "tls_server_config.key_file"
    } else {
        "tls_server_config.key"
    };
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| mistake(cert_key, format!("not a PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(mistake(cert_key, "no certificate in it"));
    }
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| mistake(key_key, format!("not a PEM private key: {e}")))?;

    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| mistake(section, e.to_string()))?;
    let builder = match client_verifier(&tls, dir, &provider)? {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, private_key)
        .map_err(|e| mistake(key_key, format!("does not go with the certificate: {e}")))?;
    config.ignore_client_order = tls.prefer_server_cipher_suites.unwrap_or(true);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Whether client certificates are checked (`None`: not asked for), and if so whether they
/// are optional.
fn client_auth(tls: &TlsIn) -> Result<Option<bool>, Mistake> {
    let key = "tls_server_config.client_auth_type";
    let optional = match tls.client_auth_type.as_deref().unwrap_or("") {
        "" | "NoClientCert" => {
            if tls.client_ca.is_some() || tls.client_ca_file.is_some() {
                return Err(mistake(
                    key,
                    "client CAs are configured without a client_auth_type; expected RequireAndVerifyClientCert or VerifyClientCertIfGiven",
                ));
            }
            return Ok(None);
        }
        "RequireAndVerifyClientCert" => false,
        "VerifyClientCertIfGiven" => true,
        "RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert" => {
            return Err(mistake(
                key,
                "client certificates that are not verified are not accepted; expected RequireAndVerifyClientCert or VerifyClientCertIfGiven with client_ca_file",
            ))
        }
        other => {
            return Err(mistake(
                key,
                format!("{other:?} is not a client_auth_type; expected NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert"),
            ))
        }
    };
    Ok(Some(optional))
}

/// How client certificates are checked, if they are.
fn client_verifier(
    tls: &TlsIn,
    dir: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, Mistake> {
    let Some(optional) = client_auth(tls)? else {
        return Ok(None);
    };
    let key = "tls_server_config.client_auth_type";
    let ca_key = if tls.client_ca_file.is_some() {
        "tls_server_config.client_ca_file"
    } else {
        "tls_server_config.client_ca"
    };
    let ca_pem = pem_text(
        tls.client_ca.clone(),
        tls.client_ca_file.clone(),
        "client_ca",
        dir,
    )?
    .ok_or_else(|| {
        mistake(
            key,
            "verifying client certificates needs client_ca_file (or client_ca)",
        )
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca_pem) {
        let cert = cert.map_err(|e| mistake(ca_key, format!("not a PEM certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| mistake(ca_key, format!("not a usable CA certificate: {e}")))?;
    }
    let builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider));
    let builder = if optional {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    let verifier = builder
        .build()
        .map_err(|e| mistake(ca_key, e.to_string()))?;
    match &tls.client_allowed_sans {
        None => Ok(Some(verifier)),
        Some(sans) => {
            let names = sans
                .iter()
                .enumerate()
                .map(|(i, san)| {
                    ServerName::try_from(san.clone()).map_err(|_| {
                        mistake(
                            format!("tls_server_config.client_allowed_sans[{i}]"),
                            format!("{san:?} is neither a DNS name nor an IP address"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(Arc::new(AllowedSans {
                inner: verifier,
                names,
            })))
        }
    }
}

/// A verified client certificate must also name one of the allowed DNS names or addresses.
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    names: Vec<ServerName<'static>>,
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        if self
            .names
            .iter()
            .any(|n| cert.verify_is_valid_for_subject_name(n).is_ok())
        {
            Ok(verified)
        } else {
            Err(rustls::Error::General(
                "the client certificate names none of client_allowed_sans".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
